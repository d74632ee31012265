"""Temperature-scaled token log-probabilities and entropy, and the temperature for an entropy.

Core functionals: `entreg.kernels` computes the same pair fused from hidden states, and
`entreg.losses` (which re-exports both) builds the RL policy terms on them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from entreg import _checks, _masked
from entreg._typing import Array, ArrayLike, Bool, Float, Integer, Scalar


def token_log_probs(
    logits: Float[ArrayLike, "*batch v"],
    tokens: Integer[ArrayLike, "*batch"],
    *,
    temperature: float | Float[ArrayLike, "*#batch"] = 1.0,
    where: Bool[ArrayLike, "*batch v"] | Bool[ArrayLike, "*batch"] | None = None,
    axis: int = -1,
) -> tuple[Float[Array, "*batch"], Float[Array, "*batch"]]:
    r"""log pi_tau(y_t) and H(pi_tau) at each position, pi_tau = softmax(logits / tau).

    The policy-gradient inputs of RL fine-tuning: both come from the same tempered distribution
    that sampled the tokens (verl divides the logits by the rollout temperature before both).
    Computed in float32 or wider from bf16 logits; ``-inf`` logits and ``where`` False exclude
    vocabulary entries; a sampled token outside the support gets log-prob -inf.

    Args:
      logits: [..., V] (``axis`` holds the vocabulary).
      tokens: [...] integer token ids; an id outside [0, V) gets log-prob -inf (as in
        `entreg.kernels.linear_log_probs_and_entropy`).
      temperature: tau > 0, a Python number or a traced scalar / array broadcasting to ``tokens``.
      where: optional vocabulary mask, as in `entreg.entropy`.

    Returns:
      ``(log_prob, entropy)``, each shaped like ``tokens``; differentiable in ``logits``.

    Examples:
      >>> import jax.numpy as jnp
      >>> import entreg
      >>> logits = jnp.log(jnp.array([[0.5, 0.25, 0.25]]))
      >>> log_prob, ent = entreg.token_log_probs(logits, jnp.array([0]))
      >>> print(log_prob, ent)  # log 0.5; 1.5 log 2
      [-0.6931] [1.0397]
    """
    logits, where, axis = _masked.prepare(logits, where, axis)
    tokens = jnp.asarray(tokens)
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise TypeError(f"`tokens` must be integer token ids, got dtype {tokens.dtype}.")
    batch_shape = logits.shape[:axis] + logits.shape[axis + 1 :]
    if tokens.shape != batch_shape:
        raise ValueError(
            f"`tokens` must have the logits' batch shape {batch_shape}, got {tokens.shape}."
        )
    _checks.temperature(temperature)
    tau = jnp.asarray(temperature, logits.dtype)
    tau = jnp.expand_dims(_checks.broadcast(tau, batch_shape, "temperature", "tokens"), axis)
    # Excluded entries (-inf, or NaN where `where` is False) are zeroed before the division:
    # -inf / tau has the derivative inf in tau, and 0 * inf is NaN.
    valid = logits > -jnp.inf if where is None else where & (logits > -jnp.inf)
    d = _masked.log_softmax(jnp.where(valid, logits, 0.0) / tau, valid, axis)
    # An id outside [0, V) is outside the support (no wrap-around of -1 to the last class).
    in_range = (tokens >= 0) & (tokens < logits.shape[axis])
    idx = jnp.expand_dims(jnp.where(in_range, tokens, 0), axis)
    log_p = jnp.take_along_axis(d.log_p, idx, axis=axis).squeeze(axis)
    inside = in_range & jnp.take_along_axis(d.valid, idx, axis=axis).squeeze(axis)
    log_p = jnp.where(inside, log_p, -jnp.inf)
    return log_p, _masked.entropy_of(d, axis)


def solve_temperature(
    logits: Float[ArrayLike, "*batch v"],
    target_entropy: float | Float[ArrayLike, ""],
    *,
    mask: Bool[ArrayLike, "*#batch"] | None = None,
    where: Bool[ArrayLike, "*batch v"] | Bool[ArrayLike, "*batch"] | None = None,
    axis: int = -1,
    bounds: tuple[float, float] = (1e-2, 1e2),
    iters: int = 60,
    per_row: bool = False,
) -> tuple[Scalar, Scalar] | tuple[Float[Array, "*rows"], Float[Array, "*rows"]]:
    r"""The sampling temperature tau at which mean_rows H(softmax(logits / tau)) = target.

    Each row's entropy is non-decreasing in tau (dH/dtau = Var_{p_tau}(z) / tau^3 >= 0; 0 as
    tau -> 0 for a unique argmax, log K as tau -> inf), so the mean over rows is too, and
    bisection in log tau converges geometrically: ``iters`` = 60 halvings of log(hi/lo) reach
    float32 resolution. One shared temperature is solved for the rows selected by ``mask`` (all
    rows by default); ``per_row=True`` solves one temperature per row instead (the same
    bisection, run on every row at once; the per-step decoding temperature of
    `entreg.decoding.entropy_temperature`). A target outside the reachable range returns the
    nearer bound; check the returned entropy. No gradient flows through the solve.

    Args:
      logits: [..., V].
      target_entropy: target (mean) entropy in nats: a scalar, may be traced; with
        ``per_row=True`` it may also be an array broadcasting to the batch shape.
      mask: optional boolean over the batch shape: the rows that count (shared solve only).
      where: optional vocabulary mask.
      bounds: (lo, hi) search interval for tau, 0 < lo < hi.
      iters: bisection steps.
      per_row: one temperature per row instead of one shared temperature.

    Returns:
      ``(temperature, entropy_at_temperature)``: scalars (the mean entropy over the selected
      rows), or arrays of the batch shape with ``per_row=True``.
    """
    logits, where, axis = _masked.prepare(logits, where, axis)
    logits = jax.lax.stop_gradient(logits)
    lo, hi = bounds
    lo = _checks.real_scalar(lo, "bounds[0]")
    hi = _checks.real_scalar(hi, "bounds[1]")
    if not 0 < lo < hi:
        raise ValueError(f"`bounds` must satisfy 0 < lo < hi, got {bounds}.")
    if not isinstance(iters, int) or iters < 1:
        raise ValueError(f"`iters` must be a positive int, got {iters!r}.")
    batch_shape = logits.shape[:axis] + logits.shape[axis + 1 :]
    if not isinstance(per_row, bool):
        raise TypeError(f"`per_row` must be a bool, got {per_row!r}.")
    if per_row and mask is not None:
        raise ValueError("`mask` selects the rows of one shared temperature; omit it per row.")
    rows = (
        jnp.ones(batch_shape, bool)
        if mask is None
        else _checks.broadcast_bool(mask, batch_shape, "mask", "the logits' batch shape")
    )
    target = jnp.asarray(target_entropy, logits.dtype)
    shape = batch_shape if per_row else ()
    target = _checks.broadcast(target, shape, "target_entropy", "the logits' batch shape")
    n = jnp.maximum(jnp.sum(rows), 1)

    def mean_entropy(log_tau):
        tau = jnp.expand_dims(jnp.exp(log_tau), axis) if per_row else jnp.exp(log_tau)
        h = _masked.entropy_of(_masked.log_softmax(logits / tau, where, axis), axis)
        return h if per_row else jnp.sum(jnp.where(rows, h, 0.0)) / n

    def halve(_, bracket):
        a, b = bracket
        mid = 0.5 * (a + b)
        low = mean_entropy(mid) < target
        return jnp.where(low, mid, a), jnp.where(low, b, mid)

    bracket = (
        jnp.full(shape, jnp.log(lo), logits.dtype),
        jnp.full(shape, jnp.log(hi), logits.dtype),
    )
    a, b = jax.lax.fori_loop(0, iters, halve, bracket)
    log_tau = 0.5 * (a + b)
    return jnp.exp(log_tau), mean_entropy(log_tau)
