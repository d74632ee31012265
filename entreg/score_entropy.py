"""Score entropy: the Bregman divergence between probability ratios used by SEDD.

Lou, Meng & Ermon, "Discrete Diffusion Modeling by Estimating the Ratios of the Data
Distribution" (ICML 2024).
"""

from __future__ import annotations

import jax.numpy as jnp

from entreg import _checks, _masked
from entreg._typing import Array, ArrayLike, Bool, Float


def _k(ratio):
    """K(r) = r (log r - 1) with K(0) = 0 and a finite gradient at 0."""
    safe = jnp.where(ratio > 0, ratio, 1.0)
    return jnp.where(ratio > 0, ratio * (jnp.log(safe) - 1.0), 0.0)


def score_entropy(
    log_score: Float[ArrayLike, "*batch v"],
    ratio: Float[ArrayLike, "*batch v"],
    *,
    axis: int = -1,
    where: Bool[ArrayLike, "*#batch #v"] | None = None,
) -> Float[Array, "*batch"]:
    r"""Score entropy between predicted ratios s = exp(``log_score``) and target ratios r.

        SE(s, r) = sum_y [ s_y - r_y log s_y + K(r_y) ],   K(r) = r (log r - 1),  K(0) = 0

    (Lou et al. 2024, Eq. 5 with unit weights). It is a generalized KL divergence between the
    non-negative vectors r and s: >= 0, zero iff s = r on every counted entry, convex in
    ``log_score``. ``dSE / dlog s_y = s_y - r_y``. K(r) does not depend on the prediction but stays
    in the value: it is what makes the denoising form a likelihood bound. Zero ratios are safe
    (their term is s_y, and the gradient with respect to ``ratio`` there is finite, -log s_y).
    A zero predicted score (``log_score = -inf``) gives 0 where r = 0 and +inf where r > 0, with
    the finite gradient of the other terms.

    Args:
      log_score: predicted log-ratios [..., V] (unconstrained, e.g. a network's output).
      ratio: target ratios r >= 0, same shape (in SEDD, p_t(y | x_0) / p_t(x_t | x_0)). Negative
        entries are outside the domain: an eager call raises, a traced one returns NaN there.
      axis: the vocabulary axis summed over.
      where: boolean mask broadcasting to ``log_score``; False entries do not count (e.g. y = x_t,
        or entries with zero transition rate), whatever they hold (NaN included), in value and
        gradient.

    Returns:
      Score entropy with ``axis`` reduced, accumulated in at least float32.

    Examples:
      >>> import jax.numpy as jnp
      >>> import entreg
      >>> ratio = jnp.array([1.0, 0.0, 2.0])
      >>> print(f"{entreg.score_entropy(jnp.log(ratio), ratio):.4f}")  # exact ratios: 0
      0.0000
      >>> print(f"{entreg.score_entropy(jnp.zeros(3), ratio):.4f}")  # 2 - 2 log 2
      1.3863
    """
    s = _checks.float_array(log_score, "log_score")
    r = _checks.float_array(ratio, "ratio")
    _checks.same_shape(s, r, "log_score", "ratio")
    axis = _checks.normalize_axis(axis, s.ndim, "log_score")
    r = _checks.nonnegative(r, "ratio", "ratios of probabilities")
    s, r = jnp.broadcast_arrays(*(x.astype(jnp.result_type(s, r)) for x in (s, r)))
    if where is not None:  # excluded entries may hold anything: replaced before any arithmetic
        valid = _checks.broadcast_bool(where, s.shape, "where", "log_score")
        s, r = jnp.where(valid, s, 0.0), jnp.where(valid, r, 1.0)
    # A score of 0 (log_score = -inf): the term is 0 where r = 0 (r log s -> 0) and +inf where
    # r > 0; the finite remainder keeps its gradient.
    zero_score = s == -jnp.inf
    s_safe = jnp.where(zero_score, 0.0, s)
    terms = jnp.where(zero_score, 0.0, jnp.exp(s_safe) - r * s_safe) + _k(r)
    if where is not None:
        terms = jnp.where(valid, terms, 0.0)
    value = jnp.sum(terms, axis=axis)
    return _masked.plus_inf_where(value, jnp.any(zero_score & (r > 0), axis=axis))
