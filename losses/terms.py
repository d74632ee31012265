"""Policy losses and attention-entropy regularizers as `entreg.compose` terms."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax.numpy as jnp
from entreg.kernels import linear_log_probs_and_entropy

from entreg import _checks
from entreg.aggregation import MODES, aggregate
from entreg.terms import LossTerm, TermResult, Weight, weight_fn

from .attention import attention_band_penalty, attention_floor_penalty, max_attention_entropy

POLICY_SIGNALS = ("log_prob", "old_log_prob", "advantages", "mask")
HIDDEN_SIGNALS = ("hidden", "lm_head", "tokens")
_KERNEL_OPTIONS = ("temperature", "valid_vocab", "chunk_size", "vocab_axis", "implementation")


def _hidden_options(from_hidden) -> dict | None:
    if from_hidden is None:
        return None
    if not isinstance(from_hidden, Mapping) or set(from_hidden) - set(_KERNEL_OPTIONS):
        raise ValueError(
            f"`from_hidden` must be a dict of linear_log_probs_and_entropy options "
            f"{_KERNEL_OPTIONS} ({{}} for the defaults), got {from_hidden!r}."
        )
    return dict(from_hidden)


def _token_signals(signals, name: str, from_hidden: dict | None, needed: tuple[str, ...]):
    """The signals, with ``log_prob`` and ``entropy`` computed from (hidden, lm_head, tokens)
    by the fused kernel when ``from_hidden`` is set: the [B, T, V] logits never exist."""
    if from_hidden is not None:
        needed = tuple(s for s in needed if s not in ("log_prob", "entropy")) + HIDDEN_SIGNALS
    _checks.signals(signals, needed, name)
    if from_hidden is None:
        return signals
    log_prob, entropy = linear_log_probs_and_entropy(
        signals["hidden"], signals["lm_head"], signals["tokens"], **from_hidden
    )
    return {**signals, "log_prob": log_prob, "entropy": entropy}


def policy_term(
    loss_fn: Callable,
    name: str,
    *,
    mode: str = "token-mean",
    weight: Weight = 1.0,
    from_signals: tuple[str, ...] = (),
    from_hidden: Mapping | None = None,
    **loss_kwargs,
) -> LossTerm:
    """A per-token policy loss (`ppo_loss`, `clip_cov_loss`, ...) as a penalty term.

    The term reads the signals ``log_prob``, ``old_log_prob``, ``advantages`` and ``mask``
    ([B, T]) and, for each name in ``from_signals``, passes ``signals[name]`` as that keyword
    (``("key",)`` for `clip_cov_loss`, ``("entropy",)`` for `steer_loss` or an entropy bonus).
    Its value is ``aggregate(per_token_loss, mask, mode)`` and its contribution ``weight *
    value``: a loss to minimize. The loss's scalar metrics become the term's extras
    (``<name>/clip_fraction``, ...); array metrics such as ``selected`` are left out.

    ``from_hidden`` (a dict of `entreg.kernels.linear_log_probs_and_entropy` options such as
    ``temperature`` and ``chunk_size``; ``{}`` for the defaults) makes the term read the final
    hidden states ``hidden`` [B, T, H], the LM head ``lm_head`` [H, V] and the sampled
    ``tokens`` [B, T] instead of ``log_prob`` and ``entropy``: both come from the fused kernel,
    so the [B, T, V] logits are never materialized and the gradient reaches the hidden states
    and the head through its recomputing backward.

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
    from_hidden = _hidden_options(from_hidden)

    def apply(signals, state, step):
        signals = _token_signals(signals, name, from_hidden, (*POLICY_SIGNALS, *from_signals))
        kwargs = {k: signals[k] for k in from_signals}
        per_token, metrics = loss_fn(*(signals[s] for s in POLICY_SIGNALS), **kwargs, **loss_kwargs)
        value = aggregate(per_token, signals["mask"], mode)
        w = weight_at(step)
        extras = {k: v for k, v in metrics.items() if jnp.ndim(v) == 0}
        return TermResult(value, w, w * value, state, extras)

    return LossTerm(name, init=lambda: (), apply=apply)


def entropy_bonus(
    weight: Weight = 1.0,
    *,
    mode: str = "token-mean",
    name: str = "entropy",
    from_hidden: Mapping | None = None,
) -> LossTerm:
    """The token entropy bonus: contributes ``-weight * aggregate(entropy, mask, mode)``.

    Reads the per-token entropies ``entropy`` and ``mask`` ([B, T]); with ``from_hidden``
    (kernel options, as in `policy_term`) it computes the entropy from ``hidden``, ``lm_head``
    and ``tokens`` with the fused kernel instead (``tokens`` only select the log-prob, which
    this term does not use). Within one `policy_term` that already reads ``entropy``, prefer
    the loss's own ``entropy_coef``: one kernel call then serves both.
    """
    name = _checks.term_name(name)
    _checks.choice(mode, "mode", MODES)
    weight_at = weight_fn(weight, name)
    from_hidden = _hidden_options(from_hidden)

    def apply(signals, state, step):
        signals = _token_signals(signals, name, from_hidden, ("entropy", "mask"))
        value = aggregate(signals["entropy"], signals["mask"], mode)
        w = weight_at(step)
        return TermResult(value, w, -w * value, state, {})

    return LossTerm(name, init=lambda: (), apply=apply)


_ATTENTION_KINDS = ("band", "floor")


def attention_entropy_term(
    kind: str,
    *,
    target,
    name: str | None = None,
    weight: Weight = 1.0,
    signal: str = "attention_entropy",
    causal: bool = False,
    num_keys: int | None = None,
    tolerance: float = 0.2,
    mode: str = "default",
    mask: str | None = None,
) -> LossTerm:
    """`attention_band_penalty` or `attention_floor_penalty` as a penalty term.

    The term reads ``signals[signal]``: one layer's per-head entropies [..., heads, Tq], or a
    tuple of them, one per layer, as `entreg.nnx.collect` returns what `EntropyAttention` sows.
    Its value is the mean over layers of the per-layer penalty (for ``mode="faithful"``, the
    released code's average over heads and layers of per-head sums), its contribution
    ``weight * value``.

    Args:
      kind: ``"band"`` (keep each head near ``target`` x E_max, entropy-guided attention) or
        ``"floor"`` (keep every row above ``target`` x E_max, a collapse guard).
      target: the fraction theta: a scalar, per head [heads], or per layer and head
        [layers, heads]; or the name of a signal holding it, e.g. a learnable ``nnx.Param``
        the task puts in its signals so that the optimizer trains it with the model.
      causal: per-row maxima log(i + 1) instead of log(Tk) (ignored by the faithful mode, which
        uses log Tk for every row as the released code does).
      num_keys: Tk for the maxima (default Tq, self-attention).
      tolerance, mode: as in `attention_band_penalty` (band only).
      mask: the name of a signal with the rows that count, broadcasting to [..., heads, Tq]
        (default mode only).
    """
    _checks.choice(kind, "kind", _ATTENTION_KINDS)
    name = _checks.term_name(name if name is not None else f"attention_{kind}")
    if num_keys is not None:
        num_keys = _checks.positive_int(num_keys, "num_keys")
    if kind == "floor" and mode != "default":
        raise ValueError("`mode` applies to kind='band' only.")
    weight_at = weight_fn(weight, name)

    def layer_penalty(h, theta, row_mask):
        h = _checks.float_array(h, signal)
        if h.ndim < 2:
            raise ValueError(f"Signal {signal!r} must be [..., heads, Tq], got {h.shape}.")
        tq = h.shape[-1]
        tk = tq if num_keys is None else num_keys
        # float_array already upcast h to at least float32.
        h_max = max_attention_entropy(tq, tk, causal=causal and mode != "faithful", dtype=h.dtype)
        theta = jnp.reshape(theta, jnp.shape(theta) + (1,))  # [heads] -> [heads, 1]
        if kind == "floor":
            return attention_floor_penalty(h, theta, max_entropy=h_max, mask=row_mask)
        return attention_band_penalty(
            h, theta, max_entropy=h_max, tolerance=tolerance, mode=mode, mask=row_mask
        )

    def apply(signals, state, step):
        _checks.signals(signals, [signal] + [s for s in (target, mask) if isinstance(s, str)], name)
        layers = signals[signal]
        layers = tuple(layers) if isinstance(layers, (tuple, list)) else (layers,)
        theta = _checks.float_array(
            signals[target] if isinstance(target, str) else target, "target"
        )
        if theta.ndim > 2 or (theta.ndim == 2 and theta.shape[0] != len(layers)):
            raise ValueError(
                f"`target` must be a scalar, [heads] or [layers={len(layers)}, heads], "
                f"got shape {theta.shape}."
            )
        row_mask = None if mask is None else signals[mask]
        per_layer = [
            layer_penalty(h, theta[i] if theta.ndim == 2 else theta, row_mask)
            for i, h in enumerate(layers)
        ]
        value = jnp.mean(jnp.stack(per_layer))
        w = weight_at(step)
        return TermResult(value, w, w * value, state, {})

    return LossTerm(name, init=lambda: (), apply=apply)
