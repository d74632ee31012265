"""Vocabulary-chunked log-prob and entropy from hidden states: pure JAX, every backend.

Row logits z = h W / tau are produced one vocabulary chunk at a time and folded into an online
state (m, s, u, z_y) with a centred accumulator:

    m = max z,  s = sum e^(z - m),  u = sum e^(z - m) (z - m)
    lse = m + log s,  log pi(y) = z_y - lse,  H = log s - u / s,  E[z] = m + u / s

Merging a chunk with running max m' = max(m, max_chunk z) and c = e^(m - m'):

    s <- c s + sum_chunk e^(z - m'),   u <- c (u + s (m - m')) + sum_chunk e^(z - m') (z - m')

The backward recomputes each chunk's logits from the residuals (h, W, labels, lse, E[z]) and
accepts cotangents for both outputs:

    dz_v = g_logp (1[v = y] - p_v) - g_H p_v (z_v - E[z]),   dh = dz W^T / tau,  dW = h^T dz / tau

so neither direction holds more than one [T, chunk] block of logits.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def accumulation_dtype(h, weight):
    """float32, or float64 for float64 inputs: never the bf16 / f16 input dtype."""
    return jnp.promote_types(jnp.result_type(h, weight), jnp.float32)


def _chunk_logits(h, w_chunk, start, valid_vocab, tau):
    """Logits of one chunk [T, C] in the accumulation dtype, invalid columns at -inf."""
    z = jnp.dot(h, w_chunk, preferred_element_type=accumulation_dtype(h, w_chunk)) / tau
    cols = start + jnp.arange(w_chunk.shape[1])
    return jnp.where(cols < valid_vocab, z, -jnp.inf), cols


def _chunks(weight, chunk: int):
    """W [H, V] as [num_chunks, H, chunk], zero-padded."""
    hdim, v = weight.shape
    n = -(-v // chunk)
    w = jnp.pad(weight, ((0, 0), (0, n * chunk - v)))
    return jnp.moveaxis(w.reshape(hdim, n, chunk), 1, 0)


def _forward(h, weight, labels, tau, valid_vocab, chunk):
    t, acc = h.shape[0], accumulation_dtype(h, weight)
    init = (
        jnp.full((t,), -jnp.inf, acc),  # m
        jnp.zeros((t,), acc),  # s
        jnp.zeros((t,), acc),  # u
        jnp.full((t,), -jnp.inf, acc),  # z_y (stays -inf for an out-of-range label)
    )

    def step(carry, inputs):
        m, s, u, zy = carry
        w_chunk, start = inputs
        z, cols = _chunk_logits(h, w_chunk, start, valid_vocab, tau)
        m_new = jnp.maximum(m, jnp.max(z, axis=-1))
        # Until a finite logit is seen m_new is -inf: shift by 0 instead (every term is 0 then).
        shift = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
        c = jnp.exp(m - shift)  # e^-inf = 0 on the first finite chunk
        e = jnp.exp(z - shift[:, None])
        centred = jnp.where(e > 0, e * (z - shift[:, None]), 0.0)
        old = jnp.where(s > 0, s * (m - shift), 0.0)
        s_new = c * s + jnp.sum(e, axis=-1)
        u_new = c * (u + old) + jnp.sum(centred, axis=-1)
        hit = cols[None, :] == labels[:, None]
        zy = jnp.where(jnp.any(hit, axis=-1), jnp.sum(jnp.where(hit, z, 0.0), axis=-1), zy)
        return (m_new, s_new, u_new, zy), None

    w = _chunks(weight, chunk)
    starts = jnp.arange(w.shape[0]) * chunk
    (m, s, u, zy), _ = jax.lax.scan(step, init, (w, starts))
    lse = m + jnp.log(s)
    mean_z = m + u / s
    entropy = jnp.log(s) - u / s
    return zy - lse, entropy, lse, mean_z


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def log_probs_and_entropy(h, weight, labels, tau, valid_vocab: int, chunk: int):
    """(log pi(y), H) per row of h [T, H]; labels [T] int; tau a scalar of the accumulation
    dtype."""
    logp, ent, _, _ = _forward(h, weight, labels, tau, valid_vocab, chunk)
    return logp, ent


def _fwd(h, weight, labels, tau, valid_vocab, chunk):
    logp, ent, lse, mean_z = _forward(h, weight, labels, tau, valid_vocab, chunk)
    return (logp, ent), (h, weight, labels, tau, lse, mean_z)


def _bwd(valid_vocab, chunk, res, cotangents):
    h, weight, labels, tau, lse, mean_z = res
    acc = accumulation_dtype(h, weight)
    g_logp, g_ent = (g.astype(acc) for g in cotangents)
    v = weight.shape[1]

    def step(dh, inputs):
        w_chunk, start = inputs
        z, cols = _chunk_logits(h, w_chunk, start, valid_vocab, tau)
        p = jnp.exp(z - lse[:, None])
        dev = jnp.where(p > 0, z - mean_z[:, None], 0.0)
        hit = (cols[None, :] == labels[:, None]).astype(acc)
        dz = g_logp[:, None] * (hit - p) - g_ent[:, None] * p * dev
        dz_in = dz.astype(h.dtype)
        dh = dh + jnp.dot(dz_in, w_chunk.T, preferred_element_type=acc)
        dw = jnp.dot(h.T, dz_in, preferred_element_type=acc)
        # d/dtau of z = hW / tau is -z / tau: sum_v dz_v z_v over finite z.
        dtau = -jnp.sum(jnp.where(p > 0, dz * z, 0.0)) / tau
        return dh, (dw, dtau)

    w = _chunks(weight, chunk)
    starts = jnp.arange(w.shape[0]) * chunk
    dh, (dw, dtau) = jax.lax.scan(step, jnp.zeros(h.shape, acc), (w, starts))
    dw = jnp.moveaxis(dw, 0, 1).reshape(weight.shape[0], -1)[:, :v]
    # labels are integers: their cotangent is float0.
    dlabels = jnp.zeros(labels.shape, jax.dtypes.float0)
    return (
        (dh / tau).astype(h.dtype),
        (dw / tau).astype(weight.dtype),
        dlabels,
        jnp.sum(dtau).astype(tau.dtype),
    )


log_probs_and_entropy.defvjp(_fwd, _bwd)
