"""STEER token weights ("Rethinking Entropy Interventions in RLVR: An Entropy Change Perspective").

STEER re-weights each token's policy-gradient term by how much that token's update would change
the entropy: tokens with a large predicted entropy change get a smaller weight.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from entreg import _checks
from entreg._typing import Array, ArrayLike, AxisName, Float, Shaped

from . import _tokens
from .ppo import ppo_loss

_MODES = ("linear", "exp")
_OMEGAS = ("one_logit", "released_code")


def _extreme(x, largest: bool, axis_name):
    """max (or min) of `x` over every axis and over the mesh axis `axis_name` when given; -inf
    (inf) for an empty batch."""
    if largest:
        x = jnp.max(x, initial=-jnp.inf)
        return x if axis_name is None else jax.lax.pmax(x, axis_name)
    x = jnp.min(x, initial=jnp.inf)
    return x if axis_name is None else jax.lax.pmin(x, axis_name)


def steer_weights(
    log_prob: Float[ArrayLike, "*batch t"],
    old_log_prob: Float[ArrayLike, "*batch t"],
    advantages: Float[ArrayLike, "*batch t"],
    mask: Shaped[ArrayLike, "*batch t"],
    *,
    entropy: Float[ArrayLike, "*batch t"],
    mode: str = "linear",
    w_min: float = 0.8,
    w_max: float = 1.2,
    omega: str = "one_logit",
    axis_name: AxisName | None = None,
) -> Float[Array, "*batch t"]:
    r"""Per-token STEER weights, computed without gradient.

    With p = clip(exp(log_prob), 1e-8, 1 - 1e-8), p_old = clip(exp(old_log_prob), 1e-8, 1) and
    H_t the entropy at the token's position, the predicted entropy change of the token's update is
    proportional to

        Omega_t = (A_t / p_old_t) p_t^2 (1 - p_t) (log p_t + H_t)     (``omega="one_logit"``)

    Derivation: the surrogate -A p / p_old moves the sampled logit by eta (A / p_old) p (1 - p),
    and dH/dz_a = -p (log p + H), so dH = -eta Omega_t. The released STEER code omits one factor
    of p (``omega="released_code"``: (A / p_old) p (1 - p)(log p + H)); pick it to reproduce
    those runs. Non-finite Omega becomes 0 and m_t = |Omega_t|.

    * ``mode="linear"``: w = w_max - (m - m_min)(w_max - w_min)/(m_max - m_min), clipped to
      [w_min, w_max]; the midpoint when all m are equal.
    * ``mode="exp"``: kappa = -log(w_min) / max(m_max, 0.02), w = clip(exp(-kappa m), w_min, 1).

    m_min, m_max run over the valid tokens (over the mesh axis ``axis_name`` when given).
    Defaults w_min = 0.8, w_max = 1.2 are the paper's. Masked tokens get weight 0.
    """
    log_prob, old_log_prob, advantages, valid = _tokens.policy_inputs(
        log_prob, old_log_prob, advantages, mask
    )
    h = _tokens.optional_tokens(entropy, "entropy", valid)
    _checks.choice(mode, "mode", _MODES)
    _checks.choice(omega, "omega", _OMEGAS)
    w_min = _checks.real_scalar(w_min, "w_min", minimum=0.0)
    w_max = _checks.real_scalar(w_max, "w_max", minimum=0.0)
    if mode == "linear" and w_max < w_min:
        raise ValueError(f"`w_max` ({w_max}) must be >= `w_min` ({w_min}).")
    if mode == "exp" and not 0.0 < w_min <= 1.0:
        raise ValueError(f"`w_min` must be in (0, 1] in exp mode, got {w_min}.")
    log_prob, old_log_prob, advantages, h = jax.lax.stop_gradient(
        (log_prob, old_log_prob, advantages, h)
    )

    p = jnp.clip(jnp.exp(log_prob), 1e-8, 1.0 - 1e-8)
    p_old = jnp.clip(jnp.exp(old_log_prob), 1e-8, 1.0)
    omega_t = advantages / p_old * p * (1.0 - p) * (jnp.log(p) + h)
    if omega == "one_logit":
        omega_t = omega_t * p
    m = jnp.where(valid & jnp.isfinite(omega_t), jnp.abs(omega_t), 0.0)
    m_max = _extreme(jnp.where(valid, m, -jnp.inf), True, axis_name)
    if mode == "linear":
        m_min = _extreme(jnp.where(valid, m, jnp.inf), False, axis_name)
        span = m_max - m_min
        flat = span > 0
        w = w_max - (m - m_min) * (w_max - w_min) / jnp.where(flat, span, 1.0)
        w = jnp.where(flat, jnp.clip(w, w_min, w_max), 0.5 * (w_min + w_max))
    else:
        kappa = -jnp.log(w_min) / jnp.maximum(m_max, 0.02)
        w = jnp.clip(jnp.exp(-kappa * m), w_min, 1.0)
    return jnp.where(valid, w, 0.0)


def steer_loss(
    log_prob: Float[ArrayLike, "*batch t"],
    old_log_prob: Float[ArrayLike, "*batch t"],
    advantages: Float[ArrayLike, "*batch t"],
    mask: Shaped[ArrayLike, "*batch t"],
    *,
    entropy: Float[ArrayLike, "*batch t"],
    weight_kwargs: dict | None = None,
    **ppo_kwargs,
) -> tuple[Float[Array, "*batch t"], dict[str, Array]]:
    """STEER: the dual-clip PPO loss (`ppo_loss`) with each token scaled by `steer_weights`.

    ``weight_kwargs`` go to `steer_weights` (mode, w_min, w_max, omega, axis_name);
    ``ppo_kwargs`` go to `ppo_loss` (eps_low, eps_high, dual_clip, entropy_coef, ...); the
    ``entropy`` feeds both (and the PPO entropy bonus and metric). Metrics add ``weight_mean``,
    ``weight_min`` and ``weight_max`` over valid tokens.
    """
    w = steer_weights(
        log_prob, old_log_prob, advantages, mask, entropy=entropy, **(weight_kwargs or {})
    )
    loss, metrics = ppo_loss(
        log_prob, old_log_prob, advantages, mask, token_weights=w, entropy=entropy, **ppo_kwargs
    )
    valid = _checks.token_mask(mask, w.shape, "log_prob")
    some = jnp.any(valid)
    metrics["weight_mean"] = _tokens.masked_mean(w, valid, w.dtype)
    metrics["weight_min"] = jnp.where(some, _extreme(jnp.where(valid, w, jnp.inf), False, None), 0)
    metrics["weight_max"] = jnp.where(some, _extreme(jnp.where(valid, w, -jnp.inf), True, None), 0)
    return loss, metrics
