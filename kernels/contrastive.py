"""InfoNCE straight from embeddings, without the [N, M] score matrix."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from entreg import _checks
from entreg._typing import ArrayLike, Bool, Float, Integer, Scalar
from entreg.mi_bounds import infonce_bound

from . import _infonce_xla

IMPLEMENTATIONS = ("xla", "reference")
_DIRECTIONS = ("rows", "columns", "both")


def _embeddings(x, name: str) -> jax.Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"`{name}` must be floating point, got dtype {x.dtype}.")
    if x.ndim != 2:
        raise ValueError(f"`{name}` must be embeddings [N, e], got shape {x.shape}.")
    return x


def _gather(x, axis_name):
    """All rows of a row-sharded array, in device order (identity without an axis)."""
    return x if axis_name is None else jax.lax.all_gather(x, axis_name, tiled=True)


def _offset(n_local: int, axis_name):
    return 0 if axis_name is None else jax.lax.axis_index(axis_name) * n_local


def _one_direction(anchors, cands, tau, labels, exclude, va, vc, block, axis_name, impl):
    """Mean over anchors with a positive of their InfoNCE term (all devices)."""
    if impl == "reference":
        cols = jnp.arange(cands.shape[0])
        acc = _infonce_xla.accumulation_dtype(anchors, cands)
        s = jnp.dot(anchors, cands.T, preferred_element_type=acc) / tau
        where = va[:, None] & vc[None, :] & (cols[None, :] != exclude[:, None])
        return infonce_bound(
            s, positives=cols[None, :] == labels[:, None], where=where, axis_name=axis_name
        )
    n = anchors.shape[0]
    pad = -(-n // block) * block - n
    total, count = _infonce_xla.rows_infonce(
        jnp.pad(anchors, ((0, pad), (0, 0))),
        cands,
        tau,
        jnp.pad(labels, (0, pad), constant_values=-1),
        jnp.pad(exclude, (0, pad), constant_values=-1),
        jnp.pad(va, (0, pad)),
        vc,
        block,
        axis_name,
    )
    if axis_name is not None:
        total, count = jax.lax.psum((total, count), axis_name)
    return jnp.where(count > 0, total / jnp.maximum(count, 1.0), 0.0)


def infonce_from_embeddings(
    x: Float[ArrayLike, "n e"],
    y: Float[ArrayLike, "m e"],
    *,
    temperature: float | Float[ArrayLike, ""] = 1.0,
    direction: str = "rows",
    labels: Integer[ArrayLike, " n"] | None = None,
    exclude_diagonal: bool = False,
    where_x: Bool[ArrayLike, " n"] | None = None,
    where_y: Bool[ArrayLike, " m"] | None = None,
    block_size: int = 512,
    axis_name: str | None = None,
    implementation: str | None = None,
) -> Scalar:
    r"""InfoNCE bound (nats) of the dot-product critic S = x y^T / tau, never forming S.

        rows:  mean_i [ S_{i, l_i} - log (1/K_i) sum_j e^{S_ij} ],  l_i = labels[i] (default i)

    ``"columns"`` normalises over x for each y, ``"both"`` averages the two (CLIP). This is
    `entreg.infonce_bound` of the dense scores (``implementation="reference"`` computes exactly
    that), blockwise: anchors are swept ``block_size`` rows at a time against all candidates
    with a row log-sum-exp, and a custom VJP recomputes each [block, M] strip, so forward and
    backward hold O(block M) scores instead of the [N, M] matrix (and its softmax). For cosine
    similarity normalise the rows first (`entreg.losses.infonce_bonus` does).

    Args:
      x: [N, e] embeddings g(x_i) (any float dtype; products accumulate in float32).
      y: [M, e] embeddings h(y_j).
      temperature: tau > 0, a number or a traced scalar (a learned temperature gets its
        gradient).
      direction: "rows", "columns" or "both".
      labels: int [N], the column of each row's positive (global index; -1: no positive, the
        row is not averaged). Default: the diagonal, l_i = i (needs M >= N).
      exclude_diagonal: drop the pairs j = i from every row and column (SimCLR's NT-Xent, where
        x and y are the same 2N views and an anchor is not its own candidate).
      where_x, where_y: boolean [N] / [M], False at padding rows (never anchors nor candidates;
        garbage there does not leak into values or gradients).
      block_size: anchor rows per block (static).
      axis_name: inside ``jax.shard_map`` with x, y (and labels, masks) sharded by rows over this
        axis: the candidates are all-gathered (negatives from every device), labels are global
        column indices, and every device returns the global value.
      implementation: "xla" (blockwise, default) or "reference" (dense scores and
        `entreg.infonce_bound`).

    Returns:
      A scalar in float32 (float64 for float64 inputs); 0 without a valid positive.
    """
    direction = _checks.choice(direction, "direction", _DIRECTIONS)
    impl = _checks.choice(
        "xla" if implementation is None else implementation, "implementation", IMPLEMENTATIONS
    )
    block = _checks.positive_int(block_size, "block_size")
    _checks.temperature(temperature)
    return _infonce(
        x,
        y,
        temperature,
        labels,
        where_x,
        where_y,
        direction,
        bool(exclude_diagonal),
        block,
        axis_name,
        impl,
    )


@functools.partial(jax.jit, static_argnums=(6, 7, 8, 9, 10))
def _infonce(
    x, y, temperature, labels, where_x, where_y, direction, exclude, block, axis_name, impl
):
    """The whole computation, validation included (an eager call compiles it once)."""
    xa, ya = _embeddings(x, "x"), _embeddings(y, "y")
    if xa.shape[1] != ya.shape[1]:
        raise ValueError(f"`x` and `y` must have the same width, got {xa.shape} and {ya.shape}.")
    tau = jnp.asarray(temperature, _infonce_xla.accumulation_dtype(xa, ya))
    if tau.shape != ():
        raise ValueError(f"`temperature` must be a scalar, got shape {tau.shape}.")
    devices = 1 if axis_name is None else _checks.axis_size(axis_name)
    n, m = xa.shape[0], ya.shape[0]
    if labels is None:
        if exclude:
            raise ValueError(
                "`exclude_diagonal` would exclude the default diagonal positives: pass `labels`."
            )
        if m < n:
            raise ValueError(
                f"`y` needs at least as many rows as `x` when `labels` is None (the diagonal "
                f"holds the positives), got {xa.shape} and {ya.shape}."
            )
        labels = _offset(n, axis_name) + jnp.arange(n)
    else:
        labels = jnp.asarray(labels)
        if not jnp.issubdtype(labels.dtype, jnp.integer) or labels.shape != (n,):
            raise ValueError(f"`labels` must be int [{n}], got {labels.dtype} {labels.shape}.")
    vx, vy = (
        _checks.sample_flags(where_x, n, "where_x"),
        _checks.sample_flags(where_y, m, "where_y"),
    )
    # Garbage in padding rows never reaches a product (nor its gradient).
    xa = jnp.where(vx[:, None], xa, jnp.zeros((), xa.dtype))
    ya = jnp.where(vy[:, None], ya, jnp.zeros((), ya.dtype))
    rows_x = _offset(n, axis_name) + jnp.arange(n)
    rows_y = _offset(m, axis_name) + jnp.arange(m)
    values = []
    if direction in ("rows", "both"):
        values.append(
            _one_direction(
                xa,
                _gather(ya, axis_name),
                tau,
                labels,
                rows_x if exclude else jnp.full((n,), -1),
                vx,
                _gather(vy, axis_name),
                min(block, n),
                axis_name,
                impl,
            )
        )
    if direction in ("columns", "both"):
        # The positive of column j is the row i with labels[i] = j.
        all_labels = _gather(labels, axis_name)
        target = jnp.where(all_labels >= 0, all_labels, m * devices)
        inverse = jnp.full((m * devices,), -1).at[target].set(jnp.arange(n * devices), mode="drop")
        col_labels = jax.lax.dynamic_slice_in_dim(inverse, _offset(m, axis_name), m)
        values.append(
            _one_direction(
                ya,
                _gather(xa, axis_name),
                tau,
                col_labels,
                rows_y if exclude else jnp.full((m,), -1),
                vy,
                _gather(vx, axis_name),
                min(block, m),
                axis_name,
                impl,
            )
        )
    return sum(values) / len(values)


def reference_infonce_from_embeddings(
    x: Float[ArrayLike, "n e"], y: Float[ArrayLike, "m e"], **kwargs
) -> Scalar:
    """`infonce_from_embeddings` through the dense [N, M] scores and `entreg.infonce_bound`."""
    return infonce_from_embeddings(x, y, **{**kwargs, "implementation": "reference"})
