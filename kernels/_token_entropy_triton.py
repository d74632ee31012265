"""Pallas kernels for token log-prob and entropy from hidden states: the vocabulary-chunked
algorithm of `_token_entropy_xla`, one program per token block forward and for dh, one per
vocabulary chunk for dW.

Portable Pallas (grid, BlockSpec, an in-kernel loop over chunks read with ``pl.ds``): interpret
mode on any backend, Triton lowering for CUDA. The chunk math (masking, the online fold, the
logit gradient) is shared with the XLA implementation. The weight is padded to whole chunks
here (a copy of W unless V is a multiple of the chunk, as padded LM heads usually are).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from . import _online, _triton
from ._token_entropy_xla import accumulation_dtype, fold_chunk, init_state, logit_grads, mask_chunk


def _tile(rows, cols=None):
    if cols is None:
        return pl.BlockSpec((rows,), lambda i: (i,))
    return pl.BlockSpec((rows, cols), lambda i: (i, 0))


def _whole(shape):
    return pl.BlockSpec(shape, lambda i: (0,) * len(shape))


def _chunk(h, w_ref, i, chunk, tau, valid_vocab):
    start = i * chunk
    w_c = w_ref[:, pl.ds(start, chunk)]
    z = jnp.dot(h, w_c, preferred_element_type=accumulation_dtype(h, w_c)) / tau
    return (*mask_chunk(z, start, start, 0, valid_vocab), w_c)


def _forward_kernel(
    h_ref, w_ref, y_ref, tau_ref, logp_ref, ent_ref, lse_ref, mean_ref, *, chunk, nv, valid_vocab
):
    h, labels, tau = h_ref[...], y_ref[...], tau_ref[0]

    def body(i, carry):
        z, cols, _ = _chunk(h, w_ref, i, chunk, tau, valid_vocab)
        return fold_chunk(*carry, z, cols, labels)  # type: ignore[call-arg]  # mypy miscounts *carry

    state, zy = jax.lax.fori_loop(0, nv, body, init_state(h.shape[0], tau.dtype))
    lse, mean_z, ent = _online.summary(state)
    logp_ref[...], ent_ref[...], lse_ref[...], mean_ref[...] = zy - lse, ent, lse, mean_z


def _dh_kernel(*refs, chunk, nv, valid_vocab):
    h_ref, w_ref, y_ref, tau_ref, *row_refs, dh_ref, dzz_ref = refs  # rows: lse, E[z], g_l, g_H
    h, labels, tau = h_ref[...], y_ref[...], tau_ref[0]
    rows = tuple(r[...] for r in row_refs)

    def body(i, carry):
        dh, dzz = carry
        z, cols, w_c = _chunk(h, w_ref, i, chunk, tau, valid_vocab)
        dz, dz_z = logit_grads(z, cols, labels, *rows)
        nt = (((1,), (1,)), ((), ()))  # dz W_c^T
        dh = dh + jax.lax.dot_general(dz.astype(h.dtype), w_c, nt, preferred_element_type=tau.dtype)
        return dh, dzz + dz_z

    dh, dzz = jax.lax.fori_loop(
        0, nv, body, (jnp.zeros(h.shape, tau.dtype), jnp.zeros(h.shape[:1], tau.dtype))
    )
    dh_ref[...] = (dh / tau).astype(dh_ref.dtype)
    dzz_ref[...] = dzz


def _dw_kernel(*refs, chunk, bt, nt, valid_vocab):
    h_ref, w_ref, y_ref, tau_ref, *row_refs, dw_ref = refs  # rows: lse, E[z], g_l, g_H
    start = pl.program_id(0) * chunk
    w_c, tau = w_ref[...], tau_ref[0]

    def body(j, dw):
        blk = pl.ds(j * bt, bt)
        h = h_ref[blk, :]
        z = jnp.dot(h, w_c, preferred_element_type=tau.dtype) / tau
        z, cols = mask_chunk(z, start, start, 0, valid_vocab)
        rows = tuple(r[blk] for r in row_refs)
        dz, _ = logit_grads(z, cols, y_ref[blk], *rows)
        tn = (((0,), (0,)), ((), ()))  # h^T dz
        return dw + jax.lax.dot_general(h, dz.astype(h.dtype), tn, preferred_element_type=tau.dtype)

    dw = jax.lax.fori_loop(0, nt, body, jnp.zeros(w_c.shape, tau.dtype))
    dw_ref[...] = (dw / tau).astype(dw_ref.dtype)


def _forward(h, weight, labels, tau, valid_vocab, chunk, bt):
    t, hd = h.shape
    acc = tau.dtype
    rows = jax.ShapeDtypeStruct((t,), acc)
    return pl.pallas_call(
        functools.partial(
            _forward_kernel, chunk=chunk, nv=weight.shape[1] // chunk, valid_vocab=valid_vocab
        ),
        grid=(t // bt,),
        in_specs=[_tile(bt, hd), _whole(weight.shape), _tile(bt), _whole((1,))],
        out_specs=[_tile(bt)] * 4,
        out_shape=[rows] * 4,
        **_triton.compiler_params(),
    )(h, weight, labels, tau[None])


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def log_probs_and_entropy(h, weight, labels, tau, valid_vocab: int, chunk: int, bt: int):
    """(log pi(y), H) per row of h [Tp, Hp]; W [Hp, Vp] padded to whole chunks, labels [Tp]
    (-1 on padded rows), tau a scalar of the accumulation dtype."""
    logp, ent, _, _ = _forward(h, weight, labels, tau, valid_vocab, chunk, bt)
    return logp, ent


def _fwd(h, weight, labels, tau, valid_vocab, chunk, bt):
    logp, ent, lse, mean_z = _forward(h, weight, labels, tau, valid_vocab, chunk, bt)
    return (logp, ent), (h, weight, labels, tau, lse, mean_z)


def _bwd(valid_vocab, chunk, bt, res, cotangents):
    h, weight, labels, tau, lse, mean_z = res
    (t, hd), v = h.shape, weight.shape[1]
    rows = (lse, mean_z, *(g.astype(tau.dtype) for g in cotangents))
    args = (h, weight, labels, tau[None], *rows)
    dh, dzz = pl.pallas_call(
        functools.partial(_dh_kernel, chunk=chunk, nv=v // chunk, valid_vocab=valid_vocab),
        grid=(t // bt,),
        in_specs=[_tile(bt, hd), _whole(weight.shape), _tile(bt), _whole((1,))] + [_tile(bt)] * 4,
        out_specs=[_tile(bt, hd), _tile(bt)],
        out_shape=[jax.ShapeDtypeStruct(h.shape, h.dtype), jax.ShapeDtypeStruct((t,), tau.dtype)],
        **_triton.compiler_params(),
    )(*args)
    dw = pl.pallas_call(
        functools.partial(_dw_kernel, chunk=chunk, bt=bt, nt=t // bt, valid_vocab=valid_vocab),
        grid=(v // chunk,),
        in_specs=[
            _whole(h.shape),
            pl.BlockSpec((hd, chunk), lambda i: (0, i)),
            _whole((t,)),
            _whole((1,)),
        ]
        + [_whole((t,))] * 4,
        out_specs=pl.BlockSpec((hd, chunk), lambda i: (0, i)),
        out_shape=jax.ShapeDtypeStruct(weight.shape, weight.dtype),
        **_triton.compiler_params(),
    )(*args)
    dlabels = jnp.zeros(labels.shape, jax.dtypes.float0)
    return dh, dw, dlabels, (-jnp.sum(dzz) / tau).astype(tau.dtype)


log_probs_and_entropy.defvjp(_fwd, _bwd)
