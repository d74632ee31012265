"""The online (streaming) softmax state shared by the chunked kernels.

A block of logits z is summarized by its centred state

    m = max z,   s = sum e^(z - m),   u = sum e^(z - m) (z - m)

from which lse = m + log s, E[z] = m + u / s and the entropy H = log s - u / s. Two states
merge exactly at m' = max(m1, m2) with c_i = e^(m_i - m'):

    s' = c1 s1 + c2 s2,   u' = c1 (u1 + s1 (m1 - m')) + c2 (u2 + s2 (m2 - m'))

Centring keeps u small when the logits sit far from 0 (an uncentred sum e^(z - m) z loses
digits at +-1e4 logits). A state with no finite logit is (-inf, 0, 0) and has c = 0: it
contributes nothing, never 0 * inf.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def finite_or_zero(m):
    """The max to shift by: 0 while no finite logit has been seen (every term is 0 then)."""
    return jnp.where(m > -jnp.inf, m, 0.0)


def spread(x, shape, axis: int = -1):
    """Broadcast ``x``, reduced along ``axis``, back to ``shape`` (one broadcast_in_dim: Mosaic
    GPU lowers that from a row layout, not an expand_dims to a unit axis)."""
    axis = axis % len(shape)
    return jax.lax.broadcast_in_dim(x, shape, [d for d in range(len(shape)) if d != axis])


def block_state(z, axis: int = -1):
    """(m, s, u) of ``z`` along ``axis`` and the weights e^(z - m) (0 at -inf logits)."""
    m = jnp.max(z, axis=axis)
    shift = spread(finite_or_zero(m), z.shape, axis)
    e = jnp.exp(z - shift)
    u = jnp.sum(jnp.where(e > 0, e * (z - shift), 0.0), axis=axis)
    return (m, jnp.sum(e, axis=axis), u), e


def rescale(state, m_new):
    """Move ``state`` to the max ``m_new``: (c, c s, c (u + s (m - m_new)))."""
    m, s, u = state
    shift = finite_or_zero(m_new)
    c = jnp.exp(m - shift)
    return c, c * s, jnp.where(c > 0, c * (u + s * (m - shift)), 0.0)


def merge(a, b):
    """Merge two states; also returns their factors c_a, c_b for rescaling other sums (e.g.
    attention's running output)."""
    m = jnp.maximum(a[0], b[0])
    ca, sa, ua = rescale(a, m)
    cb, sb, ub = rescale(b, m)
    return (m, sa + sb, ua + ub), ca, cb


def merge_devices(state, axis_name):
    """Merge the states held by the devices of ``axis_name``: pmax, then psum."""
    m = jax.lax.pmax(state[0], axis_name)
    _, s, u = rescale(state, m)
    return (m, *jax.lax.psum((s, u), axis_name))


def summary(state):
    """(lse, E[z], H) of a state; rows with no finite logit give (-inf, nan, nan) here, to be
    masked by the caller, who knows its convention."""
    m, s, u = state
    return m + jnp.log(s), m + u / s, jnp.log(s) - u / s


def varying(tree, axis_name):
    """Mark a scan's initial carry as varying over a mapped axis (shard_map typing)."""
    return tree if axis_name is None else jax.lax.pcast(tree, axis_name, to="varying")
