"""Entropy-dynamics diagnostics of Cui et al. 2025 (first-order entropy change, R-H law)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from entreg import _checks, _masked
from entreg._typing import Array, ArrayLike, Bool, Float


def first_order_entropy_change(
    logits: Float[ArrayLike, "*batch v"],
    delta_logits: Float[ArrayLike, "*batch v"],
    *,
    where: Bool[ArrayLike, "*batch v"] | Bool[ArrayLike, "*batch"] | None = None,
    axis: int = -1,
) -> Float[Array, "*batch"]:
    r"""Predicted entropy change of a softmax policy under a logit step dz (Cui et al. 2025).

        H(softmax(z + dz)) - H(softmax(z)) ~= -Cov_{a~pi}(log pi(a), dz_a)
                                            = -(E_pi[log pi dz] - E_pi[log pi] E_pi[dz])

    exact to first order, from dH/dz_a = -pi_a (log pi_a + H). For natural policy gradient
    dz = eta A gives -eta Cov(log pi, A); for vanilla policy gradient dz = eta pi A.
    Excluded entries (``where`` False, -inf logits) have pi = 0 and do not contribute.

    Returns:
      The predicted change per row (the batch shape).
    """
    logits, where, axis = _masked.prepare(logits, where, axis)
    dz = _checks.float_array(delta_logits, "delta_logits")
    _checks.same_shape(logits, dz, "logits", "delta_logits")
    d = _masked.log_softmax(logits, where, axis)
    dz = jnp.where(d.valid, dz, 0.0)
    e_log_p = jnp.sum(d.p * d.log_p, axis=axis)
    e_dz = jnp.sum(d.p * dz, axis=axis)
    return -(jnp.sum(d.p * d.log_p * dz, axis=axis) - e_log_p * e_dz)


class EntropyRewardFit(NamedTuple):
    """The fitted law R = -a exp(H) + b (`fit_entropy_reward`) and its R^2."""

    a: jax.Array
    b: jax.Array
    r2: jax.Array  # coefficient of determination of the fit

    def predict(self, entropy: Float[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
        """The predicted reward -a exp(H) + b at ``entropy`` (any shape)."""
        return -self.a * jnp.exp(jnp.asarray(entropy)) + self.b


def fit_entropy_reward(
    entropy: Float[ArrayLike, " n"], reward: Float[ArrayLike, " n"]
) -> EntropyRewardFit:
    r"""Least-squares fit of the entropy-performance law R = -a exp(H) + b (Cui et al. 2025).

    Linear regression of R on x = exp(H): a = -Cov(x, R) / Var(x), b = mean(R) + a mean(x).
    R(H = 0) = b - a is the predicted ceiling once entropy is exhausted. ``r2`` = 1 - SS_res /
    SS_tot (0 when the rewards are constant).

    Args:
      entropy, reward: 1-D arrays of equal length (e.g. per training step), at least 2 points.
    """
    h = _checks.float_array(entropy, "entropy")
    r = _checks.float_array(reward, "reward")
    if h.ndim != 1 or h.shape[0] < 2:
        raise ValueError(f"`entropy` must be 1-D with at least 2 points, got shape {h.shape}.")
    _checks.same_shape(h, r, "entropy", "reward")
    x = jnp.exp(h)
    xc, rc = x - x.mean(), r - r.mean()
    var = jnp.sum(xc**2)
    slope = jnp.where(var > 0, jnp.sum(xc * rc) / jnp.where(var > 0, var, 1.0), 0.0)
    a = -slope
    b = r.mean() + a * x.mean()
    ss_tot = jnp.sum(rc**2)
    ss_res = jnp.sum((r - (b - a * x)) ** 2)
    r2 = jnp.where(ss_tot > 0, 1.0 - ss_res / jnp.where(ss_tot > 0, ss_tot, 1.0), 0.0)
    return EntropyRewardFit(a, b, r2)
