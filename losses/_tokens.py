"""Shared validation and masked reductions for per-token policy losses ([B, T] matrices)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from entreg import _checks
from entreg.aggregation import aggregate


def policy_inputs(
    log_prob, old_log_prob, advantages, mask
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Validates the four [..., T] inputs every policy loss takes; returns them upcast, with 0
    in the masked slots (padding may hold NaN or the -inf log-probs of excluded tokens, which
    must reach neither values nor gradients), and the boolean mask."""
    log_prob = _checks.float_array(log_prob, "log_prob")
    if log_prob.ndim == 0:
        raise ValueError("`log_prob` must have a token axis (shape [..., T]).")
    old_log_prob = _checks.float_array(old_log_prob, "old_log_prob")
    advantages = _checks.float_array(advantages, "advantages")
    _checks.same_shape(log_prob, old_log_prob, "log_prob", "old_log_prob")
    _checks.same_shape(log_prob, advantages, "log_prob", "advantages")
    valid = _checks.token_mask(mask, log_prob.shape, "log_prob")
    lp, old, adv = (jnp.where(valid, x, 0.0) for x in (log_prob, old_log_prob, advantages))
    return lp, old, adv, valid


def optional_tokens(x, name: str, valid: jax.Array) -> jax.Array:
    """A further per-token input shaped like `log_prob`, upcast, with 0 in the masked slots."""
    x = _checks.float_array(x, name)
    if x.shape != valid.shape:
        raise ValueError(
            f"`{name}` must have the shape of `log_prob` {valid.shape}, got {x.shape}."
        )
    return jnp.where(valid, x, 0.0)


def masked_mean(x: jax.Array, valid: jax.Array, dtype) -> jax.Array:
    """Mean over the valid tokens (0 when there are none) in ``dtype`` (the loss's); for
    metrics, so float64 inputs keep float64 metrics."""
    return aggregate(x.astype(dtype), valid, "token-mean")


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


def selection_count(ratio: float, n_valid: jax.Array) -> jax.Array:
    """max(int(ratio * N), 1) for a traced count N, exactly as Python (and verl) compute it.

    Python's int(ratio * N) floors the float64 product; in float32 that product is one token off
    already at N = 100, ratio = 0.29 (29 instead of 28), and float64 may not be enabled. So the
    product is formed exactly in integers and rounded to float64 by hand: with ratio = M / 2^E
    (M < 2^53), P = M N is built from 16-bit digits in uint32 (no 64-bit integers needed), spread
    into bits, rounded to 53 significant bits (half to even), and shifted right by E. Exact for
    0 <= N < 2^31 whatever the dtype of the inputs.
    """
    if ratio == 0.0:
        return jnp.ones(jnp.shape(n_valid), jnp.int32)
    mantissa, exponent = math.frexp(ratio)
    m, e = int(mantissa * 2**53), 53 - exponent  # ratio = m / 2^e exactly
    if e >= 84:  # m N < 2^84 <= 2^e: the product floors to 0
        return jnp.ones(jnp.shape(n_valid), jnp.int32)
    u32 = jnp.uint32
    n = jnp.asarray(n_valid).astype(u32)
    digits = [jnp.zeros_like(n) for _ in range(7)]  # P in base 2^16
    for i in range(4):
        for j, n_j in enumerate((n & 0xFFFF, n >> 16)):
            prod = u32((m >> (16 * i)) & 0xFFFF) * n_j  # < 2^32
            digits[i + j] = digits[i + j] + (prod & 0xFFFF)
            digits[i + j + 1] = digits[i + j + 1] + (prod >> 16)
    for k in range(6):
        digits[k + 1] = digits[k + 1] + (digits[k] >> 16)
        digits[k] = digits[k] & 0xFFFF
    pos = jnp.arange(96)
    bits = jnp.concatenate(
        [((d[..., None] >> jnp.arange(16, dtype=u32)) & 1) == 1 for d in digits[:6]], axis=-1
    )
    length = jnp.max(jnp.where(bits, pos + 1, 0), axis=-1, keepdims=True)
    shift = jnp.maximum(length - 53, 0)  # bits below `shift` do not fit a float64 mantissa
    half = jnp.any(bits & (pos == shift - 1), axis=-1, keepdims=True)
    sticky = jnp.any(bits & (pos < shift - 1), axis=-1, keepdims=True)
    odd = jnp.any(bits & (pos == shift), axis=-1, keepdims=True)
    kept = bits & (pos >= shift)
    # Rounding up adds 2^shift: the run of ones from `shift` clears and the next zero sets.
    carry_to = jnp.min(jnp.where(~kept & (pos >= shift), pos, 96), axis=-1, keepdims=True)
    bumped = jnp.where((pos >= shift) & (pos <= carry_to), ~kept, kept)
    kept = jnp.where(half & (sticky | odd), bumped, kept)
    top = min(96, e + 31)
    count = jnp.sum(kept[..., e:top].astype(u32) << jnp.arange(top - e, dtype=u32), axis=-1)
    return jnp.maximum(count.astype(jnp.int32), 1)


def descending_rank(score: jax.Array) -> jax.Array:
    """Rank of each entry of `score` (any shape) in descending order; ties go to the lower index.

    A full sort keeps every shape static under jit, whatever the (traced) selection count.
    """
    flat = score.reshape(-1)
    order = jnp.argsort(-flat, stable=True)
    rank = jnp.zeros(flat.shape, jnp.int32).at[order].set(jnp.arange(flat.size, dtype=jnp.int32))
    return rank.reshape(score.shape)
