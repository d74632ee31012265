"""Machinery shared by the decoding functions (`entreg.decoding`).

Every public decoding function validates its arguments in Python (static information, plus the
values of concrete parameter arrays) and then calls one jitted core here, so that an eager call
costs one dispatch (and one compilation per shape), and the same core runs inside the caller's
jit or scan.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from entreg import _checks, _masked

LN2 = math.log(2.0)


class Checked(NamedTuple):
    """Validated logits, before any arithmetic (that happens in the jitted cores)."""

    logits: jax.Array  # float32 or wider, original layout
    where: jax.Array | None  # broadcast to the logits' shape
    axis: int  # normalized vocabulary axis
    batch: tuple[int, ...]  # the logits' shape without the vocabulary axis


def check_logits(logits, where, axis, name: str = "logits") -> Checked:
    logits, where, axis = _masked.prepare(logits, where, axis, name)
    if logits.shape[axis] == 0:
        raise ValueError(f"`{name}` has an empty vocabulary axis {axis}: shape {logits.shape}.")
    return Checked(logits, where, axis, logits.shape[:axis] + logits.shape[axis + 1 :])


class Logits(NamedTuple):
    z: jax.Array  # [..., V] sanitized logits, vocabulary last, -inf where excluded
    d: _masked.Dist  # the model distribution softmax(z)


def sanitize(logits: jax.Array, where: jax.Array | None, axis: int) -> Logits:
    z = jnp.moveaxis(logits, axis, -1)
    # NaN is garbage: excluded. +inf is the limit of a huge logit: the largest finite one.
    z = jnp.where(jnp.isnan(z), -jnp.inf, jnp.minimum(z, jnp.finfo(z.dtype).max))
    if where is not None:
        z = jnp.where(jnp.moveaxis(where, axis, -1), z, -jnp.inf)
    return Logits(z, _masked.log_softmax(z, None, -1))


def static_int(x, name: str, minimum: int) -> int:
    if isinstance(x, bool) or not isinstance(x, numbers.Integral):
        raise TypeError(f"`{name}` must be an int, got {x!r}.")
    if x < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {x}.")
    return int(x)


def batch_shape(shape, name: str = "batch_shape") -> tuple[int, ...]:
    shape = (shape,) if isinstance(shape, numbers.Integral) else shape
    if not isinstance(shape, tuple):
        raise TypeError(f"`{name}` must be an int or a tuple of ints, got {shape!r}.")
    return tuple(static_int(n, name, 0) for n in shape)


def broadcastable(x: jax.Array, batch: tuple[int, ...], name: str) -> None:
    try:
        ok = jnp.broadcast_shapes(x.shape, batch) == batch
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"`{name}` with shape {x.shape} does not broadcast to the batch {batch}.")


def row_param(x, name: str, batch: tuple[int, ...], ok: Callable, what: str, *, integer=False):
    """A per-row parameter: a Python number (checked now) or an array broadcasting to ``batch``
    (checked when concrete; NaN where out of range when traced, see `_checks.within`)."""
    kind = "an int or an integer array" if integer else "a number or a float array"
    if isinstance(x, (bool, str)) or x is None:
        raise TypeError(f"`{name}` must be {kind}, got {x!r}.")
    if _checks.is_static_scalar(x):
        if integer and not isinstance(x, numbers.Integral):
            raise TypeError(f"`{name}` must be {kind}, got {x!r}.")
        value = _checks.real_scalar(x, name)
        if not ok(value):
            raise ValueError(f"`{name}` must be {what}, got {x}.")
        return value
    x = jnp.asarray(x)
    wanted = jnp.integer if integer else jnp.floating
    if not jnp.issubdtype(x.dtype, wanted):
        raise TypeError(f"`{name}` must be {kind}, got dtype {x.dtype}.")
    broadcastable(x, batch, name)
    if not isinstance(x, jax.core.Tracer):  # concrete, even inside a caller's jit: check now
        if not np.all(ok(np.asarray(x))):
            raise ValueError(f"`{name}` must be {what}.")
        return x
    return _checks.within(x, ok(x), name, what)


def per_row(x, batch: tuple[int, ...], dtype) -> jax.Array:
    return jnp.broadcast_to(jnp.asarray(x).astype(dtype), batch)


@partial(jax.jit, static_argnums=2)
def most(score: jax.Array, valid: jax.Array, count: int) -> jax.Array:
    """The ``count`` highest-scoring valid tokens along the last axis, ties included."""
    ranked = jnp.where(valid, score, -jnp.inf)
    if count == 1:
        kth = jnp.max(ranked, axis=-1, keepdims=True)
    else:
        # The min of the top values, not their last slice: XLA:CPU rewrites a slice of top_k
        # into a full sort of the vocabulary (~150x slower at V = 151936).
        top = jax.lax.top_k(ranked, min(count, score.shape[-1]))[0]
        kth = jnp.min(top, axis=-1, keepdims=True)
    return valid & (ranked >= kth)


@partial(jax.jit, static_argnames=("rule", "axis", "options"))
def run_processor(rule, logits, where, params, *, axis, options):
    """``rule(x, *params, **options) -> (z, keep)`` as masked logits in the input layout; rows
    whose (traced) parameter is NaN (out of range) come out NaN."""
    x = sanitize(logits, where, axis)
    params = tuple(per_row(p, x.z.shape[:-1], x.z.dtype) for p in params)
    z, keep = rule(x, *params, **dict(options))
    out = jnp.where(keep & x.d.valid, z, -jnp.inf)
    for p in params:
        out = jnp.where(jnp.isnan(p)[..., None], jnp.nan, out)
    return jnp.moveaxis(out, -1, axis)


def zipf_fit(x: Logits, m: int) -> jax.Array:
    """Mirostat's s_hat from the m largest probabilities (see `entreg.decoding.zipf_exponent`).

    With a_i = log p_i, the numerator sum_{i<n} t_i (a_i - a_{i+1}) over the n <= m included
    tokens is summed by parts as sum_i w_i a_i, w_i = [i < n] t_i - [2 <= i <= n] t_{i-1}:
    elementwise over the top_k values, because XLA:CPU rewrites slices of top_k into a full
    sort of the vocabulary.
    """
    ranked = jnp.where(x.d.valid, x.d.log_p, -jnp.inf)
    top = jax.lax.top_k(ranked, min(m, ranked.shape[-1]))[0]
    size = top.shape[-1]
    i = jnp.arange(1, size + 1, dtype=top.dtype)  # ranks 1..m
    t = jnp.log1p(1.0 / i)  # t_i = log((i + 1) / i); t_m is never used
    t_prev = jnp.log1p(1.0 / jnp.maximum(i - 1.0, 1.0))  # t_{i-1}, used for i >= 2 only
    n = jnp.sum(jnp.isfinite(top), axis=-1, keepdims=True).astype(top.dtype)
    w = jnp.where(i < n, t, 0.0) - jnp.where((i >= 2) & (i <= n), t_prev, 0.0)
    num = jnp.sum(jnp.where(i <= n, w * jnp.where(i <= n, top, 0.0), 0.0), axis=-1)
    den = jnp.sum(jnp.where(i < n, t * t, 0.0), axis=-1)
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


# ----------------------------------------------------------------------------------------------
# Keys and draws
# ----------------------------------------------------------------------------------------------


def check_key(key, batch: tuple[int, ...]) -> jax.Array:
    """A typed PRNG key array of shape () (one key) or ``batch`` (one per row)."""
    if not isinstance(key, jax.Array):
        key = jnp.asarray(key)
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.dtype != jnp.uint32 or key.shape[-1:] != (2,):
            raise TypeError(
                f"`key` must be a PRNG key (jax.random.key) or raw key data, got dtype "
                f"{key.dtype} and shape {key.shape}."
            )
        key = jax.random.wrap_key_data(key)
    if key.shape not in ((), batch):
        raise ValueError(
            f"`key` must be one PRNG key or one per row (shape {batch}), got shape {key.shape}."
        )
    return key


def row_keys(key: jax.Array, batch: tuple[int, ...]) -> jax.Array:
    """One key per row: fold_in(key, flat row index) for a single key."""
    if key.shape == batch:
        return key
    folded = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(math.prod(batch)))
    return folded.reshape(batch)


def pad(pad_token) -> int:
    return static_int(pad_token, "pad_token", -(2**31))


def draw(keys: jax.Array, z_trunc: jax.Array, model: _masked.Dist, pad_token: int):
    """Draws from softmax(z_trunc) and measures the draw under q and under the model p.

    Returns the int32 tokens and the fields of `entreg.decoding.StepMetrics` as a tuple.
    """
    q = _masked.log_softmax(z_trunc, None, -1)
    vocab = z_trunc.shape[-1]
    flat = jnp.where(q.valid, z_trunc, -jnp.inf).reshape(-1, vocab)
    drawn = jax.vmap(jax.random.categorical)(keys.reshape(-1), flat).reshape(keys.shape)
    valid = q.nonempty[..., 0]
    index = jnp.where(valid, drawn, 0)[..., None]
    log_q = jnp.take_along_axis(q.log_p, index, axis=-1)[..., 0]
    log_p = jnp.take_along_axis(model.log_p, index, axis=-1)[..., 0]
    in_model = jnp.take_along_axis(model.valid, index, axis=-1)[..., 0]
    # A drawn token the model excludes (processed logits that are no subset) is infinitely
    # surprising; it cannot happen with the processors and samplers of entreg.decoding.
    # where(x < 0, -x, 0) rather than -x: a certain token has surprise +0.0, not -0.0.
    nats = jnp.where(log_p < 0, -log_p, 0.0)
    nats = jnp.where(valid, _masked.plus_inf_where(nats, ~in_model), 0.0)
    truncated_nats = jnp.where(valid & (log_q < 0), -log_q, 0.0)
    fields = (
        nats / LN2,
        nats,
        truncated_nats / LN2,
        truncated_nats,
        _masked.entropy_of(model, -1),
        _masked.entropy_of(q, -1),
        jnp.sum(q.valid, axis=-1, dtype=jnp.int32),
        jnp.sum(jnp.where(q.valid, model.p, 0.0), axis=-1),
        valid,
    )
    return jnp.where(valid, drawn, pad_token).astype(jnp.int32), fields
