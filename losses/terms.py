"""Policy losses as `entreg.compose` terms."""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp

from entreg import _checks
from entreg.aggregation import MODES, aggregate
from entreg.terms import LossTerm, TermResult, Weight, weight_fn

POLICY_SIGNALS = ("log_prob", "old_log_prob", "advantages", "mask")


def policy_term(
    loss_fn: Callable,
    name: str,
    *,
    mode: str = "token-mean",
    weight: Weight = 1.0,
    from_signals: tuple[str, ...] = (),
    **loss_kwargs,
) -> LossTerm:
    """A per-token policy loss (`ppo_loss`, `clip_cov_loss`, ...) as a penalty term.

    The term reads the signals ``log_prob``, ``old_log_prob``, ``advantages`` and ``mask``
    ([B, T]) and, for each name in ``from_signals``, passes ``signals[name]`` as that keyword
    (``("key",)`` for `clip_cov_loss`, ``("entropy",)`` for `steer_loss` or an entropy bonus).
    Its value is ``aggregate(per_token_loss, mask, mode)`` and its contribution ``weight *
    value``: a loss to minimize. The loss's scalar metrics become the term's extras
    (``<name>/clip_fraction``, ...); array metrics such as ``selected`` are left out.

    Example::

        loss_fn = entreg.compose(
            policy_forward,  # returns (0.0, {"log_prob": ..., "key": ..., ...})
            policy_term(clip_cov_loss, "clip_cov", from_signals=("key",), ratio=1e-2),
        )
    """
    name = _checks.term_name(name)
    _checks.choice(mode, "mode", MODES)
    if not callable(loss_fn):
        raise TypeError(f"`loss_fn` must be a policy loss function, got {loss_fn!r}.")
    weight_at = weight_fn(weight, name)

    def apply(signals, state, step):
        missing = [s for s in (*POLICY_SIGNALS, *from_signals) if s not in signals]
        if missing:
            raise KeyError(f"Term {name!r} needs the signals {missing}.")
        kwargs = {k: signals[k] for k in from_signals}
        per_token, metrics = loss_fn(*(signals[s] for s in POLICY_SIGNALS), **kwargs, **loss_kwargs)
        value = aggregate(per_token, signals["mask"], mode)
        w = weight_at(step)
        extras = {k: v for k, v in metrics.items() if jnp.ndim(v) == 0}
        return TermResult(value, w, w * value, state, extras)

    return LossTerm(name, init=lambda: (), apply=apply)
