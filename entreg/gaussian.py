r"""Closed forms for Gaussian variables from a covariance matrix (nats).

    H(N(mu, S))  = (d/2) log(2 pi e) + (1/2) log det S
    I(X; Y)      = (1/2) log(det S_xx det S_yy / det S) = -(1/2) sum_k log(1 - c_k^2)
    TC           = (1/2) [sum_j log det S_jj - log det S]     (= -(1/2) log det R for scalars)
    Omega        = ((n - 2)/2) log det S + (1/2) sum_j [log det S_jj - log det S_-j,-j]

(c_k canonical correlations, R the correlation matrix; the log(2 pi e) terms cancel in every
information quantity). The correlated-Gaussian staircase of Poole et al. and Song & Ermon,
y = rho x + sqrt(1 - rho^2) eps in d dimensions, has I = -(d/2) log(1 - rho^2).

log det S comes from a Cholesky factor (2 sum log diag L), accumulated in the input dtype (at
least float32; pass float64 for ill-conditioned matrices). A matrix that is not positive
definite raises a ValueError when it is concrete and gives NaN under tracing (the check depends
on the values).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from entreg import _checks
from entreg._typing import Array, ArrayLike, Float
from entreg.o_information import multivariate_information


def _covariance(cov, name: str = "cov") -> jax.Array:
    c = _checks.float_array(cov, name)
    if c.ndim < 2 or c.shape[-1] != c.shape[-2] or c.shape[-1] == 0:
        raise ValueError(f"`{name}` must be a square covariance [..., d, d], got {c.shape}.")
    return c


@jax.jit
def _cholesky_logdet(c: jax.Array) -> jax.Array:
    chol = jnp.linalg.cholesky(0.5 * (c + jnp.swapaxes(c, -1, -2)))
    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)


def _logdet(c: jax.Array, name: str = "cov") -> jax.Array:
    """log det of SPD matrices [..., d, d] via Cholesky (symmetric part); NaN where not PD,
    which raises when the value is concrete."""
    logdet = _cholesky_logdet(c)
    if not isinstance(logdet, jax.core.Tracer) and bool(jnp.any(jnp.isnan(logdet))):
        raise ValueError(f"`{name}` must be symmetric positive definite.")
    return logdet


def _sub(c: jax.Array, idx) -> jax.Array:
    idx = np.asarray(idx)
    return c[..., idx[:, None], idx[None, :]]


def gaussian_entropy(
    cov: Float[ArrayLike, "*batch d d"], *, base: float | None = None
) -> Float[Array, "*batch"]:
    r"""Differential entropy of N(mu, cov): (d/2) log(2 pi e) + (1/2) log det cov.

    Args:
      cov: covariance [..., d, d], symmetric positive definite.
      base: logarithm base (None: nats).

    Returns:
      [...] entropies, float32 or wider.
    """
    c = _covariance(cov)
    d = c.shape[-1]
    return _checks.in_base(0.5 * d * math.log(2 * math.pi * math.e) + 0.5 * _logdet(c), base)


def gaussian_mutual_information(
    cov: Float[ArrayLike, "*batch d d"], split: int, *, base: float | None = None
) -> Float[Array, "*batch"]:
    r"""I(X; Y) of a Gaussian (X, Y) whose covariance lists X's ``split`` coordinates first.

        I = (1/2) [log det S_xx + log det S_yy - log det S]

    Args:
      cov: joint covariance [..., d, d].
      split: number of leading coordinates forming X, 1 <= split < d.
      base: logarithm base.

    Returns:
      [...] mutual informations (>= 0 up to round-off).
    """
    c = _covariance(cov)
    d = c.shape[-1]
    split = _checks.positive_int(split, "split")
    if split >= d:
        raise ValueError(f"`split` must be < d = {d}, got {split}.")
    return gaussian_total_correlation(c, [range(split), range(split, d)], base=base)


def gaussian_total_correlation(
    cov: Float[ArrayLike, "*batch d d"],
    groups: Sequence[Sequence[int]] | None = None,
    *,
    base: float | None = None,
) -> Float[Array, "*batch"]:
    r"""Total correlation sum_j H(X_j) - H(X) of a Gaussian: (1/2)[sum_j log det S_jj - log det S].

    Args:
      cov: covariance [..., d, d].
      groups: None (every coordinate is a variable), or a sequence of disjoint index sequences
        (multivariate variables; coordinates outside every group are marginalized out).
      base: logarithm base.

    Returns:
      [...] total correlations.
    """
    c = _covariance(cov)
    groups = _checks.variable_groups(c.shape[-1] if groups is None else groups, c.shape[-1])
    used = sorted(i for g in groups for i in g)
    parts = sum(_logdet(_sub(c, g)) for g in groups)
    return _checks.in_base(0.5 * (parts - _logdet(_sub(c, used))), base)


def gaussian_o_information(
    cov: Float[ArrayLike, "*batch d d"],
    groups: Sequence[Sequence[int]] | None = None,
    *,
    base: float | None = None,
) -> Float[Array, "*batch"]:
    r"""O-information Omega = TC - DTC of a Gaussian (Rosas et al. 2019).

        Omega = (1/2) [(n - 2) log det S + sum_j (log det S_jj - log det S_{-j,-j})]

    > 0: redundancy-dominated (e.g. copies of one source plus noise); < 0: synergy-dominated
    (e.g. X_3 = X_1 + X_2 with independent X_1, X_2). For the other measures (DTC,
    S-information) pass `gaussian_entropy` of sub-covariances to `multivariate_information`.

    Args:
      cov: covariance [..., d, d].
      groups: as in `gaussian_total_correlation`.
      base: logarithm base.

    Returns:
      [...] O-information values.
    """
    c = _covariance(cov)
    groups = _checks.variable_groups(c.shape[-1] if groups is None else groups, c.shape[-1])
    info = multivariate_information(lambda cols: gaussian_entropy(_sub(c, cols)), groups)
    return _checks.in_base(info.o_information, base)
