"""Vocabulary-chunked log-prob and entropy from hidden states: pure JAX, every backend.

Row logits z = h W / tau are produced one vocabulary chunk at a time and folded into the
centred online state (m, s, u) of `_online` plus the label logit z_y:

    lse = m + log s,  log pi(y) = z_y - lse,  H = log s - u / s,  E[z] = m + u / s

With the vocabulary sharded over a mesh axis, each device sweeps its columns and the states
merge by a pmax of m and a psum of the rescaled s and u (O(T) communication).

The backward recomputes each chunk's logits from the residuals (h, W, labels, lse, E[z]) and
accepts cotangents for both outputs:

    dz_v = g_logp (1[v = y] - p_v) - g_H p_v (z_v - E[z]),   dh = dz W^T / tau,  dW = h^T dz / tau

so neither direction holds more than a chunk's [T, chunk] logits and the elementwise blocks
derived from them (XLA:CPU materializes what its reductions read: two or three blocks).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from . import _online


def accumulation_dtype(h, weight):
    """float32, or float64 for float64 inputs: never the bf16 / f16 input dtype."""
    return jnp.promote_types(jnp.result_type(h, weight), jnp.float32)


def _chunk_logits(h, weight, i, chunk: int, tau, valid_vocab: int, axis_name):
    """Logits [T, chunk] of local chunk ``i`` in the accumulation dtype, its global column ids,
    its weight slice and first local column. W is sliced in place, never padded or copied: the
    last chunk is moved back to end at column V_local, and its columns already swept by the
    previous chunk are masked. Masked columns and those past ``valid_vocab`` are -inf; when
    there are none (see `_needs_mask`) no select is spent on them."""
    nominal = i * chunk
    start = jnp.minimum(nominal, weight.shape[1] - chunk)
    w_chunk = jax.lax.dynamic_slice_in_dim(weight, start, chunk, 1)
    z = jnp.dot(h, w_chunk, preferred_element_type=accumulation_dtype(h, weight)) / tau
    offset = _offset(weight, axis_name)
    if not _needs_mask(weight, valid_vocab, chunk, axis_name):
        return z, offset + start + jnp.arange(chunk), w_chunk, start
    return (*mask_chunk(z, start, nominal, offset, valid_vocab), w_chunk, start)


def _needs_mask(weight, valid_vocab: int, chunk: int, axis_name) -> bool:
    """Static: whether some chunk has a column to mask (the last chunk overlaps the previous
    one, or columns lie past ``valid_vocab``). XLA:CPU materializes a masked block before each
    reduction, so an all-valid sweep skips the select."""
    devices = 1 if axis_name is None else jax.lax.axis_size(axis_name)
    return weight.shape[1] % chunk != 0 or valid_vocab < weight.shape[1] * devices


def mask_chunk(z, start, nominal, offset, valid_vocab: int):
    """Chunk logits z [T, C] whose first local column is ``start``: columns before ``nominal``
    (swept already) or past ``valid_vocab`` (global id) go to -inf. Returns (z, global ids)."""
    local = start + jnp.arange(z.shape[-1])
    cols = offset + local
    return jnp.where((local >= nominal) & (cols < valid_vocab), z, -jnp.inf), cols


def fold_chunk(state, zy, z, cols, labels):
    """Fold one chunk's logits z [T, C] (global column ids ``cols`` [C] or [T, C]) into the
    online state and the label logit z_y."""
    state, _, _ = _online.merge(state, _online.block_state(z)[0])
    hit = cols == _online.spread(labels, z.shape)
    return state, jnp.maximum(zy, jnp.max(jnp.where(hit, z, -jnp.inf), axis=-1))


def logit_grads(z, cols, labels, lse, mean_z, g_logp, g_ent):
    """dz [T, C] of one chunk, dz_v = g_l (1[v = y] - p_v) - g_H p_v (z_v - E[z]), and each
    row's sum over finite z of dz z (for d/dtau, since dz/dtau = -z / tau). Row quantities are
    [T]; ``cols`` is [C] or [T, C]."""
    lse, mean_z, g_logp, g_ent, labels = (
        _online.spread(x, z.shape) for x in (lse, mean_z, g_logp, g_ent, labels)
    )
    p = jnp.exp(z - lse)
    dev = jnp.where(p > 0, z - mean_z, 0.0)
    # An invalid label column is -inf in the forward: it gets no gradient.
    hit = jnp.where((cols == labels) & (p > 0), 1.0, 0.0)
    dz = g_logp * (hit - p) - g_ent * p * dev
    return dz, jnp.sum(jnp.where(p > 0, dz * z, 0.0), axis=-1)


def _offset(weight, axis_name):
    """Global index of this device's first vocabulary column."""
    return 0 if axis_name is None else jax.lax.axis_index(axis_name) * weight.shape[1]


def _partial_stats(h, weight, labels, tau, valid_vocab, chunk, axis_name):
    """(m, s, u, z_y) of this device's columns of ``weight``, chunk by chunk."""
    t, acc = h.shape[0], accumulation_dtype(h, weight)
    init = _online.varying(init_state(t, acc), axis_name)

    def step(carry, i):
        z, cols, _, _ = _chunk_logits(h, weight, i, chunk, tau, valid_vocab, axis_name)
        return fold_chunk(*carry, z, cols, labels), None  # type: ignore[call-arg]  # mypy miscounts *carry

    return jax.lax.scan(step, init, jnp.arange(-(-weight.shape[1] // chunk)))[0]


def init_state(t: int, acc):
    """The empty state (m, s, u) and label logit z_y, which stays -inf unless the label is a
    valid column of the swept ones."""
    empty = jnp.full((t,), -jnp.inf, acc)
    return (empty, jnp.zeros((t,), acc), jnp.zeros((t,), acc)), empty


def _forward(h, weight, labels, tau, valid_vocab, chunk, axis_name):
    state, zy = _partial_stats(h, weight, labels, tau, valid_vocab, chunk, axis_name)
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
    v = weight.shape[1]

    def step(carry, i):
        dh, dw = carry
        z, cols, w_chunk, start = _chunk_logits(h, weight, i, chunk, tau, valid_vocab, axis_name)
        dz, dz_z = logit_grads(z, cols, labels, lse, mean_z, g_logp, g_ent)
        dz_in = dz.astype(h.dtype)
        dh = dh + jnp.dot(dz_in, w_chunk.T, preferred_element_type=acc)
        # Accumulate in place: the masked overlap of the last chunk adds zeros.
        dw_chunk = jax.lax.dynamic_slice_in_dim(dw, start, chunk, 1) + jnp.dot(
            h.T, dz_in, preferred_element_type=acc
        )
        dw = jax.lax.dynamic_update_slice_in_dim(dw, dw_chunk, start, 1)
        return (dh, dw), -jnp.sum(dz_z) / tau

    init = _online.varying((jnp.zeros(h.shape, acc), jnp.zeros(weight.shape, acc)), axis_name)
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
