"""Blockwise attention with an entropy output: pure JAX, every backend.

Layout inside: q [B, N, Tp, D], k and v [B, N, Sp, D], padded to whole blocks. For each query
block the key blocks stream through the centred online state of `_online` (m, l, a) plus the
running output o:

    (m, l, a) <- merge((m, l, a), block state of s),   o <- c_old o + c_blk e^(s - m_blk) v

and at the end out = o / l, lse = m + log l, E[s] = m + a / l, H = log l - a / l. A row with no
visible key gets out = 0, H = 0 and no gradient (lse is set to +inf so that p = 0 there).

The backward (cotangents dO for the output and g for the entropy) is the flash-attention one
with the entropy term folded in:

    p = e^(s - lse),  dP = dO v^T,  D = rowsum(dO * out),
    dS = p (dP - D - g (s - E[s])),  dq = dS k scale,  dk = dS^T q scale,  dv = p^T dO

(the same as D' = D - g E and dP -= g s, kept centred for accuracy at large logits). Key
blocks are the outer loop, query blocks the inner one; under a causal mask both loops skip the
blocks above the diagonal. Nothing of size [T, S] is ever held.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from . import _online


def visible(mask, causal: bool, kv_len: int, q0, k0, bq: int, bk: int):
    """Boolean [.., bq, bk] visibility of the block at rows q0.., columns k0.."""
    rows = q0 + jnp.arange(bq)[:, None]
    cols = k0 + jnp.arange(bk)[None, :]
    vis = cols < kv_len
    if causal:
        vis = vis & (cols <= rows)
    if mask is not None:
        if mask.shape[2] != 1:
            mask = jax.lax.dynamic_slice_in_dim(mask, q0, bq, 2)
        if mask.shape[3] != 1:
            mask = jax.lax.dynamic_slice_in_dim(mask, k0, bk, 3)
        vis = vis & mask
    return vis


def scores(qb, kb, vis, scale, acc):
    """Scaled scores [.., bq, bk] in the accumulation dtype, -inf where not visible."""
    s = jnp.einsum("...qd,...kd->...qk", qb, kb, preferred_element_type=acc) * scale
    return jnp.where(vis, s, -jnp.inf)


def init_state(rows: tuple[int, ...], d: int, acc):
    """The empty online state (m, l, a) and output accumulator for ``rows`` query rows."""
    return (
        (jnp.full(rows, -jnp.inf, acc), jnp.zeros(rows, acc), jnp.zeros(rows, acc)),
        jnp.zeros((*rows, d), acc),
    )


def attend_block(state, o, s, vb, acc):
    """Fold the scores s [.., bq, bk] of one key block (values vb) into (state, o)."""
    blk, e = _online.block_state(s)
    state, c_old, c_blk = _online.merge(state, blk)
    pv = jnp.einsum("...qk,...kd->...qd", e.astype(vb.dtype), vb, preferred_element_type=acc)
    return state, c_old[..., None] * o + c_blk[..., None] * pv


def finish(state, o, dtype):
    """(out, lse, E[s], H); a row with no visible key gets out 0, lse +inf, E 0, H 0."""
    lse, mean_s, ent = _online.summary(state)
    alive = state[1] > 0
    rows = jnp.where(alive, state[1], 1.0)
    out = jnp.where(_online.spread(alive, o.shape), o / _online.spread(rows, o.shape), 0.0)
    return (
        out.astype(dtype),
        jnp.where(alive, lse, jnp.inf),
        jnp.where(alive, mean_s, 0.0),
        jnp.where(alive, ent, 0.0),
    )


def score_grads(s, dp, lse, mean_s, delta, g):
    """p = e^(s - lse) and dS = p (dP - D - g (s - E[s])) of one block (0 where p = 0);
    lse, mean_s, delta, g are [.., bq, 1]."""
    p = jnp.exp(s - lse)
    return p, jnp.where(p > 0, p * (dp - delta - g * (s - mean_s)), 0.0)


def _block(x, start, size):
    return jax.lax.dynamic_slice_in_dim(x, start, size, 2)


def key_blocks_for(qi, bq: int, bk: int, nk: int, causal: bool):
    """Key blocks [0, hi) a query block can see (all of them without a causal mask)."""
    return jnp.minimum(nk, ((qi + 1) * bq + bk - 1) // bk) if causal else nk


def query_blocks_from(kj, bq: int, bk: int, causal: bool):
    """First query block that can see key block kj."""
    return (kj * bk) // bq if causal else 0


def _forward(q, k, v, mask, scale, causal, kv_len, bq, bk):
    b, n, tp, d = q.shape
    nq, nk = tp // bq, k.shape[2] // bk
    acc = jnp.promote_types(q.dtype, jnp.float32)

    def query_block(qi):
        qb = _block(q, qi * bq, bq)

        def body(kj, carry):
            vis = visible(mask, causal, kv_len, qi * bq, kj * bk, bq, bk)
            s = scores(qb, _block(k, kj * bk, bk), vis, scale, acc)
            return attend_block(*carry, s, _block(v, kj * bk, bk), acc)  # type: ignore[call-arg]  # mypy miscounts *carry

        init = init_state((b, n, bq), d, acc)
        state, o = jax.lax.fori_loop(0, key_blocks_for(qi, bq, bk, nk, causal), body, init)
        return finish(state, o, q.dtype)

    blocks = jax.lax.map(query_block, jnp.arange(nq))  # each [nq, B, N, bq, ...]
    return tuple(jnp.moveaxis(x, 0, 2).reshape(b, n, tp, *x.shape[4:]) for x in blocks)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7, 8))
def attention(q, k, v, mask, scale: float, causal: bool, kv_len: int, bq: int, bk: int):
    """(out [B, N, Tp, D], entropy [B, N, Tp]) of padded, head-major q, k, v."""
    out, _, _, ent = _forward(q, k, v, mask, scale, causal, kv_len, bq, bk)
    return out, ent


def _fwd(q, k, v, mask, scale, causal, kv_len, bq, bk):
    out, lse, mean_s, ent = _forward(q, k, v, mask, scale, causal, kv_len, bq, bk)
    return (out, ent), (q, k, v, mask, out, lse, mean_s)


def _bwd(scale, causal, kv_len, bq, bk, res, cotangents):
    q, k, v, mask, out, lse, mean_s = res
    d_out, g = cotangents
    acc = lse.dtype
    nq, nk = q.shape[2] // bq, k.shape[2] // bk
    delta = jnp.sum(d_out.astype(acc) * out.astype(acc), axis=-1)
    g = g.astype(acc)

    def key_block(kj, carry):
        dq, dk, dv = carry
        kb, vb = _block(k, kj * bk, bk), _block(v, kj * bk, bk)

        def body(qi, inner):
            dq, dkb, dvb = inner
            qb, dob = _block(q, qi * bq, bq), _block(d_out, qi * bq, bq)
            lse_b, mean_b, delta_b, g_b = (
                _block(x[..., None], qi * bq, bq) for x in (lse, mean_s, delta, g)
            )
            s = scores(qb, kb, visible(mask, causal, kv_len, qi * bq, kj * bk, bq, bk), scale, acc)
            dp = jnp.einsum("bnqd,bnkd->bnqk", dob, vb, preferred_element_type=acc)
            p, ds = score_grads(s, dp, lse_b, mean_b, delta_b, g_b)
            p, ds = p.astype(q.dtype), ds.astype(q.dtype)
            dvb = dvb + jnp.einsum("bnqk,bnqd->bnkd", p, dob, preferred_element_type=acc)
            dkb = dkb + jnp.einsum("bnqk,bnqd->bnkd", ds, qb, preferred_element_type=acc)
            dq_b = _block(dq, qi * bq, bq) + jnp.einsum(
                "bnqk,bnkd->bnqd", ds, kb, preferred_element_type=acc
            )
            dq = jax.lax.dynamic_update_slice_in_dim(dq, dq_b, qi * bq, 2)
            return dq, dkb, dvb

        zeros = jnp.zeros(kb.shape, acc)
        dq, dkb, dvb = jax.lax.fori_loop(
            query_blocks_from(kj, bq, bk, causal), nq, body, (dq, zeros, zeros)
        )
        dk = jax.lax.dynamic_update_slice_in_dim(dk, dkb, kj * bk, 2)
        dv = jax.lax.dynamic_update_slice_in_dim(dv, dvb, kj * bk, 2)
        return dq, dk, dv

    init = (jnp.zeros(q.shape, acc), jnp.zeros(k.shape, acc), jnp.zeros(v.shape, acc))
    dq, dk, dv = jax.lax.fori_loop(0, nk, key_block, init)
    return ((dq * scale).astype(q.dtype), (dk * scale).astype(k.dtype), dv.astype(v.dtype), None)


attention.defvjp(_fwd, _bwd)
