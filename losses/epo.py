"""EPO: entropy-regularized policy optimization for multi-turn agents (Xu et al. 2025).

    loss = L_PPO - c_H ( mean_t H_t - c_s beta(k) mean_t penalty_t )

penalty_t keeps each token's entropy inside a corridor [kappa_l Href_j, kappa_r Href_j] around
the running reference entropy Href_j of its turn j, carried across RL steps in `EpoState`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from entreg import _checks
from entreg._typing import Array, ArrayLike, Bool, Float, Integer, Real, Shaped
from entreg.aggregation import MODES, aggregate
from entreg.terms import LossTerm, TermResult

from . import _tokens

ENTROPY_COEF = 1e-3  # c_H of the paper


class EpoState(NamedTuple):
    """EPO's state across RL steps: the per-turn reference entropies and how often each turn
    occurred."""

    reference: jax.Array  # [num_turns] running mean of each turn's mean token entropy
    # [num_turns] int32, RL steps in which the turn occurred (a field named like tuple.count)
    count: jax.Array  # type: ignore[assignment]


def epo_init(num_turns: int) -> EpoState:
    """The initial `EpoState` of ``num_turns`` turns: no reference yet (count 0)."""
    num_turns = _checks.positive_int(num_turns, "num_turns")
    return EpoState(jnp.zeros((num_turns,), jnp.float32), jnp.zeros((num_turns,), jnp.int32))


def epo_phase_weight(
    epoch: float | Real[ArrayLike, "*shape"], total_epochs: int = 150
) -> Float[Array, "*shape"]:
    r"""EPO's schedule beta(k) of the corridor penalty over ``total_epochs`` = K (150 in the paper).

    With p the progress within the current half of training: first half beta = 1 - 0.2 (1 -
    e^{-2p}) (from 1 to 0.83), second half beta = 0.8 e^{-3p} (from 0.8 to 0.04); beta = 0.8 e^-3
    after K.
    """
    if not isinstance(total_epochs, int) or total_epochs < 2:
        raise ValueError(f"`total_epochs` must be an int >= 2, got {total_epochs!r}.")
    half = total_epochs / 2
    k = jnp.asarray(epoch).astype(jnp.result_type(float))  # float64 when x64 is on
    first = jnp.clip(k / half, 0.0, 1.0)
    second = jnp.clip((k - half) / half, 0.0, 1.0)
    return jnp.where(
        k < half, 1.0 - 0.2 * (1.0 - jnp.exp(-2.0 * first)), 0.8 * jnp.exp(-3.0 * second)
    )


def _turns(entropy, mask, turn_ids, num_turns):
    h = _checks.float_array(entropy, "entropy")
    if h.ndim == 0:
        raise ValueError("`entropy` must have a token axis (shape [..., T]).")
    valid = _checks.token_mask(mask, h.shape, "entropy")
    turn_ids = jnp.asarray(turn_ids)
    if not jnp.issubdtype(turn_ids.dtype, jnp.integer) or turn_ids.shape != h.shape:
        raise ValueError(
            f"`turn_ids` must be integers shaped like `entropy` {h.shape}, got "
            f"{turn_ids.dtype}{list(turn_ids.shape)}."
        )
    ids = jnp.clip(turn_ids, 0, num_turns - 1)
    return h, valid, ids


def turn_entropy(
    entropy: Float[ArrayLike, "*batch t"],
    mask: Shaped[ArrayLike, "*batch t"],
    turn_ids: Integer[ArrayLike, "*batch t"],
    num_turns: int,
) -> tuple[Float[Array, " turns"], Bool[Array, " turns"]]:
    """(mean token entropy of each turn over the batch [J], whether the turn occurred [J])."""
    num_turns = _checks.positive_int(num_turns, "num_turns")
    h, valid, ids = _turns(entropy, mask, turn_ids, num_turns)
    w = valid.astype(h.dtype)
    sums = jnp.zeros((num_turns,), h.dtype).at[ids].add(jnp.where(valid, h, 0.0))
    counts = jnp.zeros((num_turns,), h.dtype).at[ids].add(w)
    return jnp.where(counts > 0, sums / jnp.maximum(counts, 1.0), 0.0), counts > 0


def epo_update(
    state: EpoState,
    entropy: Float[ArrayLike, "*batch t"],
    mask: Shaped[ArrayLike, "*batch t"],
    turn_ids: Integer[ArrayLike, "*batch t"],
) -> EpoState:
    """Adds this step's per-turn mean entropies to the running references (no gradient)."""
    means, present = turn_entropy(
        jax.lax.stop_gradient(entropy), mask, turn_ids, state.reference.shape[0]
    )
    count = state.count + present.astype(jnp.int32)
    ref = state.reference + jnp.where(present, (means - state.reference) / jnp.maximum(count, 1), 0)
    return EpoState(ref.astype(state.reference.dtype), count)


def epo_penalty(
    entropy: Float[ArrayLike, "*batch t"],
    mask: Shaped[ArrayLike, "*batch t"],
    turn_ids: Integer[ArrayLike, "*batch t"],
    state: EpoState,
    *,
    kappa_low: float = 0.0,
    kappa_high: float = 2.0,
    squared: bool = False,
) -> Float[Array, "*batch t"]:
    r"""Per-token corridor penalty [kappa_l Href_j - H_t]_+ + [H_t - kappa_r Href_j]_+.

    j is the token's turn (``turn_ids`` in [0, num_turns); out-of-range ids are clipped) and
    Href_j the state's reference; a turn never seen before uses this step's mean entropy of the
    turn (without gradient). ``squared=True`` squares both hinges. Defaults kappa_l = 0,
    kappa_r = 2 are those of EPO's reported runs.

    The released EPO code builds the penalty as ``where(in_band, 0, ratio)``: a constant with
    no gradient, so only its plain entropy bonus trains. This hinge is differentiable in H_t.
    Masked tokens get 0.
    """
    kappa_low = _checks.real_scalar(kappa_low, "kappa_low", minimum=0.0)
    kappa_high = _checks.real_scalar(kappa_high, "kappa_high", minimum=0.0)
    if kappa_high < kappa_low:
        raise ValueError(f"`kappa_high` ({kappa_high}) must be >= `kappa_low` ({kappa_low}).")
    num_turns = state.reference.shape[0]
    h, valid, ids = _turns(entropy, mask, turn_ids, num_turns)
    now, _ = turn_entropy(jax.lax.stop_gradient(h), valid, ids, num_turns)
    ref = jnp.where(state.count > 0, state.reference, now)[ids]
    below = jax.nn.relu(kappa_low * ref - h)
    above = jax.nn.relu(h - kappa_high * ref)
    pen = below**2 + above**2 if squared else below + above
    return jnp.where(valid, pen, 0.0)


def epo_loss(
    entropy: Float[ArrayLike, "*batch t"],
    mask: Shaped[ArrayLike, "*batch t"],
    turn_ids: Integer[ArrayLike, "*batch t"],
    state: EpoState,
    *,
    epoch: float | Real[ArrayLike, ""],
    entropy_coef: float = ENTROPY_COEF,
    smooth_coef: float = 1.0,
    total_epochs: int = 150,
    kappa_low: float = 0.0,
    kappa_high: float = 2.0,
    squared: bool = False,
) -> tuple[Float[Array, "*batch t"], dict[str, Array]]:
    r"""EPO's entropy part per token: -c_H (H_t - c_s beta(k) penalty_t).

    Add it to the PPO per-token loss (or aggregate it separately; every mode is linear).
    Defaults c_H = 1e-3, c_s = 1, K = 150 are the paper's. Update the state afterwards with
    `epo_update` (`epo_term` does both inside `entreg.compose`).

    Returns:
      ``(per_token_loss, metrics)`` with ``entropy``, ``penalty`` (token means) and
      ``phase_weight``.
    """
    entropy_coef = _checks.real_scalar(entropy_coef, "entropy_coef", minimum=0.0)
    smooth_coef = _checks.real_scalar(smooth_coef, "smooth_coef", minimum=0.0)
    pen = epo_penalty(
        entropy, mask, turn_ids, state, kappa_low=kappa_low, kappa_high=kappa_high, squared=squared
    )
    beta = epo_phase_weight(epoch, total_epochs)
    h = _checks.float_array(entropy, "entropy")
    valid = _checks.token_mask(mask, h.shape, "entropy")
    loss = jnp.where(valid, -entropy_coef * (h - smooth_coef * beta * pen), 0.0)
    metrics = {
        "entropy": _tokens.masked_mean(h, valid, h.dtype),
        "penalty": _tokens.masked_mean(pen, valid, h.dtype),
        "phase_weight": beta,
    }
    return loss, metrics


def epo_term(
    name: str = "epo",
    *,
    num_turns: int,
    mode: str = "token-mean",
    **epo_kwargs,
) -> LossTerm:
    """EPO as a stateful `entreg.compose` term; the RL step is the composition's ``step``.

    Reads the signals ``entropy``, ``mask`` and ``turn_ids`` ([B, T]); its state is an
    `EpoState`. ``epo_kwargs`` go to `epo_loss`. The value is the aggregated entropy; the
    contribution is the aggregated `epo_loss` (a bonus on entropy, a penalty on leaving the
    corridor).
    """
    name = _checks.term_name(name)
    _checks.choice(mode, "mode", MODES)
    epo_init(num_turns)  # validates num_turns at construction

    def apply(signals, state: EpoState, step):
        if step is None:
            raise ValueError(f"Term {name!r} follows EPO's phase schedule: pass `step`.")
        _checks.signals(signals, ("entropy", "mask", "turn_ids"), name)
        h, mask, ids = signals["entropy"], signals["mask"], signals["turn_ids"]
        per_token, m = epo_loss(h, mask, ids, state, epoch=step, **epo_kwargs)
        value = aggregate(_checks.float_array(h, "entropy"), mask, mode)
        extras = {"penalty": m["penalty"], "phase_weight": m["phase_weight"]}
        coef = jnp.asarray(epo_kwargs.get("entropy_coef", ENTROPY_COEF), jnp.float32)
        new_state = epo_update(state, h, mask, ids)
        return TermResult(value, coef, aggregate(per_token, mask, mode), new_state, extras)

    return LossTerm(name, init=lambda: epo_init(num_turns), apply=apply)
