"""Eigenvalues with the spectral-function-theorem backward, and entropies of spectra.

The gradient of any symmetric function F(lambda(A)) of a symmetric matrix's eigenvalues is
V diag(dF/dlambda) V^T (Lewis 1996), also at repeated eigenvalues, where the eigenvector JVP of
`eigh` divides by lambda_i - lambda_j = 0. `eigvalsh` has exactly that backward, and the entropy
of a spectrum masks eigenvalues below ``eps`` in value and gradient, where f'(lambda) diverges
(-(log lambda + 1) at q = 1, q lambda^(q - 1) at q < 1).
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp


def symmetrize(a: jax.Array) -> jax.Array:
    return 0.5 * (a + jnp.swapaxes(a, -1, -2))


@jax.custom_vjp
def eigvalsh(a: jax.Array) -> jax.Array:
    """Ascending eigenvalues of the symmetric part of ``a`` [..., n, n]."""
    return jnp.linalg.eigvalsh(symmetrize(a))


def _eigvalsh_fwd(a):
    lam, vec = jnp.linalg.eigh(symmetrize(a))
    return lam, vec


def _eigvalsh_bwd(vec, g):
    return ((vec * g[..., None, :]) @ jnp.swapaxes(vec, -1, -2),)


eigvalsh.defvjp(_eigvalsh_fwd, _eigvalsh_bwd)


def check_order(order) -> float:
    """A Renyi order: a static real q >= 0 or inf."""
    if isinstance(order, bool) or not isinstance(order, numbers.Real):
        raise TypeError(f"`order` must be a real Python number >= 0 or math.inf, got {order!r}.")
    q = float(order)
    if not q >= 0:
        raise ValueError(f"`order` must be >= 0 or math.inf, got {order!r}.")
    return q


def default_eps(size: int, dtype) -> float:
    """Round-off level of the eigenvalues of a trace-one matrix of this size and dtype."""
    return 4.0 * math.sqrt(size) * float(jnp.finfo(dtype).eps)


def check_eps(eps, size: int, dtype) -> float:
    if eps is None:
        return default_eps(size, dtype)
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not 0 <= float(eps) < 1:
        raise ValueError(f"`eps` must be a real number in [0, 1), got {eps!r}.")
    return float(eps)


def unit_scale(x: jax.Array) -> jax.Array:
    """max |x| over the last axis, as a constant (no gradient); 1 where it is 0 or not finite."""
    m = jax.lax.stop_gradient(jnp.max(jnp.abs(x), axis=-1, keepdims=True))
    return jnp.where((m > 0) & jnp.isfinite(m), m, 1.0)


def entropy_of_spectrum(lam: jax.Array, order: float, eps: float) -> jax.Array:
    """Renyi entropy (nats) of the spectrum ``lam`` [..., n] normalized to sum one.

    Negative entries are eigenvalue round-off of a PSD matrix and count as zero; normalized
    eigenvalues <= ``eps`` are exact zeros in value and gradient. A spectrum with nothing above
    ``eps`` (the zero matrix) has entropy 0; a NaN anywhere gives NaN.
    """
    # The entropy is scale invariant: dividing by a constant scale first keeps 1 / total^2 in
    # the backward in range for tiny spectra (1e-30 squares to 0 in float32: a NaN gradient).
    lam = lam / unit_scale(lam)
    # The total keeps the round-off negatives: it is the trace, whose gradient is the identity
    # whatever the signs of the zero eigenvalues came out.
    total = jnp.sum(lam, axis=-1, keepdims=True)
    p = jnp.maximum(lam, 0.0) / jnp.where(total > 0, total, 1.0)
    keep = p > eps
    safe = jnp.where(keep, p, 1.0)
    any_kept = jnp.any(keep, axis=-1)
    if order == 1.0:
        value = -jnp.sum(jnp.where(keep, safe * jnp.log(safe), 0.0), axis=-1)
    elif order == 0.0:
        value = jnp.log(jnp.maximum(jnp.sum(keep, axis=-1), 1).astype(p.dtype))
    elif order == math.inf:
        value = -jnp.log(jnp.where(any_kept, jnp.max(safe * keep, axis=-1), 1.0))
    else:
        power = jnp.sum(jnp.where(keep, safe**order, 0.0), axis=-1)
        value = jnp.log(jnp.where(any_kept, power, 1.0)) / (1.0 - order)
    # The masks above compare NaN as False: keep a NaN input visible.
    return jnp.where(jnp.isnan(total[..., 0]), jnp.nan, value)
