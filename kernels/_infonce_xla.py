"""Blockwise InfoNCE over embeddings: pure JAX, every backend.

Anchors a [n, e] score against candidates c [M, e] as s_ij = a_i c_j / tau. Anchor rows are
swept in blocks of B: each block's [B, M] strip gives its rows' log-sum-exp exactly, so the
forward holds one strip and returns, over anchors i with a valid positive l_i,

    total = sum_i [s_{i, l_i} - lse_i + log K_i],   count = #such anchors

(K_i = valid candidates of row i). The backward recomputes each strip from the residuals
(a, c, tau, lse) and takes the cotangent g of ``total``:

    ds_ij = g (1[j = l_i] - p_ij),  p_ij = e^(s_ij - lse_i) on valid j,
    da = ds c / tau,   dc = ds^T a / tau,   dtau = -sum_ij ds_ij s_ij / tau

so neither direction holds an [n, M] matrix: memory is O(B M + (n + M) e).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from entreg import _scores

from . import _online


def accumulation_dtype(a, c):
    """float32, or float64 for float64 embeddings: never a 16-bit dtype."""
    return jnp.promote_types(jnp.result_type(a, c), jnp.float32)


def _strip(a, c, tau, labels, exclude, valid_a, valid_c, start, block: int):
    """Scores [B, M] of anchor rows [start, start + B), their valid mask and positive hits."""
    a_b = jax.lax.dynamic_slice_in_dim(a, start, block)
    s = jnp.dot(a_b, c.T, preferred_element_type=accumulation_dtype(a, c)) / tau
    cols = jnp.arange(c.shape[0])
    ex = jax.lax.dynamic_slice_in_dim(exclude, start, block)
    va = jax.lax.dynamic_slice_in_dim(valid_a, start, block)
    ok = va[:, None] & valid_c[None, :] & (cols[None, :] != ex[:, None])
    lab = jax.lax.dynamic_slice_in_dim(labels, start, block)
    hit = ok & (cols[None, :] == lab[:, None])
    return a_b, jnp.where(ok, s, 0.0), ok, hit


def _forward(a, c, tau, labels, exclude, valid_a, valid_c, block):
    def one(start):
        _, s, ok, hit = _strip(a, c, tau, labels, exclude, valid_a, valid_c, start, block)
        lse = _scores.log_sum_exp(s, ok, -1)
        k = jnp.sum(ok, axis=-1).astype(s.dtype)
        has_pos = jnp.any(hit, axis=-1)
        s_pos = jnp.sum(jnp.where(hit, s, 0.0), axis=-1)
        term = jnp.where(has_pos, s_pos - jnp.where(has_pos, lse, 0.0), 0.0)
        return term + jnp.where(has_pos, jnp.log(jnp.maximum(k, 1.0)), 0.0), lse, has_pos

    starts = jnp.arange(0, a.shape[0], block)
    term, lse, has_pos = (x.reshape(-1) for x in jax.lax.map(one, starts))
    return jnp.sum(term), jnp.sum(has_pos).astype(term.dtype), lse, has_pos


@functools.partial(jax.custom_vjp, nondiff_argnums=(7, 8))
def rows_infonce(a, c, tau, labels, exclude, valid_a, valid_c, block: int, axis_name=None):
    """(total, count) of anchors a [n, e] (n a multiple of ``block``) against candidates c;
    ``axis_name``: the mapped axis when called inside shard_map (for the scan's typing)."""
    total, count, _, _ = _forward(a, c, tau, labels, exclude, valid_a, valid_c, block)
    return total, count


def _fwd(a, c, tau, labels, exclude, valid_a, valid_c, block, axis_name):
    total, count, lse, has_pos = _forward(a, c, tau, labels, exclude, valid_a, valid_c, block)
    return (total, count), (a, c, tau, labels, exclude, valid_a, valid_c, lse, has_pos)


def _bwd(block, axis_name, res, cotangents):
    a, c, tau, labels, exclude, valid_a, valid_c, lse, has_pos = res
    g = cotangents[0]
    acc = accumulation_dtype(a, c)

    def step(carry, start):
        dc, dtau = carry
        a_b, s, ok, hit = _strip(a, c, tau, labels, exclude, valid_a, valid_c, start, block)
        lse_b = jax.lax.dynamic_slice_in_dim(lse, start, block)[:, None]
        pos_b = jax.lax.dynamic_slice_in_dim(has_pos, start, block)[:, None]
        p = jnp.where(
            ok & pos_b, jnp.exp(jnp.where(ok, s - jnp.where(pos_b, lse_b, 0.0), 0.0)), 0.0
        )
        ds = g.astype(acc) * (jnp.where(hit & pos_b, 1.0, 0.0) - p)
        ds_in = ds.astype(a.dtype)
        da_b = jnp.dot(ds_in, c, preferred_element_type=acc)
        dc = dc + jnp.dot(ds_in.T, a_b, preferred_element_type=acc)
        return (dc, dtau - jnp.sum(ds * s)), da_b

    init = _online.varying((jnp.zeros(c.shape, acc), jnp.zeros((), acc)), axis_name)
    (dc, dtau), da = jax.lax.scan(step, init, jnp.arange(0, a.shape[0], block))
    da = da.reshape(a.shape)
    if axis_name is not None:  # tau is replicated: its cotangent sums every device's part
        dtau = jax.lax.psum(dtau, axis_name)
    zero = functools.partial(jnp.zeros, dtype=jax.dtypes.float0)
    return (
        (da / tau).astype(a.dtype),
        (dc / tau).astype(c.dtype),
        (dtau / tau).astype(tau.dtype),
        zero(labels.shape),
        zero(exclude.shape),
        zero(valid_a.shape),
        zero(valid_c.shape),
    )


rows_infonce.defvjp(_fwd, _bwd)
