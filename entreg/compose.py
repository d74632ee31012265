"""`compose`: a task loss plus loss terms as one function for ``jax.value_and_grad``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from entreg._typing import Array, Scalar
from entreg.terms import LossTerm


@dataclasses.dataclass(frozen=True)
class ComposedLoss:
    """base loss + terms. Call as ``loss_fn(*args, state=..., step=...)``.

    Returns ``(loss, (new_state, metrics))``:

    * ``loss``: base loss + sum of every enabled term's contribution (a scalar);
    * ``new_state``: dict term name -> the term's next state (NamedTuples; stateless terms hold
      ``()``); start from ``loss_fn.init()``;
    * ``metrics``: ``loss``, ``<base_name>/loss`` and for each term ``<name>/value`` (the
      measured quantity), ``<name>/weight`` (effective coefficient) and ``<name>/loss`` (its
      signed contribution), plus term-specific extras (``<name>/reference``, ...). Every metric
      is a differentiable function of the arguments: nothing is stop-gradiented on the way out.
    """

    base: Callable[..., tuple[jax.Array, dict]]
    terms: tuple[LossTerm, ...]
    base_name: str = "base"

    def __post_init__(self):
        if not callable(self.base):
            raise TypeError(
                f"`base` must be a function returning (loss, signals), got {self.base!r}."
            )
        for t in self.terms:
            if not isinstance(t, LossTerm):
                raise TypeError(f"`terms` must be entreg LossTerms, got {type(t).__name__}.")
        names = [t.name for t in self.terms]
        dup = {n for n in names if names.count(n) > 1} | ({self.base_name} & set(names))
        if dup:
            raise ValueError(
                f"`terms` need unique names, none equal to `base_name`; repeated: {sorted(dup)}."
            )

    def init(self) -> dict[str, Any]:
        """The initial state: term name -> the term's initial state."""
        return {t.name: t.init() for t in self.terms}

    def __add__(self, term: LossTerm) -> ComposedLoss:
        """``loss_fn + term``: the composition with one more term."""
        return dataclasses.replace(self, terms=(*self.terms, term))

    def without(self, name: str) -> ComposedLoss:
        """The composition without the term called ``name``."""
        if name not in {t.name for t in self.terms}:
            raise ValueError(f"`name`: no term named {name!r}.")
        return dataclasses.replace(self, terms=tuple(t for t in self.terms if t.name != name))

    def __call__(
        self, *args, state: dict[str, Any], step=None, **kwargs
    ) -> tuple[Scalar, tuple[dict[str, Any], dict[str, Array]]]:
        """Evaluates base and terms; returns ``(loss, (new_state, metrics))`` (see the class)."""
        out = self.base(*args, **kwargs)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError("The base loss must return (scalar_loss, signals_dict).")
        base_loss, signals = out
        base_loss = jnp.asarray(base_loss)
        if base_loss.shape != ():
            raise ValueError(f"The base loss must be a scalar, got shape {base_loss.shape}.")
        missing = {t.name for t in self.terms} - set(state)
        if missing:
            raise ValueError(f"`state` lacks the terms {sorted(missing)}; build it with init().")
        total = base_loss
        metrics = {f"{self.base_name}/loss": base_loss}
        new_state = dict(state)
        for term in self.terms:
            if not term.enabled:
                continue
            r = term(signals, state[term.name], step)
            total = total + r.loss
            new_state[term.name] = r.state
            metrics[f"{term.name}/value"] = r.value
            metrics[f"{term.name}/weight"] = r.weight
            metrics[f"{term.name}/loss"] = r.loss
            metrics.update({f"{term.name}/{k}": v for k, v in r.extras.items()})
        metrics["loss"] = total
        return total, (new_state, metrics)


def compose(
    base: Callable[..., tuple[jax.Array, dict]], *terms: LossTerm, base_name: str = "base"
) -> ComposedLoss:
    """Composes a task loss with entreg loss terms.

    Args:
      base: ``base(*args, **kwargs) -> (loss, signals)``; ``signals`` is a dict of named arrays
        (logits, masks, attention entropies, ...) that every term's measure reads.
      *terms: `LossTerm`s (`entreg.penalty`, `entreg.bonus`, `entreg.constraint`, ...).
      base_name: the metric prefix of the base loss.

    Example::

        loss_fn = entreg.compose(
            task,
            entreg.bonus(
                "entropy",
                lambda s: entreg.aggregate(entreg.entropy(s["logits"]), s["mask"]),
                weight=optax.linear_schedule(1e-2, 0.0, 1000),
            ),
            entreg.constraint(
                "attn_floor", lambda s: s["attn_entropy"].mean(), lower=1.0, lr=0.05
            ),
        )
        state = loss_fn.init()
        (loss, (state, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, batch, state=state, step=step)
    """
    return ComposedLoss(base=base, terms=tuple(terms), base_name=base_name)
