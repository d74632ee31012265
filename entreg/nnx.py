"""Flax NNX integration: record attention entropy inside models and collect sown signals.

* `EntropyAttention`: a drop-in `flax.nnx.MultiHeadAttention` that sows the per-head attention
  entropy [batch..., heads, q] under ``"attention_entropy"`` on every call, computed from the
  logits it already forms (no second pass over the attention map).
* `entropy_attention_fn`: the same attention function, for ``nnx.MultiHeadAttention(
  attention_fn=...)``; it records only when the module is passed (``sow_weights=True``).
* `collect`: gathers sown intermediates (attention entropy, embeddings you sow yourself, ...)
  from ``nnx.capture`` into a signals dict for `entreg.compose`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from entreg import _masked
from entreg._typing import Array, Float, Shaped
from entreg.attention import visible_keys

__all__ = ["ENTROPY", "EntropyAttention", "collect", "entropy_attention_fn"]

ENTROPY = "attention_entropy"


def entropy_attention_fn(
    query: Float[Array, "*batch q heads d"],
    key: Float[Array, "*batch k heads d"],
    value: Float[Array, "*batch k heads dv"],
    bias: Float[Array, "*#batch #heads #q #k"] | None = None,
    mask: Shaped[Array, "*#batch #heads #q #k"] | None = None,
    broadcast_dropout: bool = True,
    dropout_rng=None,
    dropout_rate: float = 0.0,
    deterministic: bool = False,
    dtype=None,
    precision=None,
    module: nnx.Module | None = None,
    promote_dtype=nnx.nn.dtypes.promote_dtype,
    is_causal: bool = False,
) -> Float[Array, "*batch q heads dv"]:
    """`nnx.dot_product_attention` with per-head entropy sown on ``module`` when given.

    Layout as in flax: q [batch..., q, heads, d], k/v [batch..., kv, heads, d]; mask True = attend.
    The entropy is that of the attention weights before dropout, accumulated in float32.
    A query with no visible key gets all-zero weights (output 0, entropy 0); flax's own function
    fills masked logits with a large negative number and so averages every value there.
    """
    query, key, value = promote_dtype((query, key, value), dtype=dtype)
    dtype = query.dtype
    query = query / jnp.sqrt(query.shape[-1]).astype(dtype)
    logits = jnp.einsum("...qhd,...khd->...hqk", query, key, precision=precision)
    if bias is not None:
        logits = logits + bias
    valid = visible_keys(logits.shape, None if mask is None else mask.astype(bool), is_causal)
    d = _masked.log_softmax(logits.astype(jnp.promote_types(dtype, jnp.float32)), valid, -1)
    if module is not None:
        module.sow(nnx.Intermediate, ENTROPY, _masked.entropy_of(d, -1))
    weights = d.p.astype(dtype)
    if not deterministic and dropout_rate > 0.0:
        keep = 1.0 - dropout_rate
        shape = list(weights.shape)
        if broadcast_dropout:
            shape[:-2] = [1] * (len(shape) - 2)
        kept = jax.random.bernoulli(dropout_rng, keep, shape)
        weights = weights * (kept / keep).astype(dtype)
    return jnp.einsum("...hqk,...khd->...qhd", weights, value, precision=precision)


class EntropyAttention(nnx.MultiHeadAttention):
    """`nnx.MultiHeadAttention` that always records per-head attention entropy.

    Same constructor and call signature as `nnx.MultiHeadAttention` (``attention_fn`` is fixed).
    Run the model under ``y, inter = nnx.capture(model, nnx.Intermediate)(x)``; then
    ``entreg.nnx.collect(inter, "attention_entropy")`` returns one [batch..., heads, q] array per
    attention call.
    """

    def __init__(self, *args, **kwargs):
        if "attention_fn" in kwargs:
            raise TypeError("EntropyAttention fixes `attention_fn`; use nnx.MultiHeadAttention.")
        super().__init__(*args, attention_fn=entropy_attention_fn, **kwargs)

    def __call__(self, *args, sow_weights: bool = True, **kwargs) -> Array:
        """`nnx.MultiHeadAttention.__call__` that also sows the per-head entropy."""
        # sow_weights=True is how flax hands the module to attention_fn, which sows the entropy.
        return super().__call__(*args, sow_weights=sow_weights, **kwargs)


def collect(source, *names: str) -> dict[str, tuple[jax.Array, ...]]:
    """Gathers sown intermediates named ``names`` into a signals dict.

    ``source`` is either the intermediates `State` returned by
    ``nnx.capture(model, nnx.Intermediate)(x)`` (the recommended path in flax >= 0.12), or the
    model itself, whose ``nnx.Intermediate`` variables are then popped (older flax).

    Returns name -> tuple of arrays, one per sow call, in the model's attribute order (e.g. one
    per layer). Raises if a name was never sown, which usually means the forward did not run the
    module (or ran it outside ``nnx.capture``).
    """
    state = nnx.pop(source, nnx.Intermediate) if isinstance(source, nnx.Module) else source
    found: dict[str, list[jax.Array]] = {n: [] for n in names}
    for path, leaf in nnx.to_flat_state(state):
        name = next((p for p in reversed(path) if isinstance(p, str) and p in found), None)
        if name is not None:
            value = leaf.get_value() if hasattr(leaf, "get_value") else leaf
            found[name].extend(value if isinstance(value, tuple) else (value,))
    empty = [n for n, v in found.items() if not v]
    if empty:
        raise ValueError(
            f"Nothing was sown under `names` {empty}; run the model's forward first (inside "
            "nnx.capture)."
        )
    return {n: tuple(v) for n, v in found.items()}
