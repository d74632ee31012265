"""Group-relative advantages (GRPO, Shao et al. 2024; Dr. GRPO, Liu et al. 2025)."""

from __future__ import annotations

import jax.numpy as jnp

from entreg import _checks
from entreg._typing import Array, ArrayLike, Bool, Float


def grpo_advantages(
    rewards: Float[ArrayLike, "*batch g"],
    *,
    where: Bool[ArrayLike, "*#batch g"] | None = None,
    scale_by_std: bool = True,
    eps: float = 1e-6,
) -> Float[Array, "*batch g"]:
    r"""Outcome advantages normalized within each group of responses to the same prompt.

    The group is the last axis: ``rewards`` [..., G] holds G sampled responses per prompt::

        A_i = (r_i - mean(r)) / (std(r) + eps)     (GRPO; std with Bessel's correction, as
                                                     torch.std in verl)
        A_i = r_i - mean(r)                        (``scale_by_std=False``: Dr. GRPO, which
                                                     drops the std that up-weights easy and
                                                     hard prompts)

    Statistics run over the valid members (``where``). A group with a single valid member has
    no baseline; like verl it gets mean 0 and std 1 (A = r / (1 + eps)). Invalid members get 0.
    A group whose rewards are all equal gets A = 0: it carries no learning signal. Broadcast to
    tokens with ``A[..., None] * mask``.

    Args:
      rewards: [..., G] scalar rewards.
      where: optional [..., G] boolean, False for members to ignore (e.g. failed rollouts).
      scale_by_std: divide by the group standard deviation (GRPO) or not (Dr. GRPO).
      eps: added to the standard deviation.

    Examples:
      >>> import jax.numpy as jnp
      >>> from entreg import losses
      >>> rewards = jnp.array([[1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])  # [prompts, G]
      >>> print(losses.grpo_advantages(rewards))  # a solved group carries no signal
      [[ 0.866 -0.866  0.866 -0.866]
       [ 0.     0.     0.     0.   ]]
    """
    rewards = _checks.float_array(rewards, "rewards")
    if rewards.ndim == 0:
        raise ValueError("`rewards` must have a group axis (shape [..., G]).")
    eps = _checks.real_scalar(eps, "eps", minimum=0.0)
    valid = (
        jnp.ones(rewards.shape, bool)
        if where is None
        else _checks.broadcast_bool(where, rewards.shape, "where", "rewards")
    )
    r = jnp.where(valid, rewards, 0.0)
    n = jnp.sum(valid, axis=-1, keepdims=True).astype(r.dtype)
    single = n <= 1
    mean = jnp.where(single, 0.0, jnp.sum(r, axis=-1, keepdims=True) / jnp.maximum(n, 1.0))
    dev = jnp.where(valid, r - mean, 0.0)
    if scale_by_std:
        var = jnp.sum(dev**2, axis=-1, keepdims=True) / jnp.maximum(n - 1.0, 1.0)
        # sqrt has an infinite derivative at 0: feed it a safe value there (double where).
        std = jnp.where(var > 0, jnp.sqrt(jnp.where(var > 0, var, 1.0)), 0.0)
        denom = jnp.where(single, 1.0, std) + eps
        dev = jnp.where(denom > 0, dev / jnp.where(denom > 0, denom, 1.0), 0.0)  # eps = 0 safe
    return jnp.where(valid, dev, 0.0)
