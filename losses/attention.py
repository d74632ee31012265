"""Attention-entropy regularizers: a collapse floor and the entropy-guided band penalty.

Entropy-guided attention (Jha & Reagen 2025, "Entropy-Guided Attention for Private LLMs"):
without LayerNorm and FFN nonlinearities, early layers suffer "entropic overload" (heads near
maximum entropy) and deep layers collapse. Its regularizer keeps each head's entropy near a
learnable fraction theta_h of the maximum entropy.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from entreg import _checks
from entreg._typing import Array, ArrayLike, Bool, Float, Scalar

_MODES = ("default", "faithful")


def max_attention_entropy(
    num_queries: int, num_keys: int, *, causal: bool = False, dtype=jnp.float32
) -> Float[Array, " q"]:
    """Per-row maximum entropy [Tq]: log(Tk), or log(i + 1) for query i under a causal mask."""
    num_queries = _checks.positive_int(num_queries, "num_queries")
    num_keys = _checks.positive_int(num_keys, "num_keys")
    if causal:
        n = jnp.minimum(jnp.arange(1, num_queries + 1), num_keys)
    else:
        n = jnp.full((num_queries,), num_keys)
    return jnp.log(n.astype(dtype))


def _entropy_and_max(entropy, max_entropy, name="entropy"):
    h = _checks.float_array(entropy, name)
    if h.ndim < 2:
        raise ValueError(f"`{name}` must have shape [..., heads, Tq], got {h.shape}.")
    h_max = _checks.float_array(max_entropy, "max_entropy")
    return h, _checks.broadcast(h_max, h.shape, "max_entropy", name)


def _row_mean(x, mask):
    if mask is None:
        return jnp.mean(x)
    mask = _checks.broadcast_bool(mask, x.shape, "mask", "entropy")
    return jnp.sum(jnp.where(mask, x, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


def attention_band_penalty(
    entropy: Float[ArrayLike, "*batch heads q"],
    theta: Float[ArrayLike, "*#shape"],
    *,
    max_entropy: float | Float[ArrayLike, "*#shape"],
    tolerance: float = 0.2,
    mode: str = "default",
    mask: Bool[ArrayLike, "*#shape"] | None = None,
) -> Scalar:
    r"""Penalty keeping each head's attention entropy near theta_h times the maximum entropy.

    ``entropy`` [..., heads, Tq] holds per-query entropies of one layer (stack layers on a
    leading axis and pass theta [layers, heads, 1]... broadcasting as needed); ``theta``
    broadcasts to [..., heads, 1] and is a learnable fraction (the released code initializes it
    to 0.5 and trains it with the model). With delta = H - theta E_max and tolerance
    tol = ``tolerance`` E_max:

    * ``mode="faithful"`` (the released code): E_max = log T for every row, penalty
      (delta 1[|delta| > tol])^2 summed over batch and queries and averaged over heads, so its
      scale grows with B T and it jumps from 0 to tol^2 at the band edge.
    * ``mode="default"``: the smooth hinge relu(|delta| - tol)^2 (continuous at the band edge),
      the per-row maximum ``max_entropy`` (log(i + 1) under a causal mask, see
      `max_attention_entropy`) and the mean over rows (batch- and length-independent scale),
      as the paper's Algorithm 1 averages over queries.

    Multiply by the weight (the paper's lambda = 1e-5 is for the faithful sum; with the mean a
    weight of order 1e-2 gives a similar pull at B T ~ 10^3). ``mask`` (default mode) selects
    the rows that count, e.g. non-padding queries.

    Args:
      entropy: [..., heads, Tq] attention entropies (nats).
      theta: target fractions broadcasting to ``entropy`` (per head, per layer and head, ...).
      max_entropy: per-row maxima broadcasting to ``entropy``; in faithful mode pass log T.
      tolerance: gamma, the half-width of the dead band as a fraction of E_max (0.2).
    """
    _checks.choice(mode, "mode", _MODES)
    tolerance = _checks.real_scalar(tolerance, "tolerance", minimum=0.0)
    h, h_max = _entropy_and_max(entropy, max_entropy)
    theta = _checks.broadcast(_checks.float_array(theta, "theta"), h.shape, "theta", "entropy")
    delta = h - theta * h_max
    tol = tolerance * h_max
    if mode == "faithful":
        if mask is not None:
            raise ValueError(
                "`mask` is not part of the faithful mode (the released code has none)."
            )
        pen = jnp.where(jnp.abs(delta) > tol, delta, 0.0) ** 2
        heads_axis = h.ndim - 2
        per_head = jnp.sum(pen, axis=tuple(a for a in range(h.ndim) if a != heads_axis))
        return jnp.mean(per_head)
    return _row_mean(jax.nn.relu(jnp.abs(delta) - tol) ** 2, mask)


def attention_floor_penalty(
    entropy: Float[ArrayLike, "*batch heads q"],
    floor: float | Float[ArrayLike, "*#shape"],
    *,
    max_entropy: float | Float[ArrayLike, "*#shape"],
    mask: Bool[ArrayLike, "*#shape"] | None = None,
) -> Scalar:
    r"""Collapse guard: mean over rows of relu(floor E_max - H)^2.

    Zero while every row keeps at least the fraction ``floor`` of its maximum entropy, and a
    smooth quadratic pull back once attention concentrates below it (entropy collapse, Zhai et
    al. 2023). ``floor`` broadcasts to ``entropy`` [..., heads, Tq] (a scalar, per head, or
    learnable); ``max_entropy`` as in `attention_band_penalty`. For a hard floor on the mean
    entropy use `entreg.constraint` instead.
    """
    h, h_max = _entropy_and_max(entropy, max_entropy)
    floor = _checks.broadcast(_checks.float_array(floor, "floor"), h.shape, "floor", "entropy")
    return _row_mean(jax.nn.relu(floor * h_max - h) ** 2, mask)
