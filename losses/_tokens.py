"""Shared validation and masked reductions for per-token policy losses ([B, T] matrices)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from entreg import _checks
from entreg.aggregation import aggregate


def policy_inputs(log_prob, old_log_prob, advantages, mask):
    """Validates the four [..., T] inputs every policy loss takes; returns them upcast."""
    log_prob = _checks.float_array(log_prob, "log_prob")
    if log_prob.ndim == 0:
        raise ValueError("`log_prob` must have a token axis (shape [..., T]).")
    old_log_prob = _checks.float_array(old_log_prob, "old_log_prob")
    advantages = _checks.float_array(advantages, "advantages")
    _checks.same_shape(log_prob, old_log_prob, "log_prob", "old_log_prob")
    _checks.same_shape(log_prob, advantages, "log_prob", "advantages")
    return log_prob, old_log_prob, advantages, _checks.token_mask(mask, log_prob.shape, "log_prob")


def optional_tokens(x, name: str, shape: tuple[int, ...]) -> jax.Array:
    x = _checks.float_array(x, name)
    if x.shape != shape:
        raise ValueError(f"`{name}` must have the shape of `log_prob` {shape}, got {x.shape}.")
    return x


def masked_mean(x: jax.Array, valid: jax.Array) -> jax.Array:
    """Mean over the valid tokens (0 when there are none); used for metrics."""
    return aggregate(x.astype(jnp.float32), valid, "token-mean")


def log_ratio(log_prob, old_log_prob, clip: float | None) -> jax.Array:
    """d = log_prob - old_log_prob, clamped to [-clip, clip] so exp(d) cannot overflow."""
    d = log_prob - old_log_prob
    if clip is None:
        return d
    c = _checks.real_scalar(clip, "log_ratio_clip", minimum=0.0)
    return jnp.clip(d, -c, c)


def ratio_param(x, name: str) -> float:
    x = _checks.real_scalar(x, name, minimum=0.0)
    if x > 1.0:
        raise ValueError(f"`{name}` is a fraction of the valid tokens in [0, 1], got {x}.")
    return x


def selection_count(ratio: float, n_valid: jax.Array, dtype) -> jax.Array:
    """max(int(ratio * N), 1) as in verl, computed in `dtype` (float64 matches Python exactly).

    In float32 the product can land one token off Python's float64 result when ratio * N falls
    within float32 rounding of an integer, which needs N in the millions.
    """
    n = jnp.floor(n_valid.astype(dtype) * jnp.asarray(ratio, dtype)).astype(jnp.int32)
    return jnp.maximum(n, 1)


def descending_rank(score: jax.Array) -> jax.Array:
    """Rank of each entry of `score` (any shape) in descending order; ties go to the lower index.

    A full sort keeps every shape static under jit, whatever the (traced) selection count.
    """
    flat = score.reshape(-1)
    order = jnp.argsort(-flat, stable=True)
    rank = jnp.zeros(flat.shape, jnp.int32).at[order].set(jnp.arange(flat.size, dtype=jnp.int32))
    return rank.reshape(score.shape)
