r"""Plug-in entropy and mutual information of discrete samples, with Miller-Madow correction.

From N samples with c_v occurrences of each observed value v (m of them, the occupied bins):

    H_plugin = log N - (1/N) sum_v c_v log c_v,   H_MM = H_plugin + (m - 1) / (2N)
    I_plugin = H(X) + H(Y) - H(X, Y),             I_MM = I_plugin + (m_x + m_y - m_xy - 1) / (2N)

The plug-in MI of independent variables is biased up by about (m_x - 1)(m_y - 1) / (2N), which
Miller-Madow removes (and can then go negative). scikit-learn's ``mutual_info_score`` is the
plug-in MI (clipped at 0, no correction); NPEET's ``midd`` / ``entropyd`` the same in bits.

Values are found by sorting (no value range, no Python loop; jit-friendly with static shapes),
so labels can be any integers. The gradient is zero.

References:
  Miller, "Note on the bias of information estimates", 1955. Paninski, "Estimation of entropy
  and mutual information", Neural Computation 15, 2003.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from entreg import _checks
from entreg._typing import ArrayLike, Bool, Integer, Scalar


def _check_correction(correction):
    if correction not in (None, "miller_madow"):
        raise ValueError(f"`correction` must be None or 'miller_madow', got {correction!r}.")
    return correction


def _labels(x, name: str) -> jax.Array:
    x = jnp.asarray(x)
    if not (jnp.issubdtype(x.dtype, jnp.integer) or x.dtype == jnp.bool_):
        raise TypeError(f"`{name}` must hold integer labels, got dtype {x.dtype}.")
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"`{name}` must be labels [N] or [N, m] with N >= 1, got {x.shape}.")
    return x.astype(jnp.int32) if x.dtype == jnp.bool_ else x


def _value_counts(labels: jax.Array, valid: jax.Array) -> jax.Array:
    """Occurrences [N] of each distinct valid row of ``labels`` [N, m] (0 for unused slots)."""
    n = labels.shape[0]
    # Sort by validity first, then by the columns; a new value starts where any key changes.
    keys = [labels[:, j] for j in reversed(range(labels.shape[1]))] + [~valid]
    order = jnp.lexsort(keys)
    rows = jnp.concatenate([labels, (~valid)[:, None].astype(labels.dtype)], axis=1)[order]
    start = jnp.concatenate([jnp.ones((1,), bool), jnp.any(rows[1:] != rows[:-1], axis=1)])
    group = jnp.cumsum(start) - 1
    return jax.ops.segment_sum(valid[order].astype(jnp.int32), group, num_segments=n)


def _entropy_terms(labels: jax.Array, valid: jax.Array):
    """(plug-in entropy, occupied bins, N) in the default float dtype."""
    dtype = jax.dtypes.canonicalize_dtype(jnp.float64)
    counts = _value_counts(labels, valid).astype(dtype)
    n = jnp.sum(valid).astype(dtype)
    c_log_c = jnp.where(counts > 0, counts * jnp.log(jnp.where(counts > 0, counts, 1.0)), 0.0)
    h = jnp.where(n > 0, jnp.log(jnp.maximum(n, 1.0)) - jnp.sum(c_log_c) / jnp.maximum(n, 1.0), 0.0)
    return h, jnp.sum(counts > 0).astype(dtype), n


def _correction(kind, bins, n):
    return jnp.where(n > 0, bins / (2.0 * jnp.maximum(n, 1.0)), 0.0) if kind else 0.0


def discrete_entropy(
    labels: Integer[ArrayLike, " n *m"] | Bool[ArrayLike, " n *m"],
    *,
    correction: str | None = None,
    where: Bool[ArrayLike, " n"] | None = None,
    base: float | None = None,
) -> Scalar:
    r"""Plug-in (or Miller-Madow) joint entropy of discrete samples.

    Args:
      labels: integer labels [N] (one variable) or [N, m] (the joint of m variables: each
        distinct row is one value).
      correction: None (plug-in) or "miller_madow": + (m - 1) / (2N), m = occupied bins.
      where: boolean [N], False at padding (those samples are not counted).
      base: logarithm base (None: nats).

    Returns:
      A scalar (float64 under x64, else float32); 0 without valid samples.
    """
    x = _labels(labels, "labels")
    _check_correction(correction)
    valid = _checks.sample_flags(where, x.shape[0])
    h, bins, n = _entropy_terms(x, valid)
    return _checks.in_base(h + _correction(correction, bins - 1.0, n), base)


def discrete_mutual_information(
    x: Integer[ArrayLike, " n *mx"] | Bool[ArrayLike, " n *mx"],
    y: Integer[ArrayLike, " n *my"] | Bool[ArrayLike, " n *my"],
    *,
    correction: str | None = None,
    where: Bool[ArrayLike, " n"] | None = None,
    base: float | None = None,
) -> Scalar:
    r"""Plug-in (or Miller-Madow) mutual information I(X; Y) = H(X) + H(Y) - H(X, Y).

    Args:
      x: integer labels [N] or [N, mx] (a joint variable).
      y: integer labels [N] or [N, my].
      correction: None or "miller_madow": + (m_x + m_y - m_xy - 1) / (2N).
      where: boolean [N], False at padding.
      base: logarithm base.

    Returns:
      A scalar; the plug-in value is >= 0 up to round-off, the corrected one may be negative.
    """
    x, y = _labels(x, "x"), _labels(y, "y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"`x` and `y` must have the same number of samples, got {x.shape} and {y.shape}."
        )
    _check_correction(correction)
    valid = _checks.sample_flags(where, x.shape[0])
    common = jnp.promote_types(x.dtype, y.dtype)
    hx, mx, n = _entropy_terms(x, valid)
    hy, my, _ = _entropy_terms(y, valid)
    hxy, mxy, _ = _entropy_terms(jnp.concatenate([x.astype(common), y.astype(common)], 1), valid)
    value = hx + hy - hxy + _correction(correction, mx + my - mxy - 1.0, n)
    return _checks.in_base(value, base)
