"""Exact thresholds over the vocabulary without sorting it.

A prefix rule (top-p, typical, top-k with a traced k) keeps the tokens whose score reaches a
threshold t*: the largest t such that the weight of {score >= t} is still >= a target. The
weight of that set only changes at the scores themselves, so t* is a score, and bisection over
the order-preserving unsigned-integer image of the float scores finds it exactly in as many
O(V) passes as the float has bits (32 for float32), with no [..., V] sort and no dynamic shape.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def ordered_bits(x: jax.Array) -> jax.Array:
    """Unsigned integers of the float's width, in the order of the floats (-0.0 == +0.0)."""
    bits = jnp.dtype(x.dtype).itemsize * 8
    u = jax.lax.bitcast_convert_type(x + 0.0, jnp.dtype(f"uint{bits}"))  # + 0.0: -0.0 -> +0.0
    sign = jnp.asarray(1 << (bits - 1), u.dtype)
    # Negative floats grow in magnitude as their bits grow: flip them all; set the sign bit of
    # the non-negative ones so that they come after every negative one.
    return jnp.where((u & sign) != 0, ~u, u | sign)


@jax.jit
def largest_threshold(
    score: jax.Array, weight: jax.Array, target: jax.Array, valid: jax.Array
) -> jax.Array:
    """The keep-mask {valid & score >= t*} along the last axis.

    t* is the largest score t with sum(weight over valid tokens with score >= t) >= target (one
    per row; ``target`` has the batch shape). Ties with t* are all kept. When even all valid
    tokens weigh less than ``target`` every valid token is kept; a row without valid tokens
    keeps none. ``weight`` must be >= 0 (a count or a probability).
    """
    u = ordered_bits(score)
    top = jnp.asarray(jnp.iinfo(u.dtype).max, u.dtype)
    lo = jnp.min(jnp.where(valid, u, top), axis=-1)
    hi = jnp.max(jnp.where(valid, u, jnp.zeros((), u.dtype)), axis=-1)
    w = jnp.where(valid, weight, 0)

    def halve(_, bracket):
        lo, hi = bracket
        gap = hi - lo  # >= 0 while the bracket is open; unsigned, so never compute it otherwise
        open_ = lo < hi
        mid = lo + jnp.where(open_, gap // 2 + (gap & 1), 0)  # upper middle: lo < mid <= hi
        enough = jnp.sum(jnp.where(u >= mid[..., None], w, 0), axis=-1) >= target
        return (
            jnp.where(open_ & enough, mid, lo),
            jnp.where(open_ & ~enough, mid - 1, hi),
        )

    lo, _ = jax.lax.fori_loop(0, jnp.dtype(u.dtype).itemsize * 8, halve, (lo, hi))
    return valid & (u >= lo[..., None])
