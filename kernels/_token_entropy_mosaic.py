"""Mosaic GPU (Hopper) kernels for token log-prob and entropy from hidden states: the
vocabulary-chunked algorithm of `_token_entropy_xla` on 64 x 64 tiles with TMA copies,
double-buffered tiles and warpgroup matmuls (bf16/f16 operands, float32 accumulation).

Inside: h [Tp, Hp], W [Hp, Vp] padded to whole tiles, labels [Tp] (-1 on padded rows).

Forward: one program per 64-token tile sweeps the vocabulary tile by tile; each logit tile is a
sum over 64-wide slices of H (h and W tiles streamed through shared memory), folded into the
online state (`fold_chunk`). Nothing of size [T, V] exists, only one [64, 64] logit tile.

Backward: one program per (token tile, vocabulary tile), Cut Cross-Entropy's layout: it
recomputes its logit tile, forms dz (`logit_grads`) and scatter-adds dz W^T into dh and h^T dz
into dW with TMA reductions into float32 buffers, so the programs run in parallel over both T
and V instead of each owning a whole [64, H] or [H, 64] accumulator.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from . import _mosaic, _online
from ._token_entropy_xla import fold_chunk, init_state, logit_grads

T = _mosaic.TILE


def _logits(P, h_ref, w_ref, t0, c, nk, h_s, w_s, bar, inv_tau):
    """The [64, 64] logit tile (tokens t0.., vocabulary tile c) = sum over H slices, / tau."""

    def fetch(k, slot):
        P.copy_in(h_ref.at[pl.ds(t0, T), pl.ds(k * T, T)], h_s.at[slot], bar.at[slot])
        P.copy_in(w_ref.at[pl.ds(k * T, T), pl.ds(c * T, T)], w_s.at[slot], bar.at[slot])

    def body(k, slot, z):
        P.wait(bar.at[slot])
        return z + P.matmul(h_s.at[slot], w_s.at[slot], (T, T))

    z = _mosaic.stream(0, nk, fetch, body, P.tile(jnp.zeros((T, T), jnp.float32)), blocks=nk)
    return z * _online.spread(inv_tau, z.shape)


def _columns(P, c, z, valid_vocab):
    """Global column ids of vocabulary tile c, and z with the columns past valid_vocab at -inf."""
    cols = P.iota(z.shape, 1) + c * T
    return cols, jnp.where(cols < valid_vocab, z, -jnp.inf)


def _forward_kernel(
    P, h_ref, w_ref, y_ref, rows_ref, out_ref, h_s, w_s, y_s, rows_s, bar, row_bar,
    *, nk, nv, valid_vocab,
):  # fmt: skip
    t0 = P.program_id(0) * T
    P.copy_in(y_ref.at[pl.ds(t0, T)], y_s, row_bar.at[0])
    P.copy_in(rows_ref.at[:, pl.ds(t0, T)], rows_s.at[pl.ds(0, 1)], row_bar.at[1])
    P.wait(row_bar.at[0])
    P.wait(row_bar.at[1])
    labels, inv_tau = P.load_rows(y_s), P.load_rows(rows_s.at[0])

    def chunk(c, carry):
        z = _logits(P, h_ref, w_ref, t0, c, nk, h_s, w_s, bar, inv_tau)
        cols, z = _columns(P, c, z, valid_vocab)
        return fold_chunk(*carry, z, cols, labels)  # type: ignore[call-arg]  # mypy miscounts *carry

    init = jax.tree.map(P.rows, init_state(T, jnp.float32))
    state, zy = jax.lax.fori_loop(0, nv, chunk, init)
    lse, mean_z, ent = _online.summary(state)
    for r, x in enumerate((zy - lse, ent, lse, mean_z)):
        rows_s[r] = x
    P.commit()
    P.store(rows_s, out_ref.at[:, pl.ds(t0, T)])
    P.drain()


def _forward(P, h, w, labels, inv_tau, valid_vocab):
    """[log pi(y), H, lse, E[z]] stacked [4, Tp] float32."""
    (tp, hp), vp = h.shape, w.shape[1]
    kernel = functools.partial(_forward_kernel, nk=hp // T, nv=vp // T, valid_vocab=valid_vocab)
    return P.call(
        kernel,
        grid=(tp // T,),
        out_shape=[jax.ShapeDtypeStruct((4, tp), jnp.float32)],
        scratch=[
            P.smem((2, T, T), h.dtype),
            P.smem((2, T, T), w.dtype),
            P.smem((T,), jnp.int32, swizzled=False),
            P.smem((4, T), jnp.float32, swizzled=False),
            P.barriers(2, copies=2),  # an h and a W tile per slot
            P.barriers(2),
        ],
    )(h, w, labels, inv_tau)[0]


def _backward_kernel(
    P, h_ref, w_ref, y_ref, stats_ref, dh_ref, dw_ref, dzz_ref,
    h_s, w_s, dz_s, acc_s, y_s, stats_s, bar, row_bar, *, nk, valid_vocab,
):  # fmt: skip
    ti, c = P.program_id(0), P.program_id(1)
    t0 = ti * T
    P.copy_in(y_ref.at[pl.ds(t0, T)], y_s, row_bar.at[0])
    P.copy_in(stats_ref.at[:, pl.ds(t0, T)], stats_s, row_bar.at[1])
    P.wait(row_bar.at[0])
    P.wait(row_bar.at[1])
    labels = P.load_rows(y_s)
    lse, mean_z, g_logp, g_ent, inv_tau = (P.load_rows(stats_s.at[r]) for r in range(5))

    z = _logits(P, h_ref, w_ref, t0, c, nk, h_s, w_s, bar, inv_tau)
    cols, z = _columns(P, c, z, valid_vocab)
    dz, dz_z = logit_grads(z, cols, labels, lse, mean_z, g_logp, g_ent)
    # dh = dz W^T / tau and dW = h^T dz / tau: fold 1/tau into the 16-bit operand once.
    dz = (dz * _online.spread(inv_tau, dz.shape)).astype(dz_s.dtype)
    stats_s[0] = dz_z
    dz_s[...] = dz
    P.commit()
    P.store(stats_s.at[pl.ds(0, 1)], dzz_ref.at[pl.ds(c, 1), pl.ds(t0, T)])

    def fetch(k, slot):
        P.copy_in(h_ref.at[pl.ds(t0, T), pl.ds(k * T, T)], h_s.at[slot], bar.at[slot])
        P.copy_in(w_ref.at[pl.ds(k * T, T), pl.ds(c * T, T)], w_s.at[slot], bar.at[slot])

    def body(k, slot, carry):
        P.wait(bar.at[slot])
        dh = P.matmul(dz, P.t(w_s.at[slot]), (T, T))  # [tokens, H slice]
        dw = P.matmul(P.t(h_s.at[slot]), dz_s, (T, T))  # [H slice, vocabulary]
        P.drain()  # the previous scatter has read acc_s
        acc_s[0] = dh
        acc_s[1] = dw
        P.commit()
        P.store(acc_s.at[0], dh_ref.at[pl.ds(t0, T), pl.ds(k * T, T)], add=True)
        P.store(acc_s.at[1], dw_ref.at[pl.ds(k * T, T), pl.ds(c * T, T)], add=True)
        return carry

    _mosaic.stream(0, nk, fetch, body, (), blocks=nk)
    P.drain()


def _backward(P, h, w, labels, stats, valid_vocab):
    """(dh, dW) float32 and the per-(tile, row) sums of dz z [Vp / 64, Tp]."""
    (tp, hp), vp = h.shape, w.shape[1]
    zeros = (
        jnp.zeros(h.shape, jnp.float32),
        jnp.zeros(w.shape, jnp.float32),
        jnp.zeros((vp // T, tp), jnp.float32),
    )
    return P.call(
        functools.partial(_backward_kernel, nk=hp // T, valid_vocab=valid_vocab),
        grid=(tp // T, vp // T),
        scratch=[
            P.smem((2, T, T), h.dtype),
            P.smem((2, T, T), w.dtype),
            P.smem((T, T), h.dtype),
            P.smem((2, T, T), jnp.float32),
            P.smem((T,), jnp.int32, swizzled=False),
            P.smem((5, T), jnp.float32, swizzled=False),
            P.barriers(2, copies=2),  # an h and a W tile per slot
            P.barriers(2),
        ],
        accumulate=3,
    )(h, w, labels, stats, *zeros)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def log_probs_and_entropy(h, weight, labels, tau, valid_vocab: int):
    """(log pi(y), H) float32 per row of 16-bit h [Tp, Hp]; W [Hp, Vp], labels [Tp] int32,
    all padded to whole 64-tiles; tau a float32 scalar."""
    out = _forward(_mosaic.platform(), h, weight, labels, _inv_tau(tau, h), valid_vocab)
    return out[0], out[1]


def _inv_tau(tau, h):
    return jnp.broadcast_to(1.0 / tau, (1, h.shape[0])).astype(jnp.float32)


def _fwd(h, weight, labels, tau, valid_vocab):
    out = _forward(_mosaic.platform(), h, weight, labels, _inv_tau(tau, h), valid_vocab)
    return (out[0], out[1]), (h, weight, labels, tau, out[2:])


def _bwd(valid_vocab, res, cotangents):
    h, weight, labels, tau, lse_mean = res
    g = jnp.stack([x.astype(jnp.float32) for x in cotangents])
    stats = jnp.concatenate([lse_mean, g, _inv_tau(tau, h)])
    dh, dw, dzz = _backward(_mosaic.platform(), h, weight, labels, stats, valid_vocab)
    dlabels = jnp.zeros(labels.shape, jax.dtypes.float0)
    return (
        dh.astype(h.dtype),
        dw.astype(weight.dtype),
        dlabels,
        (-jnp.sum(dzz) / tau).astype(tau.dtype),
    )


log_probs_and_entropy.defvjp(_fwd, _bwd)
