"""Attention entropy from attention logits."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from entreg import _checks, _masked


def visible_keys(shape: tuple[int, ...], mask, causal: bool) -> jax.Array | None:
    """Boolean key-visibility [..., Tq, Tk] from a broadcastable mask and a causal flag.

    The causal mask is aligned top-left (query i sees keys j <= i), as in
    ``jax.nn.dot_product_attention(is_causal=True)``.
    """
    if mask is not None:
        mask = _checks.broadcast_bool(mask, shape, "mask", "logits")
    if causal:
        tq, tk = shape[-2:]
        tri = jnp.arange(tk)[None, :] <= jnp.arange(tq)[:, None]
        mask = tri if mask is None else mask & tri
    return mask


def attention_entropy(logits, *, mask=None, causal: bool = False, normalize: bool = False):
    r"""Per-query entropy of attention maps, H_i = logsumexp_j s_ij - sum_j A_ij s_ij.

    Computed from the attention LOGITS s (already scaled; -inf = masked), so it never takes the
    log of an attention weight; gradient dH_i/ds_ij = -A_ij (s_ij - E_{A_i}[s]).
    Zhai et al., "Stabilizing Transformer Training by Preventing Attention Entropy Collapse"
    (ICML 2023).

    Args:
      logits: [..., Tq, Tk] attention logits.
      mask: optional boolean, broadcastable to the logits, True = key visible (as in
        ``jax.nn.dot_product_attention``).
      causal: also hide keys j > i (top-left aligned).
      normalize: divide by the row's maximum entropy log(#visible keys) (log(i+1) under a causal
        mask), giving values in [0, 1]; rows with at most one visible key give 0.

    Returns:
      [..., Tq] entropies (nats, or normalized). Rows without a visible key return 0.
    """
    logits = _checks.float_array(logits, "logits")
    if logits.ndim < 2:
        raise ValueError(f"`logits` must have shape [..., Tq, Tk], got {logits.shape}.")
    valid = visible_keys(logits.shape, mask, causal)
    d = _masked.log_softmax(logits, valid, -1)
    h = _masked.entropy_of(d, -1)
    if not normalize:
        return h
    n = jnp.sum(d.valid, axis=-1)
    h_max = jnp.log(jnp.maximum(n, 1).astype(h.dtype))
    return jnp.where(n > 1, h / jnp.where(n > 1, h_max, 1.0), 0.0)
