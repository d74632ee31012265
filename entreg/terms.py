"""Loss terms: weighted, optionally stateful functions of named training signals.

A term *measures* a scalar quantity from a mapping of named signals (logits, attention entropy,
embeddings, masks, ...) and turns it into a loss contribution. The sign is part of the term's
type, never of its weight:

=================== ==================================== ===================================
constructor         loss contribution                    state
=================== ==================================== ===================================
`penalty`           + w(step) * value                    none
`bonus`             - w(step) * value                    none
`constraint`        lam * (lower - value) or             `ConstraintState(multiplier)`
                    lam * (value - upper)                (projected dual ascent, lam >= 0)
`band_penalty`      w * ([lo*ref - v]_+ + [v - hi*ref]_+)  `BandState(reference, count)`
                    (or squared hinges)
`ema_metric`        0 (logs a running mean)              `EmaState(mean, count)`
=================== ==================================== ===================================

Weights are non-negative constants or optax schedules of the step. States are NamedTuples, so
they live beside an optax ``opt_state`` and can be read with ``optax.tree.get``. Every update is
functional; the whole training step jits.

Terms form a small algebra: ``2.0 * term`` scales its contribution (and reported weight),
``term.disabled()`` removes it from a composition while keeping its name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from entreg import _checks

Signals = Mapping[str, Any]
Measure = Callable[[Signals], jax.Array]
Weight = float | Callable[[jax.Array], jax.Array]


class TermResult(NamedTuple):
    """What a term returns at one step: the measured value, its weight, its signed loss
    contribution, its next state and extra metrics."""

    value: jax.Array  # the measured quantity (differentiable)
    weight: jax.Array  # the effective non-negative coefficient at this step
    loss: jax.Array  # the contribution to the total loss, sign included
    state: Any  # the term's next state
    extras: dict  # further metrics, e.g. the running reference


class ConstraintState(NamedTuple):
    """State of `constraint`: the Lagrange multiplier (>= 0, no gradient)."""

    multiplier: jax.Array


class BandState(NamedTuple):
    """State of `band_penalty`: the running reference and the number of updates."""

    reference: jax.Array
    count: jax.Array  # type: ignore[assignment]  # a field named like tuple.count, kept for the API


class EmaState(NamedTuple):
    """State of `ema_metric`: the debiased running mean and the number of updates."""

    mean: jax.Array
    count: jax.Array  # type: ignore[assignment]  # a field named like tuple.count, kept for the API


@dataclasses.dataclass(frozen=True)
class LossTerm:
    """A named loss term. Build one with `penalty`, `bonus`, `constraint`, ... ."""

    name: str
    init: Callable[[], Any]
    apply: Callable[[Signals, Any, jax.Array | None], TermResult]
    scale: float = 1.0
    enabled: bool = True

    def __mul__(self, factor: float) -> LossTerm:
        """``factor * term``: the same term with its weight and contribution scaled (>= 0)."""
        factor = _checks.real_scalar(factor, "factor", minimum=0.0)
        return dataclasses.replace(self, scale=self.scale * factor)

    __rmul__ = __mul__

    def disabled(self) -> LossTerm:
        """The same term, left out of the composition (its name and state slot are kept)."""
        return dataclasses.replace(self, enabled=False)

    def __call__(self, signals: Signals, state: Any, step=None) -> TermResult:
        """Applies the term, with its scale folded into the weight and the contribution."""
        r = self.apply(signals, state, step)
        return r._replace(weight=self.scale * r.weight, loss=weighted(self.scale, r.loss))


def weight_fn(weight: Weight, name: str) -> Callable[[Any], jax.Array]:
    if callable(weight):

        def scheduled(step):
            if step is None:
                raise ValueError(f"Term {name!r} has a scheduled weight: pass `step`.")
            return jnp.asarray(weight(step))

        return scheduled
    w = _checks.real_scalar(weight, "weight", minimum=0.0)
    return lambda step: jnp.asarray(w)  # weakly typed: follows the measured value's dtype


def measured(measure: Measure, signals: Signals, name: str) -> jax.Array:
    value = jnp.asarray(measure(signals))
    if value.shape != ():
        raise ValueError(
            f"The measure of term {name!r} must return a scalar, got shape {value.shape}; "
            "reduce it (e.g. with entreg.aggregate)."
        )
    return value.astype(jnp.promote_types(value.dtype, jnp.float32))


def _fixed_sign_term(name: str, measure: Measure, weight: Weight, sign: float) -> LossTerm:
    name = _checks.term_name(name)
    weight_at = weight_fn(weight, name)

    def apply(signals, state, step):
        v = measured(measure, signals, name)
        w = weight_at(step)
        return TermResult(v, w, weighted(w, sign * v), state, {})

    return LossTerm(name, init=lambda: (), apply=apply)


def weighted(w: jax.typing.ArrayLike, x: jax.Array) -> jax.Array:
    """w * x, and exactly 0 where w = 0: a switched-off term on an infinite measurement (a KL
    is +inf where supports differ) contributes 0 instead of 0 * inf = NaN."""
    return jnp.where(w == 0, 0.0, w * x)


def penalty(name: str, measure: Measure, weight: Weight = 1.0) -> LossTerm:
    """A term that is minimized: contributes ``+weight * measure(signals)``."""
    return _fixed_sign_term(name, measure, weight, 1.0)


def bonus(name: str, measure: Measure, weight: Weight = 1.0) -> LossTerm:
    """A term that is maximized: contributes ``-weight * measure(signals)``."""
    return _fixed_sign_term(name, measure, weight, -1.0)


def constraint(
    name: str,
    measure: Measure,
    *,
    lower: float | None = None,
    upper: float | None = None,
    lr: float,
    init_multiplier: float = 0.0,
    damping: float = 0.0,
) -> LossTerm:
    """Holds ``measure`` above ``lower`` (or below ``upper``) with an adaptive coefficient.

    Lagrangian relaxation with projected dual ascent, the pattern of SAC's automatic temperature
    (Haarnoja et al. 2018) and rlax's Lagrange penalties. For a floor g = lower - value <= 0:

        loss contribution = lam * (lower - value)       (a bonus on value with weight lam)
        lam <- max(0, lam + lr * (lower - sg(value)))   (after the step; sg = stop_gradient)

    so lam grows while the constraint is violated and decays to 0 once it holds with slack;
    at equilibrium the measured value sits at the bound. ``upper`` is the mirror image
    (a penalty on value). The multiplier never receives a gradient from the loss.

    Plain descent-ascent oscillates around the bound. ``damping`` = c > 0 adds the
    augmented-Lagrangian term (c/2) [g]_+^2 of the violation g (Platt & Barr 1988, "Constrained
    differential optimization"), which damps the oscillation; c = 0 is the pure Lagrangian.
    """
    name = _checks.term_name(name)
    if (lower is None) == (upper is None):
        raise ValueError("Pass exactly one of `lower` (a floor) and `upper` (a ceiling).")
    lr = _checks.real_scalar(lr, "lr", minimum=0.0)
    init_multiplier = _checks.real_scalar(init_multiplier, "init_multiplier", minimum=0.0)
    damping = _checks.real_scalar(damping, "damping", minimum=0.0)
    bound = _checks.real_scalar(
        lower if upper is None else upper, "lower" if upper is None else "upper"
    )
    sign = 1.0 if upper is None else -1.0  # violation = sign * (bound - value)

    def init():
        return ConstraintState(multiplier=jnp.asarray(init_multiplier, jnp.float32))

    def apply(signals, state: ConstraintState, step):
        v = measured(measure, signals, name)
        lam = jax.lax.stop_gradient(state.multiplier)
        violation = sign * (bound - v)
        new_lam = jnp.maximum(0.0, lam + lr * jax.lax.stop_gradient(violation))
        extras = {"bound": jnp.asarray(bound, jnp.float32), "violation": violation}
        loss = weighted(lam, violation)
        if damping:
            loss = loss + 0.5 * damping * jax.nn.relu(violation) ** 2
        return TermResult(v, lam, loss, ConstraintState(new_lam), extras)

    return LossTerm(name, init=init, apply=apply)


def _running_mean(mean, count, value, decay):
    """Bias-corrected EMA (decay in (0, 1)) or cumulative mean (decay None); count = updates."""
    count = count + 1
    value = jax.lax.stop_gradient(value)
    if decay is None:
        return mean + (value - mean) / count, count
    # Debiased EMA: m_n = sum_k (1-d) d^(n-k) x_k / (1 - d^n), updated in closed form.
    weight = (1.0 - decay) / (1.0 - decay ** count.astype(jnp.float32))
    return mean + weight * (value - mean), count


def _check_decay(decay):
    if decay is None:
        return None
    decay = _checks.real_scalar(decay, "decay", minimum=0.0)
    if decay >= 1.0:
        raise ValueError(f"`decay` must be in [0, 1), got {decay}.")
    return decay


def band_penalty(
    name: str,
    measure: Measure,
    *,
    low: float = 0.0,
    high: float = 2.0,
    weight: Weight = 1.0,
    decay: float | None = None,
    squared: bool = False,
) -> LossTerm:
    """Penalizes leaving the corridor [low * ref, high * ref] around a running reference.

    ref is the running mean of the measured value over past steps (``decay=None``, as EPO's
    per-turn reference entropy) or its debiased EMA; it is kept in the state and carries no
    gradient. Before the first update ref is the current value. The penalty is a differentiable
    hinge [low ref - v]_+ + [v - high ref]_+ (``squared=True``: squared hinges), unlike the
    released EPO code, whose indicator form is a constant with no gradient.
    Defaults low = 0, high = 2 follow EPO's reported runs (kappa_l = 0, kappa_r = 2).
    """
    name = _checks.term_name(name)
    low = _checks.real_scalar(low, "low", minimum=0.0)
    high = _checks.real_scalar(high, "high", minimum=0.0)
    if high < low:
        raise ValueError(f"`high` ({high}) must be >= `low` ({low}).")
    decay = _check_decay(decay)
    weight_at = weight_fn(weight, name)

    def init():
        return BandState(reference=jnp.zeros((), jnp.float32), count=jnp.zeros((), jnp.int32))

    def apply(signals, state: BandState, step):
        v = measured(measure, signals, name)
        ref = jnp.where(state.count > 0, state.reference, jax.lax.stop_gradient(v))
        below = jax.nn.relu(low * ref - v)
        above = jax.nn.relu(v - high * ref)
        pen = below**2 + above**2 if squared else below + above
        w = weight_at(step)
        new_ref, count = _running_mean(state.reference, state.count, v, decay)
        extras = {"reference": ref, "penalty": pen}
        return TermResult(v, w, weighted(w, pen), BandState(new_ref, count), extras)

    return LossTerm(name, init=init, apply=apply)


def ema_metric(name: str, measure: Measure, *, decay: float = 0.99) -> LossTerm:
    """Logs the debiased EMA of a measured quantity; contributes nothing to the loss."""
    name = _checks.term_name(name)
    decay = _check_decay(decay)

    def init():
        return EmaState(mean=jnp.zeros((), jnp.float32), count=jnp.zeros((), jnp.int32))

    def apply(signals, state: EmaState, step):
        v = measured(measure, signals, name)
        mean, count = _running_mean(state.mean, state.count, v, decay)
        zero = jnp.zeros((), v.dtype)
        return TermResult(v, zero, zero, EmaState(mean, count), {"ema": mean})

    return LossTerm(name, init=init, apply=apply)
