"""Reduction of per-token loss matrices to a scalar (the verl ``agg_loss`` modes, made explicit)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from entreg import _checks
from entreg._typing import ArrayLike, AxisName, Float, Scalar, Shaped

MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")


def _safe_div(num: jax.Array, den: jax.Array) -> jax.Array:
    """num / den, and 0 (with zero gradient) where den == 0."""
    ok = den != 0
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


def psum(x: jax.Array, axis_name) -> jax.Array:
    """psum over a mapped axis, or `x` itself when `axis_name` is None."""
    return x if axis_name is None else jax.lax.psum(x, axis_name)


def aggregate(
    values: Float[ArrayLike, "*batch t"],
    mask: Shaped[ArrayLike, "*#batch t"],
    mode: str = "token-mean",
    *,
    num_tokens: float | Float[ArrayLike, ""] | None = None,
    num_sequences: float | Float[ArrayLike, ""] | None = None,
    norm_constant: float | Float[ArrayLike, ""] | None = None,
    axis_name: AxisName | None = None,
) -> Scalar:
    r"""Aggregates a per-token matrix l[..., t] with mask m[..., t] into a scalar.

    The last axis holds tokens; every leading axis indexes sequences. With s_b = sum_t m l
    (token sum of sequence b), n_b = sum_t m and S = the sequence normalizer:

    ======================== ============================================================
    mode                     value
    ======================== ============================================================
    token-mean               sum_b s_b / N, N = ``num_tokens`` or sum_b n_b
    seq-mean-token-sum       sum_b s_b / S
    seq-mean-token-mean      sum_b (s_b / n_b) / S   (empty sequences contribute 0)
    seq-mean-token-sum-norm  sum_b (s_b / C) / S, C = ``norm_constant`` or the padded length
                             (Dr. GRPO, Liu et al. 2025: no length normalization, a constant C)
    ======================== ============================================================

    S = ``num_sequences`` or the number of sequences with at least one valid token.
    A zero normalizer gives 0 (an all-padding batch has zero loss and zero gradient); a
    negative one is refused. Masked entries may hold anything (NaN, inf): they are selected
    out before any arithmetic.

    Data parallelism: under jit with sharded arrays the reductions are already global. Inside
    ``shard_map`` / ``pmap`` pass ``axis_name`` to psum the default counts over that axis, or pass
    the global counts explicitly (``num_tokens``, ``num_sequences``); the result is then the local
    contribution, whose psum over devices is the global value. Passing explicit counts also makes
    gradient accumulation over micro-batches exact (verl normalizes per micro-batch by default).

    Note: verl's seq-mean-token-sum-norm returns sum_b s_b / C without the 1/S (a short-lived
    revision divided by the number of sequences and was reverted), so its scale grows with the
    batch size. entreg averages over sequences, as the 1/G of the Dr. GRPO objective does; pass
    ``num_sequences=1`` for verl's value.

    Args:
      values: per-token values [..., T], floating.
      mask: [..., T], boolean or 0/1 numbers (1 = included).
      mode: one of the four modes above.
      num_tokens, num_sequences, norm_constant: optional explicit normalizers (scalars).
      axis_name: optional mapped axis name over which default counts are summed.

    Examples:
      >>> import jax.numpy as jnp
      >>> import entreg
      >>> loss = jnp.array([[1.0, 2.0, 9.0], [3.0, 4.0, 5.0]])
      >>> mask = jnp.array([[True, True, False], [True, True, True]])
      >>> print(entreg.aggregate(loss, mask, "token-mean"))  # (1 + 2 + 3 + 4 + 5) / 5
      3.0
      >>> print(entreg.aggregate(loss, mask, "seq-mean-token-mean"))  # (1.5 + 4) / 2
      2.75
    """
    _checks.choice(mode, "mode", MODES)
    values = _checks.float_array(values, "values")
    if values.ndim == 0:
        raise ValueError("`values` must have a token axis (shape [..., T]).")
    _checks.token_mask(mask, values.shape, "values")
    m = jnp.asarray(mask).astype(values.dtype)
    # Masked entries may hold NaN/inf padding: select rather than multiply.
    token_sums = jnp.sum(jnp.where(m != 0, m * values, 0.0), axis=-1)
    token_counts = jnp.sum(m, axis=-1)
    num_tokens, num_sequences, norm_constant = (
        _normalizer(x, name, values.dtype)
        for x, name in (
            (num_tokens, "num_tokens"),
            (num_sequences, "num_sequences"),
            (norm_constant, "norm_constant"),
        )
    )
    if mode == "token-mean":
        n = psum(jnp.sum(token_counts), axis_name) if num_tokens is None else num_tokens
        return _safe_div(jnp.sum(token_sums), jnp.asarray(n, values.dtype))
    if num_sequences is None:
        num_sequences = psum(jnp.sum((token_counts > 0).astype(values.dtype)), axis_name)
    num_sequences = jnp.asarray(num_sequences, values.dtype)
    if mode == "seq-mean-token-sum":
        per_seq = token_sums
    elif mode == "seq-mean-token-mean":
        per_seq = _safe_div(token_sums, token_counts)
    else:
        c = values.shape[-1] if norm_constant is None else norm_constant
        per_seq = _safe_div(token_sums, jnp.asarray(c, values.dtype))
    return _safe_div(jnp.sum(per_seq), num_sequences)


def _normalizer(x, name: str, dtype):
    """An explicit normalizer: a count or constant >= 0 (0 gives an aggregate of 0). A static
    value is checked here; a traced one is used as given."""
    if x is None:
        return None
    if _checks.is_static_scalar(x):
        return _checks.real_scalar(x, name, minimum=0.0)
    x = jnp.asarray(x)
    if x.shape != () or not jnp.issubdtype(x.dtype, jnp.number):
        raise TypeError(
            f"`{name}` must be a number or a numeric scalar array, got {x.dtype}{x.shape}."
        )
    return x.astype(dtype)
