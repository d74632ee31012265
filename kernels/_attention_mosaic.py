"""Mosaic GPU (Hopper) kernels for attention with entropy: the algorithm of `_attention_xla`
with TMA copies, double-buffered key/value (or query) tiles and warpgroup matmuls.

One warpgroup per program, 64 x 64 tiles, bf16/f16 operands, float32 softmax state. Layout
inside: q, k, v [B, N, Tp|Sp, Dp] padded to whole tiles (Dp a multiple of 64). Forward: one
program per (batch, head, query tile) streams the key tiles through the centred online state of
`_online`. Backward: dq per query tile over key tiles; dk, dv per key tile over query tiles,
computed transposed (s^T = k q^T) so that the query-row statistics are column vectors and every
matmul operand is in shared memory or registers. The per-tile math (`_online`, `score_grads`)
is the XLA path's; `_mosaic.Emulated` runs these bodies on CPU for the tests.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from . import _mosaic, _online
from ._attention_xla import (
    finish,
    init_state,
    key_blocks_for,
    query_blocks_from,
    score_grads,
)

T = _mosaic.TILE


def _visible(P, q0, k0, kv_len, causal, transposed=False):
    """Visibility of the tile at query rows q0.., keys k0.. ([keys, queries] if transposed)."""
    q_dim, k_dim = (1, 0) if transposed else (0, 1)
    keys = P.iota((T, T), k_dim) + k0
    vis = keys < kv_len
    if causal:
        vis = vis & (keys <= P.iota((T, T), q_dim) + q0)
    return vis


def _forward_kernel(
    P, q_ref, k_ref, v_ref, o_ref, rows_ref, q_s, k_s, v_s, rows_s, q_bar, k_bar, v_bar,
    *, scale, causal, kv_len, nk,
):  # fmt: skip
    b, n, qi = P.program_id(0), P.program_id(1), P.program_id(2)
    q0 = qi * T
    P.copy_in(q_ref.at[b, n, pl.ds(q0, T)], q_s, q_bar.at[0])

    def fetch(j, slot):
        P.copy_in(k_ref.at[b, n, pl.ds(j * T, T)], k_s.at[slot], k_bar.at[slot])
        P.copy_in(v_ref.at[b, n, pl.ds(j * T, T)], v_s.at[slot], v_bar.at[slot])

    def body(j, slot, carry):
        state, o = carry
        P.wait(k_bar.at[slot])
        s = P.matmul(q_s, P.t(k_s.at[slot]), (T, T)) * scale
        s = jnp.where(_visible(P, q0, j * T, kv_len, causal), s, -jnp.inf)
        blk, e = _online.block_state(s)
        state, c_old, c_blk = _online.merge(state, blk)
        P.wait(v_bar.at[slot])
        e = (e * _online.spread(c_blk, e.shape)).astype(v_s.dtype)
        pv = P.matmul(e, v_s.at[slot], o.shape)
        return state, o * _online.spread(c_old, o.shape) + pv

    P.wait(q_bar.at[0])
    state, o = init_state((T,), q_s.shape[-1], jnp.float32)
    init = jax.tree.map(P.rows, state), P.tile(o)
    steps = key_blocks_for(qi, T, T, nk, causal)
    state, o = _mosaic.stream(0, steps, fetch, body, init, blocks=nk)
    q_s[...], rows_s[0], rows_s[1], rows_s[2] = finish(state, o, q_s.dtype)
    P.commit()
    P.store(q_s, o_ref.at[b, n, pl.ds(q0, T)])
    P.store(rows_s, rows_ref.at[b, n, :, pl.ds(q0, T)])
    P.drain()


def _forward(P, q, k, v, scale, causal, kv_len):
    """(out, [lse, E[s], H] stacked [B, N, 3, Tp]) of padded head-major 16-bit q, k, v."""
    b, n, tp, d = q.shape
    kernel = functools.partial(
        _forward_kernel, scale=scale, causal=causal, kv_len=kv_len, nk=k.shape[2] // T
    )
    return P.call(
        kernel,
        grid=(b, n, tp // T),
        out_shape=[q, jax.ShapeDtypeStruct((b, n, 3, tp), jnp.float32)],
        scratch=[
            P.smem((T, d), q.dtype),
            P.smem((2, T, d), q.dtype),
            P.smem((2, T, d), q.dtype),
            P.smem((3, T), jnp.float32, swizzled=False),
            P.barriers(),
            P.barriers(2),
            P.barriers(2),
        ],
    )(q, k, v)


def _dq_kernel(
    P, q_ref, k_ref, v_ref, do_ref, stats_ref, dq_ref, q_s, do_s, k_s, v_s, stats_s,
    q_bar, k_bar, v_bar, *, scale, causal, kv_len, nk,
):  # fmt: skip
    b, n, qi = P.program_id(0), P.program_id(1), P.program_id(2)
    q0 = qi * T
    P.copy_in(q_ref.at[b, n, pl.ds(q0, T)], q_s, q_bar.at[0])
    P.copy_in(do_ref.at[b, n, pl.ds(q0, T)], do_s, q_bar.at[1])
    P.copy_in(stats_ref.at[b, n, :, pl.ds(q0, T)], stats_s, q_bar.at[2])

    def fetch(j, slot):
        P.copy_in(k_ref.at[b, n, pl.ds(j * T, T)], k_s.at[slot], k_bar.at[slot])
        P.copy_in(v_ref.at[b, n, pl.ds(j * T, T)], v_s.at[slot], v_bar.at[slot])

    for r in range(3):
        P.wait(q_bar.at[r])
    stats = [_online.spread(P.load_rows(stats_s.at[r]), (T, T)) for r in range(4)]

    def body(j, slot, dq):
        P.wait(k_bar.at[slot])
        s = P.matmul(q_s, P.t(k_s.at[slot]), (T, T)) * scale
        s = jnp.where(_visible(P, q0, j * T, kv_len, causal), s, -jnp.inf)
        P.wait(v_bar.at[slot])
        dp = P.matmul(do_s, P.t(v_s.at[slot]), (T, T))
        _, ds = score_grads(s, dp, *stats)
        return dq + P.matmul(ds.astype(k_s.dtype), k_s.at[slot], dq.shape)

    init = P.tile(jnp.zeros(q_s.shape, jnp.float32))
    dq = _mosaic.stream(0, key_blocks_for(qi, T, T, nk, causal), fetch, body, init, blocks=nk)
    q_s[...] = (dq * scale).astype(q_s.dtype)
    P.commit()
    P.store(q_s, dq_ref.at[b, n, pl.ds(q0, T)])
    P.drain()


def _dkv_kernel(
    P, q_ref, k_ref, v_ref, do_ref, stats_ref, dk_ref, dv_ref, k_s, v_s, q_s, do_s, stats_s,
    k_bar, q_bar, *, scale, causal, kv_len, nq,
):  # fmt: skip
    b, n, kj = P.program_id(0), P.program_id(1), P.program_id(2)
    k0 = kj * T
    P.copy_in(k_ref.at[b, n, pl.ds(k0, T)], k_s, k_bar.at[0])
    P.copy_in(v_ref.at[b, n, pl.ds(k0, T)], v_s, k_bar.at[1])

    def fetch(i, slot):
        P.copy_in(q_ref.at[b, n, pl.ds(i * T, T)], q_s.at[slot], q_bar.at[slot])
        P.copy_in(do_ref.at[b, n, pl.ds(i * T, T)], do_s.at[slot], q_bar.at[slot])
        P.copy_in(stats_ref.at[b, n, :, pl.ds(i * T, T)], stats_s.at[slot], q_bar.at[slot])

    def body(i, slot, carry):
        dk, dv = carry
        P.wait(q_bar.at[slot])
        # Transposed tile [keys, queries]: query statistics are per column.
        st = [_online.spread(P.load_cols(stats_s.at[slot, r]), (T, T), 0) for r in range(4)]
        s = P.matmul(k_s, P.t(q_s.at[slot]), (T, T)) * scale
        s = jnp.where(_visible(P, i * T, k0, kv_len, causal, transposed=True), s, -jnp.inf)
        dp = P.matmul(v_s, P.t(do_s.at[slot]), (T, T))
        p, ds = score_grads(s, dp, *st)
        dv = dv + P.matmul(p.astype(do_s.dtype), do_s.at[slot], dv.shape)
        dk = dk + P.matmul(ds.astype(q_s.dtype), q_s.at[slot], dk.shape)
        return dk, dv

    P.wait(k_bar.at[0])
    P.wait(k_bar.at[1])
    zeros = P.tile(jnp.zeros(k_s.shape, jnp.float32))
    lo = query_blocks_from(kj, T, T, causal)
    dk, dv = _mosaic.stream(lo, nq, fetch, body, (zeros, zeros), blocks=nq)
    k_s[...] = (dk * scale).astype(k_s.dtype)
    v_s[...] = dv.astype(v_s.dtype)
    P.commit()
    P.store(k_s, dk_ref.at[b, n, pl.ds(k0, T)])
    P.store(v_s, dv_ref.at[b, n, pl.ds(k0, T)])
    P.drain()


def _backward(P, q, k, v, d_out, stats, scale, causal, kv_len):
    b, n, tp, d = q.shape
    sp = k.shape[2]
    opts = dict(scale=scale, causal=causal, kv_len=kv_len)
    tile, tiles = P.smem((T, d), q.dtype), P.smem((2, T, d), q.dtype)
    dq = P.call(
        functools.partial(_dq_kernel, nk=sp // T, **opts),
        grid=(b, n, tp // T),
        out_shape=[q],
        scratch=[
            tile, tile, tiles, tiles, P.smem((4, T), jnp.float32, swizzled=False),
            P.barriers(3), P.barriers(2), P.barriers(2),
        ],
    )(q, k, v, d_out, stats)[0]  # fmt: skip
    dk, dv = P.call(
        functools.partial(_dkv_kernel, nq=tp // T, **opts),
        grid=(b, n, sp // T),
        out_shape=[k, v],
        scratch=[
            tile, tile, tiles, tiles, P.smem((2, 4, T), jnp.float32, swizzled=False),
            P.barriers(2), P.barriers(2, copies=3),  # q, dO and statistics per slot
        ],
    )(q, k, v, d_out, stats)  # fmt: skip
    return dq, dk, dv


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def attention(q, k, v, scale: float, causal: bool, kv_len: int):
    """(out [B, N, Tp, Dp], entropy [B, N, Tp] float32) of padded head-major 16-bit q, k, v."""
    out, rows = _forward(_mosaic.platform(), q, k, v, scale, causal, kv_len)
    return out, rows[:, :, 2]


def _fwd(q, k, v, scale, causal, kv_len):
    out, rows = _forward(_mosaic.platform(), q, k, v, scale, causal, kv_len)
    return (out, rows[:, :, 2]), (q, k, v, out, rows[:, :, :2])


def _bwd(scale, causal, kv_len, res, cotangents):
    q, k, v, out, lse_mean = res
    d_out, g = cotangents
    delta = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)
    stats = jnp.concatenate([lse_mean, delta[:, :, None], g[:, :, None]], axis=2)
    return _backward(
        _mosaic.platform(), q, k, v, d_out.astype(q.dtype), stats, scale, causal, kv_len
    )


attention.defvjp(_fwd, _bwd)
