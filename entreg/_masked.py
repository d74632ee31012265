"""Masked log-softmax with values and gradients that stay finite at every edge.

All categorical functionals go through `log_softmax`. Excluded categories (``where`` False or a
logit of -inf) get exactly p = 0 and a *finite placeholder* log p = 0, so that expressions such as
``p * log_p`` or ``exp(log_p)`` never see -inf and their gradients never form ``0 * inf``
(the "double where" rule: every branch that a `jnp.where` discards is fed a safe value).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from entreg import _checks


class Dist(NamedTuple):
    """A categorical distribution along one axis, with safe placeholders at excluded entries."""

    log_p: jax.Array  # log-probabilities; 0 (placeholder) where `valid` is False
    p: jax.Array  # probabilities; exactly 0 where `valid` is False
    valid: jax.Array  # bool, True where the category is part of the distribution
    nonempty: jax.Array  # bool, keepdims over the axis: the row has at least one valid category


def log_softmax(logits: jax.Array, valid: jax.Array | None, axis: int) -> Dist:
    """Masked log-softmax of float logits (already upcast) along `axis`."""
    valid = logits > -jnp.inf if valid is None else valid & (logits > -jnp.inf)
    nonempty = jnp.any(valid, axis=axis, keepdims=True)
    z = jnp.where(valid, logits, 0.0)
    # The shift cancels in the log-softmax, so it carries no gradient.
    m = jnp.max(jnp.where(valid, z, -jnp.inf), axis=axis, keepdims=True)
    m = jax.lax.stop_gradient(jnp.where(nonempty, m, 0.0))
    shifted = jnp.where(valid, z - m, 0.0)
    e = jnp.where(valid, jnp.exp(shifted), 0.0)
    s = jnp.where(nonempty, jnp.sum(e, axis=axis, keepdims=True), 1.0)
    log_p = jnp.where(valid, shifted - jnp.log(s), 0.0)
    return Dist(log_p=log_p, p=e / s, valid=valid, nonempty=nonempty)


def prepare(
    logits, where, axis: int, name: str = "logits"
) -> tuple[jax.Array, jax.Array | None, int]:
    """Validates (logits, where, axis) and returns the upcast logits, the mask and the axis."""
    logits = _checks.float_array(logits, name)
    axis = _checks.normalize_axis(axis, logits.ndim, name)
    return logits, _checks.category_mask(where, logits.shape, axis), axis


def entropy_of(d: Dist, axis: int) -> jax.Array:
    """Shannon entropy -sum p log p, with log p formed as z - logsumexp(z), never as log(p)."""
    return -jnp.sum(d.p * d.log_p, axis=axis) + 0.0  # + 0.0 turns -0.0 into 0.0


def plus_inf_where(value: jax.Array, infinite: jax.Array) -> jax.Array:
    """Adds +inf where `infinite`, leaving the gradient of the finite remainder untouched."""
    return value + jnp.where(infinite, jnp.inf, 0.0).astype(value.dtype)


def abs_zero_grad(x: jax.Array) -> jax.Array:
    """|x| whose derivative is sign(x), i.e. 0 at x = 0 (jnp.abs gives 1 there)."""
    # d/dx [x sign(x)] = sign(x) + x * 0.
    return x * jnp.sign(x)


@jax.custom_jvp
def _sqrt_zero_grad(x: jax.Array) -> jax.Array:
    return jnp.sqrt(x)


@_sqrt_zero_grad.defjvp
def _sqrt_zero_grad_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    y = jnp.sqrt(x)
    pos = x > 0
    return y, jnp.where(pos, dx / (2.0 * jnp.where(pos, y, 1.0)), 0.0)


def weight_outer(w: jax.Array) -> jax.Array:
    """R [..., n, n] with R_ii = w_i and R_ij = sqrt(w_i w_j): K o R = W^1/2 K W^1/2 for
    sample weights w >= 0, with gradients that stay finite at w_i = 0.

    The diagonal is linear in w (its derivative is the trace's, which a spectrum normalized to
    sum one depends on). Off the diagonal sqrt(w_i) has an infinite derivative at 0, but the
    cotangent reaching an off-diagonal entry of row i is exactly 0 there (row i of W^1/2 K W^1/2
    vanishes, and so does every eigenvector's i-th entry off its null space), so that derivative
    is taken as 0 instead of forming 0 * inf = NaN.
    """
    root = _sqrt_zero_grad(w)
    eye = jnp.eye(w.shape[-1], dtype=bool)
    return jnp.where(eye, w[..., :, None], root[..., :, None] * root[..., None, :])


def unit_rows(x: jax.Array) -> jax.Array:
    """Rows scaled to unit norm; an all-zero row stays zero with a zero gradient."""
    sq = jnp.sum(x * x, axis=-1, keepdims=True)
    nonzero = sq > 0
    return jnp.where(nonzero, x * jax.lax.rsqrt(jnp.where(nonzero, sq, 1.0)), 0.0)
