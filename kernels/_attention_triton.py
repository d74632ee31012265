"""Pallas kernels for attention with entropy: the blockwise algorithm of `_attention_xla`, one
program per (batch, head, query block) forward and per key or query block backward.

Written in Pallas's portable subset (grid, BlockSpec, an in-kernel loop over blocks read with
``pl.ds``), so the same kernels run in interpret mode on any backend (how the test suite runs
them on CPU) and lower for CUDA through the Triton backend with explicit compiler parameters.
The per-block math is shared with the XLA implementation: `attend_block`, `finish`,
`score_grads`, `visible`. Dense ``mask`` arrays are not supported here (the dispatcher falls
back to "xla"); causal masking and key padding are.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from . import _triton
from ._attention_xla import (
    attend_block,
    finish,
    init_state,
    key_blocks_for,
    query_blocks_from,
    score_grads,
    scores,
    visible,
)


def _row(bq):
    return pl.BlockSpec((None, None, bq), lambda b, n, i: (b, n, i))


def _tile(bq, d):
    return pl.BlockSpec((None, None, bq, d), lambda b, n, i: (b, n, i, 0))


def _whole(length, d=None):
    shape = (None, None, length) if d is None else (None, None, length, d)
    return pl.BlockSpec(shape, lambda b, n, i: (b, n) + (0,) * (len(shape) - 2))


def _forward_kernel(
    q_ref, k_ref, v_ref, o_ref, lse_ref, mean_ref, ent_ref, *, scale, causal, kv_len, bq, bk, nk
):
    qi = pl.program_id(2)
    q = q_ref[...]
    acc = jnp.promote_types(q.dtype, jnp.float32)

    def body(kj, carry):
        kb, vb = k_ref[pl.ds(kj * bk, bk), :], v_ref[pl.ds(kj * bk, bk), :]
        s = scores(q, kb, visible(None, causal, kv_len, qi * bq, kj * bk, bq, bk), scale, acc)
        return attend_block(*carry, s, vb, acc)  # type: ignore[call-arg]  # mypy miscounts *carry

    state, o = jax.lax.fori_loop(
        0, key_blocks_for(qi, bq, bk, nk, causal), body, init_state((bq,), q.shape[-1], acc)
    )
    o_ref[...], lse_ref[...], mean_ref[...], ent_ref[...] = finish(state, o, o_ref.dtype)


def _forward(q, k, v, scale, causal, kv_len, bq, bk):
    b, n, tp, d = q.shape
    nq, nk, sp = tp // bq, k.shape[2] // bk, k.shape[2]
    acc = jnp.promote_types(q.dtype, jnp.float32)
    rows = jax.ShapeDtypeStruct((b, n, tp), acc)
    kernel = functools.partial(
        _forward_kernel, scale=scale, causal=causal, kv_len=kv_len, bq=bq, bk=bk, nk=nk
    )
    return pl.pallas_call(
        kernel,
        grid=(b, n, nq),
        in_specs=[_tile(bq, d), _whole(sp, d), _whole(sp, d)],
        out_specs=[_tile(bq, d), _row(bq), _row(bq), _row(bq)],
        out_shape=[jax.ShapeDtypeStruct(q.shape, q.dtype), rows, rows, rows],
        **_triton.compiler_params(),
    )(q, k, v)


def _dq_kernel(*refs, scale, causal, kv_len, bq, bk, nk):
    q_ref, k_ref, v_ref, do_ref, *row_refs, dq_ref = refs  # rows: lse, E[s], D, g
    qi = pl.program_id(2)
    q, do = q_ref[...], do_ref[...]
    acc = row_refs[0].dtype
    rows = tuple(r[...][:, None] for r in row_refs)

    def body(kj, dq):
        kb, vb = k_ref[pl.ds(kj * bk, bk), :], v_ref[pl.ds(kj * bk, bk), :]
        s = scores(q, kb, visible(None, causal, kv_len, qi * bq, kj * bk, bq, bk), scale, acc)
        dp = jax.lax.dot_general(do, vb, (((1,), (1,)), ((), ())), preferred_element_type=acc)
        _, ds = score_grads(s, dp, *rows)
        return dq + jnp.dot(ds.astype(kb.dtype), kb, preferred_element_type=acc)

    dq = jax.lax.fori_loop(0, key_blocks_for(qi, bq, bk, nk, causal), body, jnp.zeros(q.shape, acc))
    dq_ref[...] = (dq * scale).astype(dq_ref.dtype)


def _dkv_kernel(*refs, scale, causal, kv_len, bq, bk, nq):
    q_ref, k_ref, v_ref, do_ref, *row_refs, dk_ref, dv_ref = refs  # rows: lse, E[s], D, g
    kj = pl.program_id(2)
    kb, vb = k_ref[...], v_ref[...]
    acc = row_refs[0].dtype

    def body(qi, carry):
        dk, dv = carry
        blk = pl.ds(qi * bq, bq)
        q, do = q_ref[blk, :], do_ref[blk, :]
        rows = tuple(r[blk][:, None] for r in row_refs)
        s = scores(q, kb, visible(None, causal, kv_len, qi * bq, kj * bk, bq, bk), scale, acc)
        dp = jax.lax.dot_general(do, vb, (((1,), (1,)), ((), ())), preferred_element_type=acc)
        p, ds = score_grads(s, dp, *rows)
        t = (((0,), (0,)), ((), ()))  # contract the query rows: p^T dO, dS^T q
        dv = dv + jax.lax.dot_general(p.astype(do.dtype), do, t, preferred_element_type=acc)
        dk = dk + jax.lax.dot_general(ds.astype(q.dtype), q, t, preferred_element_type=acc)
        return dk, dv

    zeros = jnp.zeros(kb.shape, acc)
    dk, dv = jax.lax.fori_loop(query_blocks_from(kj, bq, bk, causal), nq, body, (zeros, zeros))
    dk_ref[...] = (dk * scale).astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6, 7))
def attention(q, k, v, scale: float, causal: bool, kv_len: int, bq: int, bk: int):
    """(out [B, N, Tp, D], entropy [B, N, Tp]) of padded, head-major q, k, v."""
    out, _, _, ent = _forward(q, k, v, scale, causal, kv_len, bq, bk)
    return out, ent


def _fwd(q, k, v, scale, causal, kv_len, bq, bk):
    out, lse, mean_s, ent = _forward(q, k, v, scale, causal, kv_len, bq, bk)
    return (out, ent), (q, k, v, out, lse, mean_s)


def _bwd(scale, causal, kv_len, bq, bk, res, cotangents):
    q, k, v, out, lse, mean_s = res
    d_out, g = cotangents
    b, n, tp, d = q.shape
    sp = k.shape[2]
    nq, nk = tp // bq, sp // bk
    delta = jnp.sum(d_out.astype(lse.dtype) * out.astype(lse.dtype), axis=-1)
    rows = (lse, mean_s, delta, g.astype(lse.dtype))
    common = dict(scale=scale, causal=causal, kv_len=kv_len, bq=bq, bk=bk)
    dq = pl.pallas_call(
        functools.partial(_dq_kernel, **common, nk=nk),
        grid=(b, n, nq),
        in_specs=[_tile(bq, d), _whole(sp, d), _whole(sp, d), _tile(bq, d)] + [_row(bq)] * 4,
        out_specs=_tile(bq, d),
        out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
        **_triton.compiler_params(),
    )(q, k, v, d_out, *rows)
    dk, dv = pl.pallas_call(
        functools.partial(_dkv_kernel, **common, nq=nq),
        grid=(b, n, nk),
        in_specs=[_whole(tp, d), _tile(bk, d), _tile(bk, d), _whole(tp, d)] + [_whole(tp)] * 4,
        out_specs=[_tile(bk, d), _tile(bk, d)],
        out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
        **_triton.compiler_params(),
    )(q, k, v, d_out, *rows)
    return dq, dk, dv


attention.defvjp(_fwd, _bwd)
