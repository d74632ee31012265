"""Trace-time argument validation shared by every public function.

Every check runs on static information (shapes, dtypes, Python scalars) so errors surface when a
function is traced, name the offending argument, and never depend on array values.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def float_array(x, name: str) -> jax.Array:
    """Returns `x` as a floating array upcast to at least float32 (accumulation dtype)."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"`{name}` must be a floating-point array, got dtype {x.dtype}.")
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def bool_array(x, name: str) -> jax.Array:
    x = jnp.asarray(x)
    if x.dtype != jnp.bool_:
        raise TypeError(
            f"`{name}` must be a boolean array (True = included), got dtype {x.dtype}; "
            f"pass `{name}.astype(bool)` if it is a 0/1 mask."
        )
    return x


def broadcast(x: jax.Array, shape: tuple[int, ...], name: str, target: str) -> jax.Array:
    """Broadcasts `x` to `shape` (the shape of `target`), naming both on failure."""
    try:
        return jnp.broadcast_to(x, shape)
    except ValueError:
        raise ValueError(
            f"`{name}` with shape {x.shape} does not broadcast to `{target}` {shape}."
        ) from None


def broadcast_bool(x, shape: tuple[int, ...], name: str, target: str) -> jax.Array:
    """Validates a boolean mask and broadcasts it to `shape` (the shape of `target`)."""
    return broadcast(bool_array(x, name), shape, name, target)


def normalize_axis(axis, ndim: int, name: str = "logits") -> int:
    if not isinstance(axis, numbers.Integral) or isinstance(axis, bool):
        raise TypeError(f"`axis` must be an int, got {axis!r}.")
    if ndim == 0:
        raise ValueError(f"`{name}` must have at least one dimension (the category axis).")
    if not -ndim <= int(axis) < ndim:
        raise ValueError(f"`axis`={axis} is out of bounds for `{name}` with {ndim} dimensions.")
    return int(axis) % ndim


def same_shape(a: jax.Array, b: jax.Array, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"`{name_a}` and `{name_b}` must have the same shape, got {a.shape} and {b.shape}."
        )


def category_mask(where, shape: tuple[int, ...], axis: int) -> jax.Array | None:
    """Broadcasts `where` to `shape`.

    `where` either has the full shape (per-category mask) or the batch shape, i.e. `shape` without
    `axis` (whole-row mask); both may use size-1 dimensions that broadcast.
    """
    if where is None:
        return None
    where = bool_array(where, "where")
    if where.ndim == len(shape) - 1:
        where = jnp.expand_dims(where, axis)
    if where.ndim != len(shape):
        raise ValueError(
            f"`where` must have the shape of the logits {shape} or their batch shape "
            f"{shape[:axis] + shape[axis + 1 :]}, got {where.shape}."
        )
    return broadcast_bool(where, shape, "where", "logits")


def real_scalar(x, name: str, *, minimum: float | None = None, allow_inf: bool = False) -> float:
    """Validates a static (Python) scalar parameter."""
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise TypeError(f"`{name}` must be a real Python number, got {x!r}.")
    x = float(x)
    if x != x or (x in (float("inf"), float("-inf")) and not allow_inf):
        raise ValueError(f"`{name}` must be finite, got {x}.")
    if minimum is not None and x < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {x}.")
    return x


def temperature(x, name: str = "temperature"):
    """A softmax temperature: a static number must be finite and > 0; arrays pass (traced)."""
    if isinstance(x, (bool, str)) or x is None:
        raise TypeError(f"`{name}` must be a positive number or a float array, got {x!r}.")
    if is_static_scalar(x):
        real_scalar(x, name)
        if not x > 0:
            raise ValueError(f"`{name}` must be > 0, got {x}.")
    return x


def within(x: jax.Array, ok: jax.Array, name: str, what: str) -> jax.Array:
    """`x` as a float array with NaN where `ok` is False; raises instead when `x` is concrete.

    The domain is value-dependent, so a traced call cannot raise: it returns NaN where the input
    is outside the domain rather than a plausible wrong number.
    """
    if not isinstance(ok, jax.core.Tracer) and not bool(np.all(np.asarray(ok))):
        raise ValueError(f"`{name}` must be {what}.")
    return jnp.where(ok, x, jnp.nan)


def nonnegative(x: jax.Array, name: str, what: str) -> jax.Array:
    """`x` with negative entries turned into NaN; raises instead when `x` is concrete."""
    return within(x, ~(x < 0), name, f">= 0 ({what})")


def index_range(x: jax.Array, name: str, size: int) -> jax.Array:
    """Integer ids in [0, size): checked when `x` is concrete (a traced call cannot raise)."""
    if not isinstance(x, jax.core.Tracer) and x.size:
        v = np.asarray(x)  # numpy: no op is staged inside a trace
        lo, hi = int(v.min()), int(v.max())
        if lo < 0 or hi >= size:
            raise ValueError(f"`{name}` must hold ids in [0, {size}), got values in [{lo}, {hi}].")
    return x


def positive_int(x, name: str) -> int:
    """Validates a static positive integer parameter (a size, a count)."""
    if isinstance(x, bool) or not isinstance(x, numbers.Integral) or x < 1:
        raise ValueError(f"`{name}` must be a positive int, got {x!r}.")
    return int(x)


def choice(x, name: str, options) -> str:
    if x not in options:
        raise ValueError(f"`{name}` must be one of {sorted(options)}, got {x!r}.")
    return x


def is_static_scalar(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def term_name(name) -> str:
    """A loss-term name: it prefixes metrics as ``<name>/...``."""
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"`name` must be a non-empty string without '/', got {name!r}.")
    return name


def signals(signals, needed, term: str) -> None:
    """A loss term's signals must include every name in ``needed`` (None entries are skipped);
    raises a KeyError naming the missing ones."""
    missing = [n for n in needed if n is not None and n not in signals]
    if missing:
        names = ", ".join(f"`{n}`" for n in missing)
        raise KeyError(f"Term {term!r} needs the signals {names}.")


def token_mask(mask, shape: tuple[int, ...], target: str) -> jax.Array:
    """A per-token mask (boolean or 0/1 numbers, as verl's response_mask) as booleans."""
    mask = jnp.asarray(mask)
    if not (mask.dtype == jnp.bool_ or jnp.issubdtype(mask.dtype, jnp.number)):
        raise TypeError(f"`mask` must be boolean or numeric, got dtype {mask.dtype}.")
    if mask.shape != shape:
        raise ValueError(f"`mask` must have the shape of `{target}` {shape}, got {mask.shape}.")
    return mask != 0


def in_base(value: jax.Array, base) -> jax.Array:
    """A quantity in nats converted to logarithm base ``base`` (None: nats, 2: bits)."""
    if base is None:
        return value
    base = real_scalar(base, "base", minimum=0.0)
    if base <= 0 or base == 1:
        raise ValueError(f"`base` must be positive and not 1, got {base}.")
    return value / math.log(base)


def axis_size(axis_name, name: str = "axis_name") -> int:
    """The size of the mapped axis ``axis_name``, which must be in scope (inside shard_map)."""
    try:
        return jax.lax.axis_size(axis_name)
    except NameError as e:
        raise ValueError(
            f"`{name}` {axis_name!r} is not a mesh axis in scope: call this inside "
            "jax.shard_map over that axis."
        ) from e


def variable_groups(
    groups, size: int | None = None, name: str = "groups"
) -> tuple[tuple[int, ...], ...]:
    """Validates ``groups``: an int n (n scalar variables 0..n-1) or a sequence of disjoint,
    non-empty sequences of column indices (one per variable), each index < ``size`` if given."""
    if isinstance(groups, numbers.Integral) and not isinstance(groups, bool):
        groups = [[i] for i in range(int(groups))]
    if not isinstance(groups, Sequence) or isinstance(groups, str):
        raise TypeError(
            f"`{name}` must be an int or a sequence of index sequences, got {groups!r}."
        )
    out = []
    for g in groups:
        if isinstance(g, numbers.Integral) and not isinstance(g, bool):
            g = [g]
        if not isinstance(g, Sequence) or not g:
            raise ValueError(f"`{name}` entries must be non-empty index sequences, got {g!r}.")
        if not all(
            isinstance(i, numbers.Integral) and not isinstance(i, bool) and int(i) >= 0 for i in g
        ):
            raise ValueError(f"`{name}` entries must hold non-negative ints, got {g!r}.")
        out.append(tuple(int(i) for i in g))
    flat = [i for g in out for i in g]
    if size is not None and max(flat, default=0) >= size:
        raise ValueError(f"`{name}` indexes column {max(flat)} of only {size}.")
    if len(set(flat)) != len(flat):
        raise ValueError(f"`{name}` must be disjoint, got {out}.")
    if len(out) < 2:
        raise ValueError(f"`{name}` must define at least 2 variables, got {len(out)}.")
    return tuple(out)


def sample_flags(where, n: int, name: str = "where") -> jax.Array:
    """A boolean per-sample mask [n] (all True for None), e.g. padding rows of a batch."""
    if where is None:
        return jnp.ones((n,), bool)
    where = bool_array(where, name)
    if where.shape != (n,):
        raise ValueError(f"`{name}` must be one flag per sample ({n},), got {where.shape}.")
    return where
