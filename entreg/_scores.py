"""Critic score matrices: validation, positive / negative masks and masked reductions.

A score matrix S[..., N, M] holds S[i, j] = f(x_i, y_j): rows index x, columns index y, leading
axes are independent batches. ``positives`` marks the pairs drawn from p(x, y) (default: the
diagonal j = i), every other ``where``-valid entry is a negative drawn from p(x) p(y). Masked
slots may hold garbage: they are replaced by 0 before any arithmetic and never reach a value or a
gradient.

Row sharding: with ``axis_name`` each device holds a block of rows [n, M] of the global matrix
(device d holds rows [d n, (d + 1) n)); every reduction over rows is psummed over that axis, so
a bound computed inside ``shard_map`` equals the single-device value on every device.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from entreg import _checks
from entreg.aggregation import psum


class Scores(NamedTuple):
    s: jax.Array  # scores in >= float32, 0 in masked slots
    pos: jax.Array  # bool: valid positives
    neg: jax.Array  # bool: valid negatives
    valid: jax.Array  # bool: valid entries


def prepare(scores, positives, where, axis_name=None, name: str = "scores") -> Scores:
    s = _checks.float_array(scores, name)
    if s.ndim < 2:
        raise ValueError(f"`{name}` must be a score matrix [..., N, M], got shape {s.shape}.")
    n, m = s.shape[-2:]
    if positives is None:
        devices = 1 if axis_name is None else _checks.axis_size(axis_name)
        if m < n * devices:
            raise ValueError(
                f"`{name}` [..., N, M] needs M >= N (x {devices} devices) columns when "
                f"`positives` is None (the diagonal holds the positives), got {s.shape}."
            )
        rows = jnp.arange(n)[:, None] + (
            0 if axis_name is None else jax.lax.axis_index(axis_name) * n
        )
        pos = jnp.broadcast_to(rows == jnp.arange(m)[None, :], s.shape)
    else:
        pos = _checks.broadcast_bool(positives, s.shape, "positives", name)
    if where is None:
        valid = jnp.ones(s.shape, bool)
    else:
        valid = _checks.broadcast_bool(where, s.shape, "where", name)
    return Scores(jnp.where(valid, s, 0.0), pos & valid, ~pos & valid, valid)


def count(mask: jax.Array, axis_name=None) -> jax.Array:
    """Number of True entries over the last two axes (all devices)."""
    return psum(jnp.sum(mask, axis=(-2, -1), dtype=jnp.float32), axis_name)


def mean(x: jax.Array, mask: jax.Array, axis_name=None) -> jax.Array:
    """Mean of x over the masked entries of the last two axes; 0 (zero gradient) when empty."""
    total = psum(jnp.sum(jnp.where(mask, x, 0.0), axis=(-2, -1)), axis_name)
    n = count(mask, axis_name).astype(total.dtype)
    return jnp.where(n > 0, total / jnp.maximum(n, 1.0), 0.0)


def log_sum_exp(x: jax.Array, mask: jax.Array, axis, axis_name=None) -> jax.Array:
    """log sum_mask e^x over ``axis`` (psummed over ``axis_name``); -inf for an empty set, with
    a zero gradient. The shift is the masked max (a stop-gradient: it cancels)."""
    m = jax.lax.stop_gradient(jnp.max(jnp.where(mask, x, -jnp.inf), axis=axis, keepdims=True))
    if axis_name is not None:
        m = jax.lax.pmax(m, axis_name)
    shift = jnp.where(m > -jnp.inf, m, 0.0)
    e = jnp.exp(jnp.where(mask, x - shift, -jnp.inf))
    s = psum(jnp.sum(e, axis=axis, keepdims=True), axis_name)
    lse = jnp.where(s > 0, shift + jnp.log(jnp.where(s > 0, s, 1.0)), -jnp.inf)
    return jnp.squeeze(lse, axis)


def log_mean_exp(x: jax.Array, mask: jax.Array, axis_name=None) -> jax.Array:
    """log mean_mask e^x over the last two axes; -inf when empty."""
    lse = log_sum_exp(x, mask, (-2, -1), axis_name)
    return lse - jnp.log(jnp.maximum(count(mask, axis_name), 1.0).astype(lse.dtype))


def exp_capped(x: jax.Array) -> jax.Array:
    """e^x with the value of jnp.exp (+inf past overflow) and the gradient of e^min(x, c),
    c = half the overflow exponent of the dtype (44 for float32): a diverged critic reports its
    value exactly and still passes back a finite gradient."""
    cap = 0.5 * math.log(float(jnp.finfo(x.dtype).max))
    slope = jax.lax.stop_gradient(jnp.exp(jnp.minimum(x, cap)))
    finite = jnp.where(jnp.isfinite(x), x, 0.0)
    return jax.lax.stop_gradient(jnp.exp(x)) + slope * (finite - jax.lax.stop_gradient(finite))


def with_value(surrogate: jax.Array, value: jax.Array) -> jax.Array:
    """``value`` carrying the gradient of ``surrogate``: t + stop_gradient(v - t) (an infinite
    surrogate passes its gradient but not its value)."""
    t = jnp.where(jnp.isfinite(surrogate), surrogate, 0.0)
    return t + jax.lax.stop_gradient(value - t)
