"""Noise schedules for discrete diffusion: total noise sigma_bar(t) and its rate sigma'(t).

Both follow the SEDD release (Lou, Meng & Ermon 2024): log-linear for absorbing diffusion (the
masking probability is linear in t), geometric for uniform diffusion.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from entreg import _checks
from entreg._typing import Array, ArrayLike, Float


def _time(t) -> Array:
    return _checks.float_array(t, "t")


@dataclasses.dataclass(frozen=True)
class LogLinearNoise:
    r"""sigma_bar(t) = -log(1 - (1 - eps) t), sigma'(t) = (1 - eps) / (1 - (1 - eps) t).

    Under absorbing diffusion a token is masked with probability 1 - e^{-sigma_bar} = (1 - eps) t,
    so sigma' / expm1(sigma_bar) = 1 / t: the loss weight of MDLM. ``eps`` (1e-3, as released)
    keeps sigma_bar(1) = -log(eps) finite; a token survives to t = 1 with probability eps.
    """

    eps: float = 1e-3

    def __post_init__(self):
        eps = _checks.real_scalar(self.eps, "eps", minimum=0.0)
        if not 0.0 < eps < 1.0:
            raise ValueError(f"`eps` must be in (0, 1), got {eps}.")

    def total(self, t: Float[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
        """sigma_bar(t) = -log(1 - (1 - eps) t) for times t in [0, 1] (any shape)."""
        return -jnp.log1p(-(1.0 - self.eps) * _time(t))

    def rate(self, t: Float[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
        """sigma'(t) = (1 - eps) / (1 - (1 - eps) t), the derivative of `total`."""
        return (1.0 - self.eps) / (1.0 - (1.0 - self.eps) * _time(t))

    def __call__(
        self, t: Float[ArrayLike, "*shape"]
    ) -> tuple[Float[Array, "*shape"], Float[Array, "*shape"]]:
        """Returns (sigma_bar(t), sigma'(t))."""
        return self.total(t), self.rate(t)


@dataclasses.dataclass(frozen=True)
class GeometricNoise:
    r"""sigma_bar(t) = sigma_min^(1-t) sigma_max^t; sigma'(t) = sigma_bar(t) log(s_max / s_min).

    Defaults sigma_min = 1e-4, sigma_max = 20 are the released code's (the paper states 1e-5).
    Over t in [0, 1] the process starts at sigma_min, not 0: the likelihood bound then covers the
    data seen through that much noise (about sigma_min nats of mutual information are missed).
    """

    sigma_min: float = 1e-4
    sigma_max: float = 20.0

    def __post_init__(self):
        lo = _checks.real_scalar(self.sigma_min, "sigma_min", minimum=0.0)
        hi = _checks.real_scalar(self.sigma_max, "sigma_max", minimum=0.0)
        if not 0.0 < lo < hi:
            raise ValueError(f"Need 0 < sigma_min < sigma_max, got {lo}, {hi}.")

    def total(self, t: Float[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
        """sigma_bar(t) = sigma_min^(1 - t) sigma_max^t for times t in [0, 1] (any shape)."""
        t = _time(t)
        return jnp.exp((1.0 - t) * jnp.log(self.sigma_min) + t * jnp.log(self.sigma_max))

    def rate(self, t: Float[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
        """sigma'(t) = sigma_bar(t) log(sigma_max / sigma_min), the derivative of `total`."""
        return self.total(t) * jnp.log(self.sigma_max / self.sigma_min)

    def __call__(
        self, t: Float[ArrayLike, "*shape"]
    ) -> tuple[Float[Array, "*shape"], Float[Array, "*shape"]]:
        """Returns (sigma_bar(t), sigma'(t))."""
        return self.total(t), self.rate(t)
