"""Covariance-based entropy control: Clip-Cov and KL-Cov (Cui et al. 2025).

"The Entropy Mechanism of Reinforcement Learning for Reasoning Language Models": for a softmax
policy the first-order entropy change of an update dz is -Cov_{a~pi}(log pi(a), dz_a), so the
few tokens with a large covariance between log-probability and advantage drive entropy collapse.
Clip-Cov removes a random few of them from the gradient; KL-Cov puts a |log-ratio| penalty on
the top few.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from entreg import _checks
from entreg._masked import abs_zero_grad
from entreg._typing import Array, ArrayLike, AxisName, Float, PRNGKeyArray, Shaped
from entreg.aggregation import psum

from . import _tokens
from .ppo import clip_params, surrogate


def token_covariance(
    log_prob: Float[ArrayLike, "*batch t"],
    advantages: Float[ArrayLike, "*batch t"],
    mask: Shaped[ArrayLike, "*batch t"],
    *,
    axis_name: AxisName | None = None,
) -> Float[Array, "*batch t"]:
    r"""Per-token covariance estimate cov_i = (A_i - mean(A)) (log pi_i - mean(log pi)).

    Means run over the valid tokens. The centering scope is explicit: by default over this
    call's tokens (verl centers over one micro-batch on one device); with ``axis_name`` (inside
    ``shard_map`` / ``pmap``) the sums and counts are psummed over that mesh axis, so the
    centering is global. Under plain ``jit`` with sharded arrays the means are already global.

    The log-probabilities are the current policy's; the estimate carries no gradient (it only
    selects tokens). Masked tokens get 0.

    Returns:
      [..., T] covariances, float32 or wider.
    """
    log_prob = jax.lax.stop_gradient(_checks.float_array(log_prob, "log_prob"))
    advantages = jax.lax.stop_gradient(_checks.float_array(advantages, "advantages"))
    _checks.same_shape(log_prob, advantages, "log_prob", "advantages")
    valid = _checks.token_mask(mask, log_prob.shape, "log_prob")
    n = psum(jnp.sum(valid, dtype=log_prob.dtype), axis_name)
    n = jnp.maximum(n, 1.0)

    def centered(x):
        x = jnp.where(valid, x, 0.0)
        return x - psum(jnp.sum(x), axis_name) / n

    return jnp.where(valid, centered(advantages) * centered(log_prob), 0.0)


def _band(cov_bounds) -> tuple[float, float]:
    try:
        lb, ub = cov_bounds
    except (TypeError, ValueError):
        raise ValueError(f"`cov_bounds` must be a pair (low, high), got {cov_bounds!r}.") from None
    lb = _checks.real_scalar(lb, "cov_bounds[0]", allow_inf=True)
    ub = _checks.real_scalar(ub, "cov_bounds[1]", allow_inf=True)
    if not lb < ub:
        raise ValueError(f"`cov_bounds` must satisfy low < high, got ({lb}, {ub}).")
    return lb, ub


def clip_cov_loss(
    log_prob: Float[ArrayLike, "*batch t"],
    old_log_prob: Float[ArrayLike, "*batch t"],
    advantages: Float[ArrayLike, "*batch t"],
    mask: Shaped[ArrayLike, "*batch t"],
    *,
    key: PRNGKeyArray,
    ratio: float = 2e-4,
    cov_bounds: tuple[float, float] = (1.0, 5.0),
    eps_low: float = 1.0,
    eps_high: float | None = None,
    log_ratio_clip: float | None = 20.0,
    axis_name: AxisName | None = None,
) -> tuple[Float[Array, "*batch t"], dict[str, Array]]:
    r"""Clip-Cov per-token loss (Cui et al. 2025, Eq. 11; verl ``compute_policy_loss_clip_cov``).

    1. rho = exp(d), d = log_prob - old_log_prob; L1 = -A rho, L2 = -A clip(rho, 1-eps_low,
       1+eps_high).
    2. cov_i from `token_covariance` (scope: ``axis_name``).
    3. Candidates: valid tokens not already clipped by PPO (L2 <= L1) with lb < cov_i < ub
       (strict).
    4. Choose n = max(int(ratio * N), 1) candidates uniformly at random with ``key`` (all of
       them if fewer), N = the number of valid tokens in this call.
    5. l = max(L1, L2), and exactly 0 (no gradient) at the chosen tokens. They still count in a
       token-mean denominator, as in verl.

    Defaults are the paper's: ratio 2e-4, band (1, 5), and eps_low = eps_high = 1 as in its
    recipes (Clip-Cov itself is the trust region; verl's generic default is 0.2). At toy batch
    sizes ratio 2e-4 selects a single token: scale it (about 1e-2).

    Departures from verl: the selection uses an explicit PRNG ``key`` instead of the global
    torch RNG, so runs are reproducible; d is clamped to +-``log_ratio_clip`` before exp (verl
    does not clamp, and exp overflows past d = 88 in float32). Selection is sorted by random
    priority over all tokens, so every shape is static under jit.

    Returns:
      ``(per_token_loss, metrics)`` with ``selected`` ([..., T] bool, the zeroed tokens),
      ``selected_fraction`` (verl logs it as "pg_clipfrac"), ``num_candidates``,
      ``clip_fraction`` (PPO clipping) and ``ppo_kl``.
    """
    log_prob, old_log_prob, advantages, valid = _tokens.policy_inputs(
        log_prob, old_log_prob, advantages, mask
    )
    eps_low, eps_high = clip_params(eps_low, eps_high)
    ratio = _tokens.ratio_param(ratio, "ratio")
    lb, ub = _band(cov_bounds)
    key = jnp.asarray(key)
    if not (jnp.issubdtype(key.dtype, jax.dtypes.prng_key) or key.shape == (2,)):
        raise TypeError(f"`key` must be a PRNG key, got an array of shape {key.shape}.")

    d = _tokens.log_ratio(log_prob, old_log_prob, log_ratio_clip)
    l1, l2 = surrogate(advantages, jnp.exp(d), eps_low, eps_high)
    ppo_clipped = l2 > l1
    cov = token_covariance(log_prob, advantages, valid, axis_name=axis_name)
    candidate = valid & ~ppo_clipped & (cov > lb) & (cov < ub)
    priority = jnp.where(candidate, jax.random.uniform(key, log_prob.shape), -1.0)
    n = _tokens.selection_count(ratio, jnp.sum(valid))
    selected = candidate & (_tokens.descending_rank(priority) < n)

    loss = jnp.where(valid & ~selected, jnp.maximum(l1, l2), 0.0)
    metrics = {
        "selected": selected,
        "selected_fraction": _tokens.masked_mean(selected, valid, log_prob.dtype),
        "num_candidates": jnp.sum(candidate),
        "clip_fraction": _tokens.masked_mean(ppo_clipped, valid, log_prob.dtype),
        "ppo_kl": _tokens.masked_mean(-d, valid, log_prob.dtype),
    }
    return loss, metrics


def kl_cov_loss(
    log_prob: Float[ArrayLike, "*batch t"],
    old_log_prob: Float[ArrayLike, "*batch t"],
    advantages: Float[ArrayLike, "*batch t"],
    mask: Shaped[ArrayLike, "*batch t"],
    *,
    ratio: float = 2e-3,
    beta: float = 1.0,
    log_ratio_clip: float | None = 20.0,
    axis_name: AxisName | None = None,
) -> tuple[Float[Array, "*batch t"], dict[str, Array]]:
    r"""KL-Cov per-token loss (Cui et al. 2025, Eq. 12; verl ``compute_policy_loss_kl_cov``).

    With d = log_prob - old_log_prob and rho = exp(d)::

        l_i = -A_i rho_i + beta |d_i| * [i among the top k valid tokens by cov_i]

    k = max(1, int(ratio * N)) over the N valid tokens of this call (at most N), chosen by a
    deterministic top-k (ties go to the earlier token). There is no PPO clipping anywhere.

    ``ratio`` is a fraction: the paper uses 2e-3 for 7B and 2e-4 for 32B models (the original
    PRIME-RL code takes it in percent, 0.2 meaning 2e-3). ``beta`` = 1 is the paper's and the
    recipes' value (verl's config default of 0.1 differs). The gradient of |d| is taken as
    sign(d), 0 at d = 0, as PyTorch does: on-policy (old_log_prob == log_prob) the penalty
    contributes nothing, exactly as in verl. d is clamped to +-``log_ratio_clip`` so exp cannot
    overflow (verl does not clamp).

    Returns:
      ``(per_token_loss, metrics)`` with ``selected`` ([..., T] bool, the penalized tokens),
      ``selected_fraction`` and ``ppo_kl``: for KL-Cov verl logs the mean of |d| under that
      name (PPO and Clip-Cov log the mean of -d), and so does entreg, so that curves compare.
    """
    log_prob, old_log_prob, advantages, valid = _tokens.policy_inputs(
        log_prob, old_log_prob, advantages, mask
    )
    ratio = _tokens.ratio_param(ratio, "ratio")
    beta = _checks.real_scalar(beta, "beta", minimum=0.0)
    d = _tokens.log_ratio(log_prob, old_log_prob, log_ratio_clip)
    cov = token_covariance(log_prob, advantages, valid, axis_name=axis_name)
    n_valid = jnp.sum(valid)
    k = jnp.minimum(_tokens.selection_count(ratio, n_valid), n_valid)
    selected = valid & (_tokens.descending_rank(jnp.where(valid, cov, -jnp.inf)) < k)

    abs_d = abs_zero_grad(d)
    loss = -advantages * jnp.exp(d) + jnp.where(selected, beta * abs_d, 0.0)
    metrics = {
        "selected": selected,
        "selected_fraction": _tokens.masked_mean(selected, valid, log_prob.dtype),
        "ppo_kl": _tokens.masked_mean(abs_d, valid, log_prob.dtype),
    }
    return jnp.where(valid, loss, 0.0), metrics
