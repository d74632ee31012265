r"""Critic score matrices S[i, j] = f(x_i, y_j) from embeddings or a joint critic network.

Both return rows indexed by x and columns by y, the orientation of `entreg.mi_bounds`. Poole et
al.'s notebook builds its separable critic as h(y) g(x)^T (rows = y) and its concatenated critic
with rows = x; mixing the two silently transposes a TUBA baseline.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from entreg import _checks, _masked
from entreg._typing import Array, ArrayLike, Float

_SIMILARITIES = ("dot", "cosine")


def _embeddings(x, name: str) -> jax.Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"`{name}` must be a floating-point array, got dtype {x.dtype}.")
    if x.ndim < 2:
        raise ValueError(f"`{name}` must be [..., N, e] embeddings, got shape {x.shape}.")
    return x


def separable_scores(
    x_embeddings: Float[ArrayLike, "*batch n e"],
    y_embeddings: Float[ArrayLike, "*batch m e"],
    *,
    similarity: str = "dot",
    temperature: float | Float[ArrayLike, ""] = 1.0,
) -> Float[Array, "*batch n m"]:
    r"""Scores of a separable critic f(x, y) = sim(g(x), h(y)) / tau for all pairs.

        S = g(X) h(Y)^T / tau       ("dot")
        S = (g / ||g||)(h / ||h||)^T / tau   ("cosine"; an all-zero row has similarity 0)

    2N network passes and one [N, e] x [e, M] product, accumulated in float32 whatever the
    embedding dtype (bf16 embeddings are not upcast in memory).

    Args:
      x_embeddings: g(x_i) [..., N, e].
      y_embeddings: h(y_j) [..., M, e].
      similarity: "dot" or "cosine".
      temperature: tau > 0 (a number or a traced scalar, e.g. a learned CLIP temperature).

    Returns:
      Scores [..., N, M] in float32 or wider.
    """
    gx = _embeddings(x_embeddings, "x_embeddings")
    hy = _embeddings(y_embeddings, "y_embeddings")
    if gx.shape[-1] != hy.shape[-1]:
        raise ValueError(
            "`x_embeddings` and `y_embeddings` must have the same width, got "
            f"{gx.shape} and {hy.shape}."
        )
    _checks.choice(similarity, "similarity", _SIMILARITIES)
    _checks.temperature(temperature)
    acc = jnp.promote_types(jnp.result_type(gx, hy), jnp.float32)
    if similarity == "cosine":
        gx, hy = _masked.unit_rows(gx.astype(acc)), _masked.unit_rows(hy.astype(acc))
    s = jnp.einsum("...ne,...me->...nm", gx, hy, preferred_element_type=acc)
    return s / jnp.asarray(temperature, acc)


def concat_scores(
    critic: Callable[[Float[Array, "*rows dxy"]], Float[Array, "*rows"]],
    x: Float[ArrayLike, "n dx"],
    y: Float[ArrayLike, "m dy"],
    *,
    block_size: int = 64,
) -> Float[Array, "n m"]:
    r"""Scores of a joint ("concat") critic f(x, y) = critic([x; y]) for all N x M pairs.

    The critic maps concatenated inputs [..., dx + dy] to scalars [...] (any Flax / NNX module
    or function). Rows of x are processed ``block_size`` at a time with ``jax.lax.map``, so the
    largest intermediate is [block_size, M, dx + dy] (and the critic's activations on it), never
    the [N, M, dx + dy] tensor of tiling both inputs: N^2 critic passes in O(block_size M d)
    memory.

    Args:
      critic: ``critic(xy [..., dx + dy]) -> [...]``.
      x: [N, dx] samples of x.
      y: [M, dy] samples of y.
      block_size: rows of x per block (static).

    Returns:
      Scores [N, M], S[i, j] = critic([x_i; y_j]), in the critic's output dtype.
    """
    x, y = _embeddings(x, "x"), _embeddings(y, "y")
    if x.ndim != 2 or y.ndim != 2:
        raise ValueError(f"`x` and `y` must be [N, d] matrices, got {x.shape} and {y.shape}.")
    common = jnp.result_type(x, y)
    x, y = x.astype(common), y.astype(common)
    if not callable(critic):
        raise TypeError(f"`critic` must be callable, got {type(critic).__name__}.")
    block = min(_checks.positive_int(block_size, "block_size"), x.shape[0])
    n, m = x.shape[0], y.shape[0]
    blocks = -(-n // block)
    xp = jnp.pad(x, ((0, blocks * block - n), (0, 0))).reshape(blocks, block, x.shape[1])

    def rows(xb):
        pairs = jnp.concatenate(
            [
                jnp.broadcast_to(xb[:, None, :], (block, m, x.shape[1])),
                jnp.broadcast_to(y[None, :, :], (block, m, y.shape[1])),
            ],
            axis=-1,
        )
        out = jnp.asarray(critic(pairs))
        if out.shape == (block, m, 1):  # a Linear(1) head
            out = out[..., 0]
        if out.shape != (block, m):
            raise ValueError(
                f"`critic` must map [..., dx + dy] inputs to [...] scalars, got shape "
                f"{out.shape} for inputs {pairs.shape}."
            )
        return out

    return jax.lax.map(rows, xp).reshape(blocks * block, m)[:n]
