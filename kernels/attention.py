"""Attention with a per-query entropy output, in O(T) memory."""

from __future__ import annotations

import math

import jax.numpy as jnp

from entreg import _checks, _masked
from entreg._typing import Array, ArrayLike, Bool, Float
from entreg.attention import visible_keys

from . import _attention_mosaic, _attention_triton, _attention_xla, _mosaic, _triton

IMPLEMENTATIONS = ("xla", "mosaic", "triton", "reference")


def _heads_major(x, groups: int):
    """[B, T, K, D] -> [B, K * groups, T, D], each key/value head repeated for its query group
    (outside the custom VJP, so the repeat's transpose sums the group's gradients)."""
    return jnp.repeat(jnp.swapaxes(x, 1, 2), groups, axis=1)


def reference_attention_with_entropy(
    query: Float[ArrayLike, "*b t n d"],
    key: Float[ArrayLike, "*b s k d"],
    value: Float[ArrayLike, "*b s k d"],
    *,
    mask: Bool[ArrayLike, "*#b #n #t #s"] | None = None,
    is_causal: bool = False,
    scale: float | None = None,
) -> tuple[Float[Array, "*b t n d"], Float[Array, "*b n t"]]:
    """Unfused reference on the materialized [B, N, T, S] attention map (float32 or wider)."""
    squeeze = jnp.ndim(query) == 3
    q, k, v, mask, scale = _prepare(query, key, value, mask, scale)
    groups = q.shape[2] // k.shape[2]
    acc = jnp.promote_types(q.dtype, jnp.float32)
    s = jnp.einsum(
        "bnqd,bnkd->bnqk",
        jnp.swapaxes(q, 1, 2),
        _heads_major(k, groups),
        preferred_element_type=acc,
    )
    s = s * scale
    # The project's masked softmax: rows with no visible key are all-zero with zero gradient.
    d = _masked.log_softmax(s, visible_keys(s.shape, mask, is_causal), -1)
    out = jnp.einsum("bnqk,bnkd->bqnd", d.p, _heads_major(v, groups).astype(acc)).astype(q.dtype)
    ent = _masked.entropy_of(d, -1)
    return (out[0], ent[0]) if squeeze else (out, ent)


def _prepare(query, key, value, mask, scale):
    """Validates and returns q, k, v [B, T|S, N|K, D], a 4-d boolean mask or None, the scale."""
    q, k, v = (jnp.asarray(x) for x in (query, key, value))
    for name, x in (("query", q), ("key", k), ("value", v)):
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(f"`{name}` must be floating point, got dtype {x.dtype}.")
        if x.ndim not in (3, 4) or x.ndim != q.ndim:
            raise ValueError(
                f"`{name}` must be [B, T, heads, D] (or [T, heads, D]) like `query`, "
                f"got shape {x.shape}."
            )
    if not q.dtype == k.dtype == v.dtype:
        raise TypeError(f"`query`, `key`, `value` dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}.")
    if q.ndim == 3:
        q, k, v = q[None], k[None], v[None]
    if k.shape != v.shape:
        raise ValueError(f"`key` and `value` shapes differ: {k.shape} and {v.shape}.")
    b, _, n, d = q.shape
    if k.shape[0] != b or k.shape[3] != d or n % k.shape[2]:
        raise ValueError(
            f"`key` [B, S, K, D] must match `query` [B, T, N, D] in B and D with N a multiple of "
            f"K, got {k.shape} and {q.shape}."
        )
    if mask is not None:
        mask = _checks.bool_array(mask, "mask")
        full = (b, n, q.shape[1], k.shape[1])
        if mask.ndim > 4:
            raise ValueError(f"`mask` must broadcast to [B, N, T, S] {full}, got {mask.shape}.")
        mask = mask.reshape((1,) * (4 - mask.ndim) + mask.shape)
        if any(m not in (1, f) for m, f in zip(mask.shape, full, strict=True)):
            raise ValueError(f"`mask` with shape {mask.shape} does not broadcast to {full}.")
    scale = 1.0 / math.sqrt(d) if scale is None else _checks.real_scalar(scale, "scale")
    return q, k, v, mask, scale


def attention_with_entropy(
    query: Float[ArrayLike, "*b t n d"],
    key: Float[ArrayLike, "*b s k d"],
    value: Float[ArrayLike, "*b s k d"],
    *,
    mask: Bool[ArrayLike, "*#b #n #t #s"] | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    block_q: int = 512,
    block_k: int = 512,
    implementation: str | None = None,
) -> tuple[Float[Array, "*b t n d"], Float[Array, "*b n t"]]:
    r"""Softmax attention and the entropy of each query's attention row, without [T, S] maps.

        s_ij = scale q_i . k_j  (masked: -inf),   A_i = softmax(s_i),   out_i = sum_j A_ij v_j
        H_i = -sum_j A_ij log A_ij = logsumexp_j s_ij - sum_j A_ij s_ij

    The blockwise online softmax carries one more accumulator, a = sum e^(s - m) (s - m), so
    H = log l - a / l costs O(T) extra memory; the custom backward is flash attention's with
    the entropy cotangent g folded in, dS = P (dP - D - g (s - E_A[s])) (see `attention.md`,
    Zhai et al., ICML 2023 for attention entropy). Entropy regularizers (collapse floors,
    entropy-guided bands) can then train through a fused attention.

    Args:
      query: [B, T, N, D] (or [T, N, D]), the layout of ``jax.nn.dot_product_attention``.
      key, value: [B, S, K, D] with N a multiple of K (grouped-query attention).
      mask: optional boolean broadcasting to [B, N, T, S], True = visible. A row with no
        visible key returns output 0 and entropy 0 (``jax.nn.dot_product_attention`` would
        average the values there) and passes no gradient.
      is_causal: query i sees keys j <= i (top-left aligned); blocks above the diagonal are
        skipped.
      scale: logit scale, default 1 / sqrt(D).
      block_q, block_k: query and key rows per block (static; capped at T and S).
      implementation: ``"xla"`` (blockwise, every backend), ``"mosaic"`` (Pallas Mosaic GPU
        kernels for Hopper: 64 x 64 tiles, TMA, wgmma; bfloat16 / float16 inputs; emulated
        off-GPU), ``"triton"`` (portable Pallas kernels: Triton lowering on GPU, interpret
        mode elsewhere), ``"reference"`` (materialized map, for tests) or None: ``"xla"``,
        which every backend runs. The Pallas kernels take no dense ``mask`` (``is_causal``
        only) and are verified off-GPU (emulation or interpret mode, and lowering for CUDA),
        not yet run on a GPU, so they are not the GPU default yet. ``block_q`` and ``block_k``
        apply to "xla" and "triton".

    Returns:
      ``(output, entropy)``: output like ``query`` (accumulated in float32), entropy
      [B, N, T] (or [N, T]) in nats, float32 (float64 for float64 inputs).
    """
    squeeze = jnp.ndim(query) == 3
    q, k, v, mask, scale = _prepare(query, key, value, mask, scale)
    block_q = _checks.positive_int(block_q, "block_q")
    block_k = _checks.positive_int(block_k, "block_k")
    impl = _checks.choice(
        "xla" if implementation is None else implementation, "implementation", IMPLEMENTATIONS
    )
    if impl in ("mosaic", "triton") and mask is not None:
        raise ValueError(
            f"implementation={impl!r} takes no dense `mask` (is_causal only): use 'xla' for it."
        )
    if impl == "mosaic":
        _mosaic.check_operands("query", q)
    if impl == "reference":
        out, ent = reference_attention_with_entropy(
            q, k, v, mask=mask, is_causal=is_causal, scale=scale
        )
    else:
        out, ent = _blockwise(q, k, v, mask, is_causal, scale, block_q, block_k, impl)
    return (out[0], ent[0]) if squeeze else (out, ent)


def _blockwise(q, k, v, mask, causal, scale, block_q, block_k, impl):
    t, s = q.shape[1], k.shape[1]
    if impl == "mosaic":  # fixed 64 x 64 tiles, even for shorter sequences
        bq = bk = _mosaic.TILE
    else:
        bq, bk = min(block_q, t), min(block_k, s)
    tp, sp = -(-t // bq) * bq, -(-s // bk) * bk
    groups = q.shape[2] // k.shape[2]
    qh = jnp.pad(jnp.swapaxes(q, 1, 2), ((0, 0), (0, 0), (0, tp - t), (0, 0)))
    kh, vh = (
        jnp.pad(_heads_major(x, groups), ((0, 0), (0, 0), (0, sp - s), (0, 0))) for x in (k, v)
    )
    if mask is not None:
        mask = jnp.pad(
            mask,
            [
                (0, 0),
                (0, 0),
                (0, tp - t if mask.shape[2] > 1 else 0),
                (0, sp - s if mask.shape[3] > 1 else 0),
            ],
        )
    if impl == "xla":
        out, ent = _attention_xla.attention(qh, kh, vh, mask, scale, bool(causal), s, bq, bk)
    else:
        # Triton tiles want a power-of-two head dim, Mosaic's 128-byte rows a multiple of 64:
        # zero columns change no score or output.
        d = q.shape[-1]
        dp = _mosaic.round_up(d) if impl == "mosaic" else _triton.pow2(d)
        qh, kh, vh = (jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, dp - d))) for x in (qh, kh, vh))
        if impl == "mosaic":
            out, ent = _attention_mosaic.attention(qh, kh, vh, scale, bool(causal), s)
        else:
            out, ent = _attention_triton.attention(qh, kh, vh, scale, bool(causal), s, bq, bk)
        out = out[..., :d]
    return jnp.swapaxes(out[:, :, :t], 1, 2), ent[:, :, :t]
