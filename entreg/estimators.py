"""Sample-based KL estimators for sampled tokens (Schulman, "Approximating KL divergence", 2020)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from entreg import _checks, _masked

_KINDS = ("k1", "k2", "k3", "abs")


def kl_estimate(
    log_p,
    log_q,
    kind: str = "k3",
    *,
    log_ratio_clip: float | None = None,
    value_clip: float | None = None,
) -> jax.Array:
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
      Elementwise estimates, float32 or wider.
    """
    _checks.choice(kind, "kind", _KINDS)
    log_p = _checks.float_array(log_p, "log_p")
    log_q = _checks.float_array(log_q, "log_q")
    _checks.same_shape(log_p, log_q, "log_p", "log_q")
    d = log_p - log_q
    if log_ratio_clip is not None:
        c = _checks.real_scalar(log_ratio_clip, "log_ratio_clip", minimum=0.0)
        d = jnp.clip(d, -c, c)
    if kind == "k1":
        out = d
    elif kind == "k2":
        out = 0.5 * d**2
    elif kind == "k3":
        out = jnp.expm1(-d) + d
    else:
        out = _masked.abs_zero_grad(d)
    if value_clip is not None:
        c = _checks.real_scalar(value_clip, "value_clip", minimum=0.0)
        out = jnp.clip(out, -c, c)
    return out
