"""Sample-based KL estimators for sampled tokens (Schulman, "Approximating KL divergence", 2020)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from entreg import _checks, _masked
from entreg._typing import Array, ArrayLike, Float

_KINDS = ("k1", "k2", "k3", "abs")


def kl_estimate(
    log_p: Float[ArrayLike, "*shape"],
    log_q: Float[ArrayLike, "*shape"],
    kind: str = "k3",
    *,
    log_ratio_clip: float | None = None,
    value_clip: float | None = None,
) -> Float[Array, "*shape"]:
    r"""Per-sample estimate of KL(pi || pi_ref) from log-probabilities of tokens y ~ pi.

    With d = log_p - log_q (log pi(y) - log pi_ref(y)) and r = pi_ref(y)/pi(y) = exp(-d):

    ====== ========================= ========================================
    kind   estimator                 properties
    ====== ========================= ========================================
    k1     d                         unbiased, high variance, can be < 0
    k2     d^2 / 2                   biased, low variance, >= 0
    k3     (r - 1) - log r           unbiased, >= 0; k1 plus the control
                                     variate r - 1 (computed as expm1(-d) + d)
    abs    |d|                       the KL-Cov penalty; gradient sign(d), 0 at d = 0
    ====== ========================= ========================================

    The gradient of |d| is taken as sign(d) (0 at d = 0, as in PyTorch); ``jnp.abs`` would give
    +1 at 0, which changes on-policy updates where d = 0 exactly.

    Args:
      log_p: log pi(y) of the sampled tokens (the policy being trained), any shape.
      log_q: log pi_ref(y), same shape.
      kind: one of k1, k2, k3, abs.
      log_ratio_clip: if set, d is clipped to [-c, c] first (verl's "low_var_kl" uses 20).
      value_clip: if set, the estimate is clipped to [-c, c] (verl's "low_var_kl" uses 10).

    Returns:
      Elementwise estimates, float32 or wider. Where k2 or k3 is infinite (an infinite log-ratio,
      or e^{-d} beyond the dtype's range) the value is +inf, its limit, with a zero gradient;
      ``value_clip`` turns it into c. Two -inf log-probabilities give d = 0.

    Examples:
      >>> import jax.numpy as jnp
      >>> import entreg
      >>> log_p, log_ref = jnp.log(jnp.array([0.5, 0.2])), jnp.log(jnp.array([0.25, 0.2]))
      >>> print(entreg.kl_estimate(log_p, log_ref, "k1"))  # log p - log ref
      [0.6931 0.    ]
      >>> print(entreg.kl_estimate(log_p, log_ref, "k3"))  # r - 1 - log r, r = ref / p
      [0.1931 0.    ]
    """
    _checks.choice(kind, "kind", _KINDS)
    log_p = _checks.float_array(log_p, "log_p")
    log_q = _checks.float_array(log_q, "log_q")
    _checks.same_shape(log_p, log_q, "log_p", "log_q")
    # Equal log-probabilities give d = 0, also when both are -inf (a token neither policy can
    # sample): their difference would be NaN.
    d = jnp.where(log_p == log_q, 0.0, log_p - log_q)
    if log_ratio_clip is not None:
        c = _checks.real_scalar(log_ratio_clip, "log_ratio_clip", minimum=0.0)
        d = jnp.clip(d, -c, c)
    if kind == "k1":
        out = d
    elif kind == "k2":
        out = _where_finite(d, lambda x: 0.5 * x**2)
    elif kind == "k3":
        out = _where_finite(d, lambda x: jnp.expm1(-x) + x)
    else:
        out = _masked.abs_zero_grad(d)
    if value_clip is not None:
        c = _checks.real_scalar(value_clip, "value_clip", minimum=0.0)
        out = jnp.clip(out, -c, c)
    return out


def _where_finite(d: jax.Array, estimator) -> jax.Array:
    """estimator(d) where it is finite; +inf (its limit for k2 and k3) with a zero gradient where
    d is infinite or the estimate overflows, instead of the NaN of inf - inf and 0 * inf."""
    finite = jnp.isfinite(estimator(jnp.where(jnp.isfinite(d), d, 0.0))) & jnp.isfinite(d)
    return jnp.where(finite, estimator(jnp.where(finite, d, 0.0)), jnp.inf)
