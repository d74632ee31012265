"""Vocabulary-chunked log-prob and entropy from hidden states: pure JAX, every backend.

Row logits z = h W / tau are produced one vocabulary chunk at a time and folded into the
centred online state (m, s, u) of `_online` plus the label logit z_y:

    lse = m + log s,  log pi(y) = z_y - lse,  H = log s - u / s,  E[z] = m + u / s

With the vocabulary sharded over a mesh axis, each device sweeps its columns and the states
merge by a pmax of m and a psum of the rescaled s and u (O(T) communication).

The backward recomputes each chunk's logits from the residuals (h, W, labels, lse, E[z]) and
accepts cotangents for both outputs:

    dz_v = g_logp (1[v = y] - p_v) - g_H p_v (z_v - E[z]),   dh = dz W^T / tau,  dW = h^T dz / tau

so neither direction holds more than one [T, chunk] block of logits.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from . import _online


def accumulation_dtype(h, weight):
    """float32, or float64 for float64 inputs: never the bf16 / f16 input dtype."""
    return jnp.promote_types(jnp.result_type(h, weight), jnp.float32)


def _chunk_logits(h, weight, i, chunk: int, tau, valid_vocab: int, offset):
    """Logits [T, chunk] of local chunk ``i`` in the accumulation dtype, its global column ids,
    its weight slice and first local column. W is sliced in place, never padded or copied: the
    last chunk is moved back to end at column V_local, and its columns already swept by the
    previous chunk are masked. Masked columns and those past ``valid_vocab`` are -inf."""
    nominal = i * chunk
    start = jnp.minimum(nominal, weight.shape[1] - chunk)
    w_chunk = jax.lax.dynamic_slice_in_dim(weight, start, chunk, 1)
    z = jnp.dot(h, w_chunk, preferred_element_type=accumulation_dtype(h, weight)) / tau
    local = start + jnp.arange(chunk)
    cols = offset + local
    z = jnp.where((local >= nominal) & (cols < valid_vocab), z, -jnp.inf)
    return z, cols, w_chunk, start


def _varying(tree, axis_name):
    """Mark a scan's initial carry as varying over the vocabulary axis (shard_map typing)."""
    return tree if axis_name is None else jax.lax.pcast(tree, axis_name, to="varying")


def _offset(weight, axis_name):
    """Global index of this device's first vocabulary column."""
    return 0 if axis_name is None else jax.lax.axis_index(axis_name) * weight.shape[1]


def _partial_stats(h, weight, labels, tau, valid_vocab, chunk, axis_name):
    """(m, s, u, z_y) of this device's columns of ``weight``, chunk by chunk."""
    t, acc = h.shape[0], accumulation_dtype(h, weight)
    offset = _offset(weight, axis_name)
    init = (
        jnp.full((t,), -jnp.inf, acc),  # m
        jnp.zeros((t,), acc),  # s
        jnp.zeros((t,), acc),  # u
        jnp.full((t,), -jnp.inf, acc),  # z_y (stays -inf unless the label is a valid column here)
    )
    init = _varying(init, axis_name)

    def step(carry, i):
        m, s, u, zy = carry
        z, cols, _, _ = _chunk_logits(h, weight, i, chunk, tau, valid_vocab, offset)
        (m, s, u), _, _ = _online.merge((m, s, u), _online.block_state(z)[0])
        hit = cols[None, :] == labels[:, None]
        zy = jnp.maximum(zy, jnp.max(jnp.where(hit, z, -jnp.inf), axis=-1))
        return (m, s, u, zy), None

    return jax.lax.scan(step, init, jnp.arange(-(-weight.shape[1] // chunk)))[0]


def _forward(h, weight, labels, tau, valid_vocab, chunk, axis_name):
    m, s, u, zy = _partial_stats(h, weight, labels, tau, valid_vocab, chunk, axis_name)
    state = (m, s, u)
    if axis_name is not None:  # the label column lives on one device: pmax of z_y
        state = _online.merge_devices(state, axis_name)
        zy = jax.lax.pmax(zy, axis_name)
    lse, mean_z, entropy = _online.summary(state)
    return zy - lse, entropy, lse, mean_z


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def log_probs_and_entropy(h, weight, labels, tau, valid_vocab: int, chunk: int, axis_name=None):
    """(log pi(y), H) per row of h [T, H]; labels [T] int; tau a scalar of the accumulation
    dtype. With ``axis_name`` (inside shard_map), ``weight`` is this device's [H, V / n] slice
    of a vocabulary sharded in order over that axis, and ``valid_vocab`` counts the full one."""
    logp, ent, _, _ = _forward(h, weight, labels, tau, valid_vocab, chunk, axis_name)
    return logp, ent


def _fwd(h, weight, labels, tau, valid_vocab, chunk, axis_name):
    logp, ent, lse, mean_z = _forward(h, weight, labels, tau, valid_vocab, chunk, axis_name)
    return (logp, ent), (h, weight, labels, tau, lse, mean_z)


def _bwd(valid_vocab, chunk, axis_name, res, cotangents):
    h, weight, labels, tau, lse, mean_z = res
    acc = accumulation_dtype(h, weight)
    g_logp, g_ent = (g.astype(acc) for g in cotangents)
    v, offset = weight.shape[1], _offset(weight, axis_name)

    def step(carry, i):
        dh, dw = carry
        z, cols, w_chunk, start = _chunk_logits(h, weight, i, chunk, tau, valid_vocab, offset)
        p = jnp.exp(z - lse[:, None])
        dev = jnp.where(p > 0, z - mean_z[:, None], 0.0)
        # An invalid label column is -inf in the forward: it gets no gradient.
        hit = ((cols[None, :] == labels[:, None]) & (p > 0)).astype(acc)
        dz = g_logp[:, None] * (hit - p) - g_ent[:, None] * p * dev
        dz_in = dz.astype(h.dtype)
        dh = dh + jnp.dot(dz_in, w_chunk.T, preferred_element_type=acc)
        # Accumulate in place: the masked overlap of the last chunk adds zeros.
        dw_chunk = jax.lax.dynamic_slice_in_dim(dw, start, chunk, 1) + jnp.dot(
            h.T, dz_in, preferred_element_type=acc
        )
        dw = jax.lax.dynamic_update_slice_in_dim(dw, dw_chunk, start, 1)
        # d/dtau of z = hW / tau is -z / tau: sum_v dz_v z_v over finite z.
        return (dh, dw), -jnp.sum(jnp.where(p > 0, dz * z, 0.0)) / tau

    init = _varying((jnp.zeros(h.shape, acc), jnp.zeros(weight.shape, acc)), axis_name)
    (dh, dw), dtau = jax.lax.scan(step, init, jnp.arange(-(-v // chunk)))
    dtau = jnp.sum(dtau)
    if axis_name is not None:  # h and tau are replicated over the vocabulary shards
        dh, dtau = jax.lax.psum((dh, dtau), axis_name)
    # labels are integers: their cotangent is float0.
    dlabels = jnp.zeros(labels.shape, jax.dtypes.float0)
    return (
        (dh / tau).astype(h.dtype),
        (dw / tau).astype(weight.dtype),
        dlabels,
        dtau.astype(tau.dtype),
    )


log_probs_and_entropy.defvjp(_fwd, _bwd)
