r"""Batch entropy estimators for embeddings, as used by self-supervised regularizers.

* `m_spacing_entropy`: the m-spacing (Vasicek-type) marginal entropy of each coordinate, the
  "effective entropy" of E2MC (Chakraborty, LeCun, Rudner, Learned-Miller, AISTATS 2025);
* `vmf_kde_entropy`: the resubstitution entropy of a von Mises-Fisher kernel density on the
  sphere, the entropy half of the ER bound (Rodriguez-Galvez, Blaas, Rodriguez, Theobald,
  "The Role of Entropy and Reconstruction in Multi-View Self-Supervised Learning", ICML 2023);
* `vmf_log_normalizer`: log C_d(kappa) of the vMF density, exact for every dimension.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from entreg import _checks, _masked, _scores
from entreg._typing import Array, ArrayLike, Bool, Float


def _features(x, name: str = "features") -> jax.Array:
    x = _checks.float_array(x, name)
    if x.ndim < 2:
        raise ValueError(f"`{name}` must be [..., N, d], got shape {x.shape}.")
    return x


def _rows(where, shape: tuple[int, ...]) -> jax.Array:
    if where is None:
        return jnp.ones(shape, bool)
    return _checks.broadcast_bool(where, shape, "where", "rows [..., N]")


def m_spacing_entropy(
    x: Float[ArrayLike, "*batch n d"],
    *,
    m: int | None = None,
    eps: float = 1e-7,
    where: Bool[ArrayLike, "*#batch n"] | None = None,
    base: float | None = None,
) -> Float[Array, "*batch d"]:
    r"""m-spacing estimate of each coordinate's marginal entropy (E2MC's effective entropy).

    Per coordinate, with the N samples sorted u_(1) <= ... <= u_(N):

        H = 1 / (N - m) sum_{i=1}^{N-m} log( (N + 1) / m (u_(i+m) - u_(i)) + eps )

    m = round(sqrt(N)) by default, eps = 1e-7 as in the E2MC code (ties give log eps = -16.1,
    common under a saturated sigmoid). Exactly shift-invariant and, eps aside,
    scale-equivariant (H(a u) = H(u) + log a). scipy's ``differential_entropy(method="vasicek")``
    is a different m-spacing variant (two-sided window, n / (2m) factor). Differentiable through
    the sort. E2MC maps each coordinate into (0, 1) (sigmoid) first and averages H over the
    coordinates; see `entreg.losses.effective_entropy_bonus`.

    Args:
      x: samples [..., N, d] (N along axis -2).
      m: spacing, 1 <= m < N (static); None: round(sqrt(N_valid)).
      eps: added inside the log (>= 0).
      where: boolean [..., N], False at padding rows (not counted: N is the valid count).
      base: logarithm base.

    Returns:
      Marginal entropies [..., d]; 0 where fewer than m + 1 samples are valid.
    """
    return _checks.in_base(_m_spacing_entropy(x, where, m, eps), base)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _m_spacing_entropy(x, where, m, eps):
    x = _features(x, "x")
    n = x.shape[-2]
    eps = _checks.real_scalar(eps, "eps", minimum=0.0)
    if m is not None:
        m = _checks.positive_int(m, "m")
        if m >= n:
            raise ValueError(f"`m` must be < N = {n}, got {m}.")
    valid = _rows(where, x.shape[:-1])[..., None]
    u = jnp.sort(jnp.where(valid, x, jnp.inf), axis=-2)
    count = jnp.sum(valid, axis=-2, keepdims=True).astype(x.dtype)
    spacing = jnp.round(jnp.sqrt(count)) if m is None else jnp.full(count.shape, float(m), x.dtype)
    spacing = jnp.maximum(spacing, 1.0)
    i = jnp.arange(n).reshape((n, 1))
    ahead = jnp.minimum(i + spacing.astype(jnp.int32), n - 1)
    upper = jnp.take_along_axis(u, jnp.broadcast_to(ahead, u.shape), axis=-2)
    used = i < count - spacing
    # Unused slots hold +inf (padding sorted last): select before subtracting.
    gap = jnp.where(used, jnp.where(used, upper, 0.0) - jnp.where(used, u, 0.0), 0.0)
    terms = jnp.where(used, jnp.log((count + 1.0) / spacing * gap + eps), 0.0)
    terms_used = jnp.sum(used, axis=-2).astype(x.dtype)
    h = jnp.sum(terms, axis=-2) / jnp.maximum(terms_used, 1.0)
    return jnp.where(terms_used > 0, h, 0.0)


def _log_bessel_series(nu: float, x: float) -> float:
    """log I_nu(x) from its power series sum (x/2)^(2k+nu) / (k! Gamma(k+nu+1)), in doubles."""
    terms = [
        (2 * k + nu) * math.log(x / 2) - math.lgamma(k + 1) - math.lgamma(k + nu + 1)
        for k in range(int(x) + 60)
    ]
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms))


def _log_bessel_debye(nu: float, x: float) -> float:
    """log I_nu(x) from the uniform asymptotic (Debye) expansion, four correction terms
    (Abramowitz & Stegun 9.7.7); relative error O(nu^-5) of the factor."""
    z = x / nu
    root = math.sqrt(1 + z * z)
    t = 1 / root
    eta = root + math.log(z / (1 + root))
    u1 = (3 * t - 5 * t**3) / 24
    u2 = (81 * t**2 - 462 * t**4 + 385 * t**6) / 1152
    u3 = (30375 * t**3 - 369603 * t**5 + 765765 * t**7 - 425425 * t**9) / 414720
    u4 = (
        4465125 * t**4 - 94121676 * t**6 + 349922430 * t**8 - 446185740 * t**10 + 185910725 * t**12
    ) / 39813120
    series = 1 + u1 / nu + u2 / nu**2 + u3 / nu**3 + u4 / nu**4
    return -0.5 * math.log(2 * math.pi * nu) + nu * eta - 0.5 * math.log(root) + math.log(series)


def vmf_log_normalizer(dim: int, kappa: float) -> float:
    r"""log C_d(kappa) of the von Mises-Fisher density C_d(kappa) e^{kappa mu^T z} on S^{d-1}.

        log C_d(kappa) = (d/2 - 1) log kappa - (d/2) log(2 pi) - log I_{d/2-1}(kappa)

    log I_nu is computed in double precision from its power series (nu < 50) or the uniform
    asymptotic expansion (nu >= 50), never as log(I_nu) of an underflowing Bessel value. The ER
    code takes log(I_nu(kappa) + 1e-7): at kappa = 10 the floor dominates from d = 49 on
    (d = 128: -16.12 where log I = -99.23), so its reported entropies are off (not its
    gradients).

    Args:
      dim: the ambient dimension d >= 1 (static).
      kappa: concentration > 0 (static).

    Returns:
      A Python float.
    """
    dim = _checks.positive_int(dim, "dim")
    kappa = _checks.real_scalar(kappa, "kappa")
    if not kappa > 0:
        raise ValueError(f"`kappa` must be > 0, got {kappa}.")
    nu = dim / 2 - 1
    log_i = _log_bessel_series(nu, kappa) if nu < 50 else _log_bessel_debye(nu, kappa)
    return nu * math.log(kappa) - dim / 2 * math.log(2 * math.pi) - log_i


def vmf_kde_entropy(
    z: Float[ArrayLike, "*batch n d"],
    *,
    kappa: float = 10.0,
    where: Bool[ArrayLike, "*#batch n"] | None = None,
    base: float | None = None,
) -> Float[Array, "*batch"]:
    r"""Resubstitution entropy of a von Mises-Fisher KDE of unit embeddings (ER's entropy term).

        p_hat(z_i) = (1/N) sum_j C_d(kappa) e^{kappa z_i^T z_j}      (j = i included)
        H = -(1/N) sum_i log p_hat(z_i)
        H = (1/N) sum_i [ log N - logsumexp_j(kappa z_i^T z_j) ] - log C_d(kappa)

    Rows are normalized to unit length first (an all-zero row stays zero). kappa = 10 as in the
    ER code ("average" reduction). With the ER bound I(Z1; Z2) >= H(Z2) + E[log q(z2 | z1)],
    log q(z2 | z1) = kappa z1^T z2 + log C_d(kappa) (see `barber_agakov_bound`).

    Args:
      z: embeddings [..., N, d].
      kappa: vMF concentration > 0 (static).
      where: boolean [..., N], False at padding rows.
      base: logarithm base.

    Returns:
      [...] entropies (float32 or wider); 0 without valid rows.
    """
    return _checks.in_base(_vmf_kde_entropy(z, where, kappa), base)


@functools.partial(jax.jit, static_argnums=(2,))
def _vmf_kde_entropy(z, where, kappa):
    z = _features(z, "z")
    log_c = vmf_log_normalizer(z.shape[-1], kappa)
    valid = _rows(where, z.shape[:-1])
    u = _masked.unit_rows(jnp.where(valid[..., None], z, 0.0))
    logits = kappa * jnp.einsum("...ie,...je->...ij", u, u)
    pairs = valid[..., :, None] & valid[..., None, :]
    lse = _scores.log_sum_exp(logits, pairs, -1)
    n = jnp.sum(valid, axis=-1).astype(u.dtype)
    per_row = jnp.where(valid, jnp.log(jnp.maximum(n, 1.0))[..., None] - lse, 0.0)
    h = jnp.sum(per_row, axis=-1) / jnp.maximum(n, 1.0) - log_c
    return jnp.where(n > 0, h, 0.0)
