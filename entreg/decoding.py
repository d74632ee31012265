r"""Entropy-controlled decoding: logits processors, Mirostat, generation, model switching.

Conventions shared by every function here:

* ``logits`` [..., V] hold one decoding step (``axis`` is the vocabulary) and are computed in
  float32 or wider: bf16 / f16 logits are cast first, so that neither the Gumbel noise of the
  draw nor any statistic is quantized. A ``-inf`` logit, a NaN logit (garbage) and ``where``
  False exclude a token; ``+inf`` counts as the largest finite logit (several ``+inf`` share the
  mass). p = softmax over the included tokens: the *model* (untruncated) distribution.
* A **logits processor** returns logits of the input's shape (float32 or wider) with every
  removed token at ``-inf`` and the kept ones unchanged, so processors chain (each one
  renormalizes what it is given). Every rule is a threshold on a per-token score, which makes
  it permutation invariant and keeps every token tied with the boundary token (HuggingFace
  keeps such ties for top-k and typical and leaves them to its sort order for top-p and min-p).
  At least one token survives in every row that has one: ``min_tokens_to_keep`` (default 1)
  re-admits the most probable tokens (the most typical ones for `typical_p`), ties included.
* Parameters are Python numbers (checked at trace time; an error names the argument) or
  arrays broadcasting to the batch shape, one value per row, which may be traced: a concrete
  array out of range raises, a traced one makes its rows' logits NaN, which the samplers
  report as invalid rows (``valid`` False).
* No sort of the vocabulary and no [..., V, V] temporary: the threshold rules are O(V)
  reductions, a static top-k is `jax.lax.top_k`, and the prefix rules (top-p, typical, a traced
  or adaptive k) find their exact threshold by bisection on the order-preserving integer image
  of the float scores (32 O(V) passes for float32; ``experiments/bench_decoding.py`` measures
  the cost at V = 151936).
* **Samplers** return ``(token, metrics)`` (`sample`) or ``(token, new_state, metrics)``
  (`sampler`, `mirostat_v1`, `mirostat_v2`) and draw with `jax.random.categorical` from the
  truncated, renormalized distribution q. ``key`` is one PRNG key (row i of the flattened batch
  then uses ``fold_in(key, i)``, so a row's draw does not depend on the batch size) or one key
  per row. A row without any included token returns ``pad_token`` with ``valid`` False, zero
  metrics and an unchanged state.
* **Surprise** of the drawn token x is reported under the model distribution, -log p(x) (what
  the Mirostat paper calls the observed surprise; its mean over a text is the observed
  cross-entropy), and under the sampled distribution, -log q(x) (what llama.cpp's Mirostat
  feeds back), each in bits and in nats. Mirostat's ``tau`` and ``mu`` are in **bits** (the
  paper, its code and llama.cpp); every entropy is in nats except where a name says bits.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from entreg import _checks, _decode, _masked, _threshold
from entreg._decode import LN2, check_key, check_logits, row_param, static_int
from entreg.temperature import solve_temperature

__all__ = [
    "Generation",
    "MirostatMetrics",
    "MirostatState",
    "StepMetrics",
    "SwitchMetrics",
    "SwitchState",
    "entropy_switch",
    "entropy_temperature",
    "epsilon_cutoff",
    "eta_cutoff",
    "generate",
    "min_p",
    "mirostat_v1",
    "mirostat_v2",
    "sample",
    "sampler",
    "top_k",
    "top_p",
    "typical_p",
    "zipf_exponent",
]

_FEEDBACK = ("model", "truncated")
# Below this Zipf exponent Mirostat's 1 / s_hat is treated as infinite (k -> 1 or N).
_MIN_EXPONENT = 1e-6

Sampler = Callable[[jax.Array, jax.Array, Any], tuple[jax.Array, Any, Any]]
StepFn = Callable[[Any, jax.Array], tuple]


def _mass(v):
    return (v > 0) & (v <= 1)


def _cutoff(v):
    return (v >= 0) & (v <= 1)


def _process(rule, c: _decode.Checked, *params, **options) -> jax.Array:
    ordered = tuple(sorted(options.items()))
    return _decode.run_processor(rule, c.logits, c.where, params, axis=c.axis, options=ordered)


def _keep_min(min_tokens_to_keep) -> int:
    return static_int(min_tokens_to_keep, "min_tokens_to_keep", 1)


# ----------------------------------------------------------------------------------------------
# Logits processors
# ----------------------------------------------------------------------------------------------


def top_k(
    logits: ArrayLike,
    k: int | ArrayLike,
    *,
    min_tokens_to_keep: int = 1,
    where: ArrayLike | None = None,
    axis: int = -1,
) -> jax.Array:
    r"""Top-k truncation: keep the tokens whose logit is >= the k-th largest logit.

    HuggingFace's TopKLogitsWarper rule: every token tied with the k-th value is kept (the kept
    set may exceed k), k is raised to ``min_tokens_to_keep``, and k >= the number of included
    tokens keeps them all. A Python-int k uses `jax.lax.top_k` of k; an integer array k (one per
    row, may be traced) uses the exact bisection threshold (any k, no capacity to choose).

    Args:
      logits: [..., V].
      k: a positive int, or an integer array broadcasting to the batch shape (values >= 1).
      min_tokens_to_keep: the least number of tokens kept per row (static int >= 1).
      where: optional boolean mask of included tokens (logits' shape or batch shape).
      axis: the vocabulary axis.

    Returns:
      The logits with the removed tokens at ``-inf``, float32 or wider.

    References:
      Fan, Lewis, Dauphin, "Hierarchical Neural Story Generation", ACL 2018.
    """
    c = check_logits(logits, where, axis)
    keep_min = _keep_min(min_tokens_to_keep)
    if isinstance(k, numbers.Integral) and not isinstance(k, bool):
        return _process(_top_k_static, c, k=max(static_int(k, "k", 1), keep_min))
    k = row_param(k, "k", c.batch, lambda v: v >= 1, ">= 1", integer=True)
    return _process(_top_k_traced, c, k, keep_min=keep_min)


def _top_k_static(x, *, k):
    return x.z, _decode.most(x.z, x.d.valid, k)


def _top_k_traced(x, k, *, keep_min):
    count = jnp.maximum(k, keep_min)
    return x.z, _threshold.largest_threshold(x.z, jnp.ones_like(x.z), count, x.d.valid)


def top_p(
    logits: ArrayLike,
    p: float | ArrayLike,
    *,
    min_tokens_to_keep: int = 1,
    where: ArrayLike | None = None,
    axis: int = -1,
) -> jax.Array:
    r"""Nucleus (top-p) truncation: keep the smallest most-probable set whose mass reaches p.

    Token x is kept iff the tokens strictly more probable than x hold less than p of the mass
    (HuggingFace's TopPLogitsWarper: remove the tokens whose ascending cumulative mass is
    <= 1 - p), i.e. keep p(x) >= t* with t* the largest probability such that
    sum_{p(y) >= t*} p(y) >= p. Tokens tied with the boundary are all kept, so the kept mass is
    >= p. p = 1 keeps every included token.

    Args:
      logits: [..., V].
      p: the mass, in (0, 1]: a number or a float array broadcasting to the batch shape.
      min_tokens_to_keep: the least number of (most probable) tokens kept per row.
      where: optional boolean mask of included tokens.
      axis: the vocabulary axis.

    Returns:
      The logits with the removed tokens at ``-inf``.

    References:
      Holtzman, Buys, Du, Forbes, Choi, "The Curious Case of Neural Text Degeneration",
      ICLR 2020.
    """
    c = check_logits(logits, where, axis)
    p = row_param(p, "p", c.batch, _mass, "in (0, 1]")
    return _process(_top_p, c, p, keep_min=_keep_min(min_tokens_to_keep))


def _top_p(x, p, *, keep_min):
    keep = _threshold.largest_threshold(x.d.log_p, x.d.p, p, x.d.valid)
    return x.z, keep | (p >= 1)[..., None] | _decode.most(x.z, x.d.valid, keep_min)


def typical_p(
    logits: ArrayLike,
    p: float | ArrayLike,
    *,
    min_tokens_to_keep: int = 1,
    where: ArrayLike | None = None,
    axis: int = -1,
) -> jax.Array:
    r"""Locally typical truncation: keep the tokens whose surprise is closest to the entropy.

    With H = -sum p log p (nats) and the deviation d(x) = |-log p(x) - H|, keep the smallest
    set taken in increasing d whose mass reaches p (Meister et al. 2023, Eq. 9), i.e.
    d(x) <= r* with r* the smallest deviation such that sum_{d(y) <= r*} p(y) >= p. As in
    HuggingFace's TypicalLogitsWarper every token tied with the boundary deviation is kept, and
    ``min_tokens_to_keep`` re-admits the most *typical* tokens (smallest d), not the most
    probable: the argmax can be removed. p = 1 keeps every included token.

    Args:
      logits: [..., V].
      p: the mass, in (0, 1] (HuggingFace's default 0.9; the paper suggests 0.2 for story
        generation and 0.95 for summarization).
      min_tokens_to_keep: the least number of (most typical) tokens kept per row.
      where: optional boolean mask of included tokens.
      axis: the vocabulary axis.

    Returns:
      The logits with the removed tokens at ``-inf``.

    References:
      Meister, Pimentel, Wiher, Cotterell, "Locally Typical Sampling", TACL 2023.
    """
    c = check_logits(logits, where, axis)
    p = row_param(p, "p", c.batch, _mass, "in (0, 1]")
    return _process(_typical_p, c, p, keep_min=_keep_min(min_tokens_to_keep))


def _typical_p(x, p, *, keep_min):
    h = _masked.entropy_of(x.d, -1)
    closeness = -jnp.abs(-x.d.log_p - h[..., None])  # -d(x): the largest is the most typical
    keep = _threshold.largest_threshold(closeness, x.d.p, p, x.d.valid)
    return x.z, keep | (p >= 1)[..., None] | _decode.most(closeness, x.d.valid, keep_min)


def min_p(
    logits: ArrayLike,
    p: float | ArrayLike,
    *,
    min_tokens_to_keep: int = 1,
    where: ArrayLike | None = None,
    axis: int = -1,
) -> jax.Array:
    r"""Min-p truncation: keep p(x) >= p_min * max_y p(y).

    Evaluated as log p(x) >= log p_max + log p_min (llama.cpp's logit form; no underflow).
    p_min = 0 keeps every included token, p_min = 1 the most probable ones. HuggingFace applies
    temperature before min-p and llama.cpp after it: the same p_min truncates differently at
    T != 1; apply the temperature where you want it.

    Args:
      logits: [..., V].
      p: p_min in [0, 1] (the paper's range 0.05-0.1; HuggingFace suggests 0.01-0.2).
      min_tokens_to_keep: the least number of (most probable) tokens kept per row.
      where: optional boolean mask of included tokens.
      axis: the vocabulary axis.

    Returns:
      The logits with the removed tokens at ``-inf``.

    References:
      Nguyen, Baker, Neo, Roush, Kirsch, Shwartz-Ziv, "Turning Up the Heat: Min-p Sampling for
      Creative and Coherent LLM Outputs", arXiv 2407.01082.
    """
    c = check_logits(logits, where, axis)
    p = row_param(p, "p", c.batch, _cutoff, "in [0, 1]")
    return _process(_min_p, c, p, keep_min=_keep_min(min_tokens_to_keep))


def _min_p(x, p, *, keep_min):
    top = jnp.max(jnp.where(x.d.valid, x.d.log_p, -jnp.inf), axis=-1)
    return _log_p_at_least(x, top + jnp.log(p), keep_min)


def _log_p_at_least(x, log_cut, keep_min):
    """The threshold rules: log p(x) >= log_cut (per row), plus the keep_min most probable."""
    keep = x.d.log_p >= log_cut[..., None]
    return x.z, keep | _decode.most(x.z, x.d.valid, keep_min)


def epsilon_cutoff(
    logits: ArrayLike,
    epsilon: float | ArrayLike,
    *,
    min_tokens_to_keep: int = 1,
    where: ArrayLike | None = None,
    axis: int = -1,
) -> jax.Array:
    r"""Epsilon sampling: keep p(x) >= epsilon (and the ``min_tokens_to_keep`` most probable).

    Args:
      logits: [..., V].
      epsilon: in [0, 1]; 0 keeps every included token. The paper uses 3e-4 to 9e-4 by model
        size (6e-4 for GPT-2 small).
      min_tokens_to_keep: the least number of (most probable) tokens kept per row.
      where: optional boolean mask of included tokens.
      axis: the vocabulary axis.

    Returns:
      The logits with the removed tokens at ``-inf``.

    References:
      Hewitt, Manning, Liang, "Truncation Sampling as Language Model Desmoothing", Findings of
      EMNLP 2022.
    """
    c = check_logits(logits, where, axis)
    eps = row_param(epsilon, "epsilon", c.batch, _cutoff, "in [0, 1]")
    return _process(_epsilon_cutoff, c, eps, keep_min=_keep_min(min_tokens_to_keep))


def _epsilon_cutoff(x, eps, *, keep_min):
    return _log_p_at_least(x, jnp.log(eps), keep_min)


def eta_cutoff(
    logits: ArrayLike,
    epsilon: float | ArrayLike,
    *,
    min_tokens_to_keep: int = 1,
    where: ArrayLike | None = None,
    axis: int = -1,
) -> jax.Array:
    r"""Eta sampling: keep p(x) >= eta with eta = min(epsilon, sqrt(epsilon) exp(-H)).

    H is the entropy of p in nats; exp(-H) is the "expected" probability of a token, so a
    flat distribution gets a lower cutoff (Hewitt et al. 2022, Eq. 6: sqrt(epsilon) * exp(-H),
    not the sqrt(epsilon * exp(-H)) of HuggingFace's EtaLogitsWarper docstring; its code agrees
    with the paper). The ``min_tokens_to_keep`` most probable tokens are always kept.

    Args:
      logits: [..., V].
      epsilon: in [0, 1]; 0 keeps every included token. The paper uses 3e-4 to 2e-3 by model
        size (2e-3 for GPT-2 small, 6e-4 for GPT-2 large).
      min_tokens_to_keep: the least number of (most probable) tokens kept per row.
      where: optional boolean mask of included tokens.
      axis: the vocabulary axis.

    Returns:
      The logits with the removed tokens at ``-inf``.

    References:
      Hewitt, Manning, Liang, "Truncation Sampling as Language Model Desmoothing", Findings of
      EMNLP 2022.
    """
    c = check_logits(logits, where, axis)
    eps = row_param(epsilon, "epsilon", c.batch, _cutoff, "in [0, 1]")
    return _process(_eta_cutoff, c, eps, keep_min=_keep_min(min_tokens_to_keep))


def _eta_cutoff(x, eps, *, keep_min):
    h = _masked.entropy_of(x.d, -1)
    return _log_p_at_least(x, jnp.minimum(jnp.log(eps), 0.5 * jnp.log(eps) - h), keep_min)


def entropy_temperature(
    logits: ArrayLike,
    target_entropy: float | ArrayLike,
    *,
    bounds: tuple[float, float] = (1e-2, 1e2),
    iters: int = 32,
    where: ArrayLike | None = None,
    axis: int = -1,
) -> jax.Array:
    r"""Tempers each row to a target entropy: logits / T with H(softmax(logits / T)) = H*.

    T is solved per row by `entreg.solve_temperature` (``per_row=True``): H is non-decreasing
    in T (dH/dT = Var_{p_T}(z) / T^3), so bisection in log T over ``bounds`` converges (32
    halvings of log(1e4) reach float32 resolution). The reachable entropies lie between the
    entropy at T = bounds[0] (-> log of the number of tied maxima as T -> 0) and at
    T = bounds[1] (-> log of the number of included tokens as T -> inf): outside them T is
    the nearer bound, so check ``entreg.entropy`` of the result (or call `solve_temperature`
    for T itself). A row with one included token has H = 0 at every T. This fixes the
    *expected* surprise of the next token (H* in nats) at every step, where Mirostat feeds back
    the *realized* one; AceReason-Nemotron 1.1 aims its rollout temperature at a target
    temperature-adjusted entropy (per training stage, not per token).

    Args:
      logits: [..., V].
      target_entropy: H* in nats, >= 0: a number or a float array broadcasting to the batch.
      bounds: (lo, hi) search interval for T.
      iters: bisection steps.
      where: optional boolean mask of included tokens.
      axis: the vocabulary axis.

    Returns:
      The tempered logits (excluded tokens at ``-inf``); no gradient flows through T.
    """
    c = check_logits(logits, where, axis)
    target = row_param(target_entropy, "target_entropy", c.batch, lambda v: v >= 0, ">= 0")
    return _process(_entropy_temperature, c, target, bounds=tuple(bounds), iters=iters)


def _entropy_temperature(x, target, *, bounds, iters):
    safe = jnp.where(jnp.isnan(target), 0.0, target)
    temperature, _ = solve_temperature(x.z, safe, bounds=bounds, iters=iters, per_row=True)
    return x.z / temperature[..., None], x.d.valid


def zipf_exponent(
    logits: ArrayLike, *, m: int = 100, where: ArrayLike | None = None, axis: int = -1
) -> jax.Array:
    r"""Mirostat's least-squares estimate of the Zipf exponent s of each row.

    With p_1 >= p_2 >= ... the m largest probabilities, t_i = log((i + 1) / i) and
    b_i = log(p_i / p_{i+1}) for i = 1..m-1, s_hat = sum_i t_i b_i / sum_i t_i^2 (least squares
    through the origin of log p_i = -s log i + c, from consecutive ratios; any log base). Exact
    Zipf rows p_i ~ i^-s give s_hat = s. Pairs reaching an excluded token are left out of both
    sums (llama.cpp would divide by zero there); a row with fewer than two included tokens
    gives 0.

    Args:
      logits: [..., V].
      m: the number of top probabilities fitted (static int >= 2; the paper's m = 100).
      where: optional boolean mask of included tokens.
      axis: the vocabulary axis.

    Returns:
      s_hat >= 0, with the batch shape.

    References:
      Basu, Ramachandran, Keskar, Varshney, "Mirostat: A Neural Text Decoding Algorithm that
      Directly Controls Perplexity", ICLR 2021, Algorithm 1.
    """
    c = check_logits(logits, where, axis)
    return _zipf_exponent(c.logits, c.where, axis=c.axis, m=static_int(m, "m", 2))


@partial(jax.jit, static_argnames=("axis", "m"))
def _zipf_exponent(logits, where, *, axis, m):
    return _decode.zipf_fit(_decode.sanitize(logits, where, axis), m)


# ----------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------


class StepMetrics(NamedTuple):
    """What one sampling step reports, per row (all zero where ``valid`` is False)."""

    surprise_bits: jax.Array  # -log2 p(x) under the model (untruncated) distribution
    surprise_nats: jax.Array  # -ln p(x), the same in nats
    truncated_surprise_bits: jax.Array  # -log2 q(x) under the sampled (truncated) distribution
    truncated_surprise_nats: jax.Array  # -ln q(x)
    entropy: jax.Array  # H(p) in nats
    truncated_entropy: jax.Array  # H(q) in nats
    kept: jax.Array  # int32: the number of tokens q keeps
    kept_mass: jax.Array  # the model mass of those tokens, Z = sum_{q(y) > 0} p(y)
    valid: jax.Array  # bool: the row had a token to draw


def sample(
    key: ArrayLike,
    logits: ArrayLike,
    *,
    model_logits: ArrayLike | None = None,
    where: ArrayLike | None = None,
    axis: int = -1,
    pad_token: int = 0,
) -> tuple[jax.Array, StepMetrics]:
    r"""Draws one token per row from softmax(logits) and reports its surprise.

    ``logits`` are the processed (truncated, tempered) logits that define the sampled
    distribution q; ``model_logits`` (default: ``logits``) the untruncated model distribution p
    under which the ``surprise_*`` metrics are measured. Both are cast to float32 or wider
    before the draw (`jax.random.categorical` draws its Gumbel noise in the logits' dtype, and
    bf16 noise never samples a tail of 0.2 spread over 32k tokens).

    Args:
      key: one PRNG key, or one per row (batch shape).
      logits: [..., V] processed logits.
      model_logits: [..., V] untruncated logits (same shape), or None.
      where: optional boolean mask of included tokens, applied to both.
      axis: the vocabulary axis.
      pad_token: the token of rows without an included token.

    Returns:
      ``(token, metrics)``: int32 tokens with the batch shape, and `StepMetrics`.
    """
    t = check_logits(logits, where, axis)
    if model_logits is not None:
        p = check_logits(model_logits, where, axis, "model_logits")
        _checks.same_shape(t.logits, p.logits, "logits", "model_logits")
        model_logits = p.logits
    key = check_key(key, t.batch)
    pad_token = _decode.pad(pad_token)
    return _sample(key, t.logits, model_logits, t.where, axis=t.axis, pad_token=pad_token)


@partial(jax.jit, static_argnames=("axis", "pad_token"))
def _sample(key, logits, model_logits, where, *, axis, pad_token):
    t = _decode.sanitize(logits, where, axis)
    p = t if model_logits is None else _decode.sanitize(model_logits, where, axis)
    keys = _decode.row_keys(key, t.z.shape[:-1])
    token, fields = _decode.draw(keys, t.z, p.d, pad_token)
    return token, StepMetrics(*fields)


def sampler(*processors: Callable[[jax.Array], jax.Array], pad_token: int = 0) -> Sampler:
    r"""A sampler that applies logits processors in order, then draws with `sample`.

    The result has the stateful-sampler signature ``(key, logits, state) -> (token, state,
    StepMetrics)`` used by `generate` (the state passes through unchanged, e.g. None); the
    surprise metrics are measured under the unprocessed logits. Bind parameters with
    `functools.partial`, e.g. ``sampler(partial(top_k, k=50), partial(top_p, p=0.9))``.

    Args:
      *processors: callables ``logits -> logits`` (the processors of this module or your own).
      pad_token: the token of rows without an included token.

    Returns:
      The sampler function.
    """
    for i, f in enumerate(processors):
        if not callable(f):
            raise TypeError(f"`processors` must be callables, got {f!r} at position {i}.")
    pad_token = _decode.pad(pad_token)

    def draw(key, logits, state=None):
        z = logits
        for f in processors:
            z = f(z)
        token, metrics = sample(key, z, model_logits=logits, pad_token=pad_token)
        return token, state, metrics

    return draw


# ----------------------------------------------------------------------------------------------
# Mirostat
# ----------------------------------------------------------------------------------------------


class MirostatState(NamedTuple):
    """Mirostat's per-row state."""

    mu: jax.Array  # [batch] the largest surprise (bits) the next step admits

    @classmethod
    def initial(
        cls, tau: float | ArrayLike, batch_shape: int | tuple[int, ...] = (), *, dtype=jnp.float32
    ) -> MirostatState:
        """mu_0 = 2 tau for every row (the paper, its code and llama.cpp).

        Args:
          tau: the target surprise in bits, > 0: a number or an array broadcasting to
            ``batch_shape`` (one target per row).
          batch_shape: the rows (an int or a tuple of ints).
          dtype: the floating dtype of mu.
        """
        shape = _decode.batch_shape(batch_shape)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"`dtype` must be a floating dtype, got {dtype}.")
        tau = row_param(tau, "tau", shape, lambda v: v > 0, "> 0")
        return cls(mu=2.0 * _decode.per_row(tau, shape, dtype))


class MirostatMetrics(NamedTuple):
    """`StepMetrics` plus Mirostat's controller quantities, per row."""

    surprise_bits: jax.Array
    surprise_nats: jax.Array
    truncated_surprise_bits: jax.Array
    truncated_surprise_nats: jax.Array
    entropy: jax.Array
    truncated_entropy: jax.Array
    kept: jax.Array
    kept_mass: jax.Array
    valid: jax.Array
    mu: jax.Array  # the surprise bound used at this step (before the update), bits
    k: jax.Array  # int32: v1's k from the Zipf fit; v2: the number of tokens kept
    zipf_exponent: jax.Array | None = None  # v1's s_hat; None for v2


def _mirostat(key, logits, state, tau, eta, feedback, where, axis, pad_token, version, m=None):
    """Validates in Python, then runs the jitted step."""
    c = check_logits(logits, where, axis)
    if not isinstance(state, MirostatState):
        raise TypeError(f"`state` must be a MirostatState, got {type(state).__name__}.")
    mu = jnp.asarray(state.mu)
    if mu.shape != c.batch or not jnp.issubdtype(mu.dtype, jnp.floating):
        raise ValueError(
            f"`state` must hold a float mu of the logits' batch shape {c.batch}, got "
            f"{mu.dtype}{list(mu.shape)}."
        )
    _checks.choice(feedback, "feedback", _FEEDBACK)
    tau = row_param(tau, "tau", c.batch, lambda v: v > 0, "> 0")
    eta = row_param(eta, "eta", c.batch, lambda v: v >= 0, ">= 0")
    return _mirostat_step(
        check_key(key, c.batch),
        c.logits,
        c.where,
        mu,
        tau,
        eta,
        axis=c.axis,
        feedback=feedback,
        pad_token=_decode.pad(pad_token),
        version=version,
        m=m,
    )


@partial(jax.jit, static_argnames=("axis", "feedback", "pad_token", "version", "m"))
def _mirostat_step(key, logits, where, mu, tau, eta, *, axis, feedback, pad_token, version, m):
    x = _decode.sanitize(logits, where, axis)
    batch = x.z.shape[:-1]
    dtype = jnp.promote_types(x.z.dtype, mu.dtype)
    tau, eta = (_decode.per_row(v, batch, dtype) for v in (tau, eta))
    bound = mu.astype(dtype)
    if version == 1:
        s_hat = _decode.zipf_fit(x, m)
        n = jnp.sum(x.d.valid, axis=-1).astype(dtype)
        log2_k = _mirostat_log2_k(bound, s_hat, n)
        k = jnp.clip(jnp.floor(jnp.exp2(log2_k)), 1.0, jnp.maximum(n, 1.0))
        keep = _threshold.largest_threshold(x.z, jnp.ones_like(x.z), k, x.d.valid)
    else:
        s_hat = None
        keep = (x.d.log_p >= (-bound * LN2)[..., None]) | _decode.most(x.z, x.d.valid, 1)
    bad = jnp.isnan(tau) | jnp.isnan(eta)
    z_trunc = jnp.where(bad[..., None], jnp.nan, jnp.where(keep & x.d.valid, x.z, -jnp.inf))
    token, fields = _decode.draw(_decode.row_keys(key, batch), z_trunc, x.d, pad_token)
    step = StepMetrics(*fields)
    observed = step.surprise_bits if feedback == "model" else step.truncated_surprise_bits
    new_mu = jnp.where(step.valid, bound - eta * (observed - tau), bound).astype(mu.dtype)
    k = jnp.where(step.valid, k, 0.0).astype(jnp.int32) if version == 1 else step.kept
    metrics = MirostatMetrics(*step, mu=mu, k=k, zipf_exponent=s_hat)
    return token, MirostatState(new_mu), metrics


def _mirostat_log2_k(mu, s_hat, n):
    """log2 of k = (eps 2^mu / (1 - N^-eps))^(1/s_hat), eps = s_hat - 1, clipped below at 0."""
    log_n = jnp.log(jnp.maximum(n, 1.0))
    eps = s_hat - 1.0
    flat = eps == 0.0
    g = jnp.where(flat, log_n, -jnp.expm1(-eps * log_n) / jnp.where(flat, 1.0, eps))
    # g > 0 for N > 1; g = 0 (log2 g = -inf, k -> inf, clipped to N = 1) for one token.
    log2_k = (mu - jnp.log2(g)) / jnp.maximum(s_hat, _MIN_EXPONENT)
    # One past log2 N, so that exp2 rounding cannot pull a k beyond N below N (clipped after).
    return jnp.clip(log2_k, 0.0, log_n / LN2 + 1.0)


def mirostat_v1(
    key: ArrayLike,
    logits: ArrayLike,
    state: MirostatState,
    tau: float | ArrayLike,
    *,
    eta: float | ArrayLike = 0.1,
    m: int = 100,
    feedback: str = "model",
    where: ArrayLike | None = None,
    axis: int = -1,
    pad_token: int = 0,
) -> tuple[jax.Array, MirostatState, MirostatMetrics]:
    r"""Mirostat (Basu et al. 2021, Algorithm 1): adaptive top-k holding the surprise at tau.

    Per row, with mu the state (bits, mu_0 = 2 tau) and N the number of included tokens:

    1. s_hat = `zipf_exponent` of the m largest probabilities; eps = s_hat - 1.
    2. k = (eps 2^mu / (1 - N^-eps))^(1 / s_hat): the rank whose surprise under the fitted
       Zipf law is mu. Computed as log2 k = (mu - log2 g) / s_hat with
       g = (1 - N^-eps) / eps = -expm1(-eps ln N) / eps (-> ln N at eps = 0), clipped to
       [0, log2 N] (s_hat -> 0 sends k to 1 or N, as v2 does on a flat row); k is truncated
       to an integer >= 1 (llama.cpp).
    3. Keep the top k tokens (ties with the k-th included: the exact k-th largest logit by
       bisection, no capacity), renormalize, draw x.
    4. mu <- mu - eta (S(x) - tau), S(x) = -log2 p(x) with ``feedback="model"`` (the paper's
       observed surprise, under the untruncated distribution: its running mean goes to tau) or
       -log2 q(x) with ``feedback="truncated"`` (llama.cpp: then H(q) goes to tau and the
       untruncated surprise settles higher).

    Departures from the released code, all documented choices: k = int(k) (the paper's script
    uses round(k) + 1, its notebook round(k)); m = 100 probabilities (99 ratios, as llama.cpp;
    the script fits 101); N counts the included tokens (the script hard-codes 50000). eta
    defaults to llama.cpp's 0.1; the paper's script uses 1. Temperature, if any, goes into
    ``logits`` first (llama.cpp applies its temperature before Mirostat).

    Args:
      key: one PRNG key, or one per row.
      logits: [..., V].
      state: `MirostatState` with mu of the batch shape (`MirostatState.initial`).
      tau: the target surprise in bits, > 0 (a number or per-row array).
      eta: the learning rate, >= 0 (a number or per-row array).
      m: probabilities in the Zipf fit (static int >= 2).
      feedback: ``"model"`` (default, the paper) or ``"truncated"`` (llama.cpp).
      where: optional boolean mask of included tokens.
      axis: the vocabulary axis.
      pad_token: the token of rows without an included token.

    Returns:
      ``(token, new_state, metrics)``: int32 tokens, the updated state (unchanged in rows
      without a token), and `MirostatMetrics` with ``k`` and ``zipf_exponent``.

    References:
      Basu, Ramachandran, Keskar, Varshney, "Mirostat: A Neural Text Decoding Algorithm that
      Directly Controls Perplexity", ICLR 2021.
    """
    m = static_int(m, "m", 2)
    return _mirostat(key, logits, state, tau, eta, feedback, where, axis, pad_token, 1, m)


def mirostat_v2(
    key: ArrayLike,
    logits: ArrayLike,
    state: MirostatState,
    tau: float | ArrayLike,
    *,
    eta: float | ArrayLike = 0.1,
    feedback: str = "model",
    where: ArrayLike | None = None,
    axis: int = -1,
    pad_token: int = 0,
) -> tuple[jax.Array, MirostatState, MirostatMetrics]:
    r"""Mirostat 2.0 (llama.cpp): keep the tokens with surprise <= mu, draw, update mu.

    Keep -log2 p(x) <= mu, i.e. p(x) >= 2^-mu (no sort: llama.cpp's sorted prefix is the same
    set), and the most probable token(s) when nothing else passes (mu < 0 keeps only the
    argmax); renormalize, draw x, and mu <- mu - eta (S(x) - tau) with the ``feedback`` surprise
    as in `mirostat_v1`. v1 cuts at the same surprise mu through a Zipf fit; v2 cuts directly.
    llama.cpp feeds back the truncated surprise (``feedback="truncated"``); the default
    ``"model"`` holds the observed (untruncated) cross-entropy at tau, the paper's target.

    Args:
      key: one PRNG key, or one per row.
      logits: [..., V].
      state: `MirostatState` with mu of the batch shape.
      tau: the target surprise in bits, > 0.
      eta: the learning rate, >= 0 (llama.cpp's default 0.1).
      feedback: ``"model"`` (default) or ``"truncated"`` (llama.cpp).
      where: optional boolean mask of included tokens.
      axis: the vocabulary axis.
      pad_token: the token of rows without an included token.

    Returns:
      ``(token, new_state, metrics)``; ``metrics.k`` is the number of tokens kept.

    References:
      llama.cpp, ``llama_sampler_init_mirostat_v2`` (src/llama-sampling.cpp); the rule appears
      in the Mirostat authors' notebook (Basu et al., ICLR 2021, Section 5.1 experiments).
    """
    return _mirostat(key, logits, state, tau, eta, feedback, where, axis, pad_token, 2)


# ----------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------


class Generation(NamedTuple):
    """The output of `generate`; per-step arrays are batch-major, [B, T, ...]."""

    tokens: jax.Array  # [B, T] int: the drawn tokens (``pad_token`` after EOS)
    mask: jax.Array  # [B, T] bool: the row was still generating (EOS itself included)
    metrics: Any  # the sampler's metrics, leaves [B, T, ...]
    aux: Any  # the step function's aux output, leaves [B, T, ...] (None when it has none)
    carry: Any  # the step function's final carry (e.g. the KV cache)
    state: Any  # the sampler's final state


def _select_rows(active: jax.Array, new, old):
    def pick(a, b):
        a, b = jnp.asarray(a), jnp.asarray(b)
        if a.shape[:1] != active.shape:
            raise ValueError(
                f"`state` leaves must have the batch size {active.shape[0]} first, got a leaf "
                f"of shape {a.shape}."
            )
        return jnp.where(active.reshape(active.shape + (1,) * (a.ndim - 1)), a, b)

    return jax.tree.map(pick, new, old)


def generate(
    key: ArrayLike,
    step_fn: StepFn,
    carry: Any,
    tokens: ArrayLike,
    num_steps: int,
    *,
    sampler: Sampler,
    state: Any = None,
    eos_token: int | None = None,
    pad_token: int = 0,
    row_ids: ArrayLike | None = None,
) -> Generation:
    r"""Autoregressive generation: a `jax.lax.scan` of ``step_fn`` and ``sampler``.

    Each of the ``num_steps`` steps calls ``step_fn(carry, last_tokens)``, which returns
    ``(logits [B, V], carry)`` or ``(logits, carry, aux)``; the carry is the model's own
    business (a KV cache, a position, a token history: `generate` never looks inside), so any
    cache layout works. Then ``sampler(keys, logits, state) -> (token, state, metrics)`` draws
    (`sampler`, or `mirostat_v1` / `mirostat_v2` with their parameters bound by
    `functools.partial`). Row b at step t draws with ``fold_in(fold_in(key, t), row_ids[b])``,
    so its tokens do not depend on the batch it runs in. After a row emits ``eos_token`` it
    emits ``pad_token``, its ``mask`` is False and its sampler state is frozen (the step
    function still runs on it: static shapes).

    Args:
      key: one PRNG key.
      step_fn: ``(carry, tokens [B]) -> (logits [B, V], carry[, aux])``.
      carry: the initial carry (after the prompt's prefill).
      tokens: [B] integer tokens fed to the first step (the prompt's last tokens).
      num_steps: the number of tokens to generate (static int >= 1).
      sampler: ``(keys [B], logits, state) -> (token [B], state, metrics)``.
      state: the sampler's initial state (leaves with the batch size first), e.g.
        `MirostatState.initial`; None for `sampler`.
      eos_token: optional end-of-sequence token.
      pad_token: the token emitted after EOS.
      row_ids: optional [B] integer row identities for the keys (default 0..B-1).

    Returns:
      `Generation` (tokens, mask, metrics, aux, carry, state).
    """
    tokens = jnp.asarray(tokens)
    if not jnp.issubdtype(tokens.dtype, jnp.integer) or tokens.ndim != 1:
        raise TypeError(
            f"`tokens` must be a [B] integer array, got {tokens.dtype}{list(tokens.shape)}."
        )
    num_steps = static_int(num_steps, "num_steps", 1)
    if not callable(step_fn):
        raise TypeError(f"`step_fn` must be callable, got {step_fn!r}.")
    if not callable(sampler):
        raise TypeError(f"`sampler` must be callable, got {sampler!r}.")
    pad_token = _decode.pad(pad_token)
    if eos_token is not None:
        eos_token = static_int(eos_token, "eos_token", 0)
    batch = tokens.shape[0]
    if row_ids is None:
        row_ids = jnp.arange(batch)
    row_ids = jnp.asarray(row_ids)
    if not jnp.issubdtype(row_ids.dtype, jnp.integer) or row_ids.shape != (batch,):
        raise ValueError(
            f"`row_ids` must be [{batch}] integers, got {row_ids.dtype}{list(row_ids.shape)}."
        )
    key = check_key(key, ())

    def body(loop, t):
        carry, state, last, done = loop
        out = step_fn(carry, last)
        if not isinstance(out, tuple) or len(out) not in (2, 3):
            raise TypeError("`step_fn` must return (logits, carry) or (logits, carry, aux).")
        logits, carry = out[0], out[1]
        aux = out[2] if len(out) == 3 else None
        step_key = jax.random.fold_in(key, t)
        keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(step_key, row_ids)
        token, new_state, metrics = sampler(keys, logits, state)
        active = ~done
        token = jnp.where(active, token, pad_token).astype(tokens.dtype)
        state = _select_rows(active, new_state, state)
        if eos_token is not None:
            done = done | (token == eos_token)
        return (carry, state, token, done), (token, active, metrics, aux)

    init = (carry, state, tokens, jnp.zeros((batch,), bool))
    (carry, state, _, _), (out, mask, metrics, aux) = jax.lax.scan(
        body, init, jnp.arange(num_steps)
    )

    def batch_major(a):
        return jnp.moveaxis(a, 0, 1) if jnp.ndim(a) >= 2 else a

    return Generation(
        tokens=batch_major(out),
        mask=batch_major(mask),
        metrics=jax.tree.map(batch_major, metrics),
        aux=jax.tree.map(batch_major, aux),
        carry=carry,
        state=state,
    )


# ----------------------------------------------------------------------------------------------
# Entropy-adaptive model switching
# ----------------------------------------------------------------------------------------------


class SwitchState(NamedTuple):
    """Per-row state of `entropy_switch`: a ring buffer of the last ``window`` entropies."""

    entropies: jax.Array  # [B, window] float32: per-step entropies in bits (ring buffer)
    steps: jax.Array  # [B] int32: entropies recorded so far
    dwell: jax.Array  # [B] int32: tokens generated by the current model since the last switch
    large: jax.Array  # [B] bool: the large model generates the next token

    @classmethod
    def initial(cls, batch_shape: int | tuple[int, ...], window: int = 5) -> SwitchState:
        """An empty window with every row on the small model.

        Args:
          batch_shape: the rows (an int or a tuple of ints).
          window: w, the number of recent entropies averaged (static int >= 1; 5 in
            secondary summaries of the paper).
        """
        shape = _decode.batch_shape(batch_shape)
        window = static_int(window, "window", 1)
        zeros = jnp.zeros(shape, jnp.int32)
        return cls(jnp.zeros((*shape, window), jnp.float32), zeros, zeros, jnp.zeros(shape, bool))


class SwitchMetrics(NamedTuple):
    """The aux output of an `entropy_switch` step, per row."""

    large: jax.Array  # bool: this token's logits came from the large model
    entropy_bits: jax.Array  # H_t of those logits, bits
    rolling_entropy_bits: jax.Array  # the window mean after this step, bits


def entropy_switch(
    small_step: StepFn, large_step: StepFn, threshold: float | ArrayLike, *, min_dwell: int = 1
) -> StepFn:
    r"""Entropy Adaptive Decoding (Simonds 2025): switch models on the rolling entropy.

    Returns a step function for `generate` with carry ``(SwitchState, small_carry,
    large_carry)``. Per step and row: the active model's logits give H_t = -sum p log2 p
    (bits, before any processor or temperature); the window holds the last w of them (fewer at
    the start: their mean); the row switches to the large model when the mean exceeds
    ``threshold`` and to the small one when it does not, but only after ``min_dwell`` tokens on
    the current model (hysteresis). The decision applies from the next token on; rows start on
    the small model. The aux output is `SwitchMetrics`; the fraction of steps with
    ``large`` True is the paper's large-model usage.

    Both step functions run at every step on every row, so both carries (KV caches) stay in
    sync and any cache layout works; the saving the paper reports (cost proportional to the
    large model's tokens) needs the rows on the small model dispatched without the large one,
    which static-shape batched decoding cannot do: this computes the policy and its usage.

    Args:
      small_step, large_step: ``(carry, tokens) -> (logits [B, V], carry)``, same vocabulary.
      threshold: the rolling-entropy threshold in bits (a number or a per-row array).
      min_dwell: tokens a model generates before the row may switch again (static int >= 1).

    Returns:
      ``step(carry, tokens) -> (logits, carry, SwitchMetrics)``; the logits are the active
      model's, float32 or wider, with NaN (garbage) at ``-inf``, vocabulary last.

    References:
      Simonds, "Entropy Adaptive Decoding: Dynamic Model Switching for Efficient Inference",
      arXiv 2502.06833.
    """
    if not (callable(small_step) and callable(large_step)):
        raise TypeError("`small_step` and `large_step` must be callables.")
    min_dwell = static_int(min_dwell, "min_dwell", 1)
    if isinstance(threshold, (bool, str)) or threshold is None:
        raise TypeError(f"`threshold` must be a number or a float array, got {threshold!r}.")
    if _checks.is_static_scalar(threshold):
        _checks.real_scalar(threshold, "threshold")

    def step(carry, tokens):
        state, small_carry, large_carry = carry
        if not isinstance(state, SwitchState):
            raise TypeError(f"`carry[0]` must be a SwitchState, got {type(state).__name__}.")
        small_logits, small_carry = small_step(small_carry, tokens)
        large_logits, large_carry = large_step(large_carry, tokens)
        _checks.same_shape(small_logits, large_logits, "small logits", "large logits")
        z, new_state, metrics = _switch_update(
            state, small_logits, large_logits, threshold, min_dwell=min_dwell
        )
        return z, (new_state, small_carry, large_carry), metrics

    return step


@partial(jax.jit, static_argnames="min_dwell")
def _switch_update(state, small_logits, large_logits, threshold, *, min_dwell):
    """One step of `entropy_switch` after both models ran: the active logits, the new state."""
    logits = jnp.where(state.large[..., None], large_logits, small_logits)
    x = _decode.sanitize(logits, None, -1)
    h = _masked.entropy_of(x.d, -1) / LN2
    window = state.entropies.shape[-1]
    slot = jnp.arange(window) == (state.steps % window)[..., None]
    entropies = jnp.where(slot, h[..., None].astype(jnp.float32), state.entropies)
    steps = state.steps + 1
    filled = jnp.arange(window) < jnp.minimum(steps, window)[..., None]
    rolling = jnp.sum(jnp.where(filled, entropies, 0.0), axis=-1) / jnp.minimum(steps, window)
    dwell = state.dwell + 1
    want_large = rolling > jnp.asarray(threshold, rolling.dtype)
    switch = (want_large != state.large) & (dwell >= min_dwell)
    new_state = SwitchState(
        entropies=entropies,
        steps=steps,
        dwell=jnp.where(switch, 0, dwell),
        large=jnp.where(switch, want_large, state.large),
    )
    metrics = SwitchMetrics(large=state.large, entropy_bits=h, rolling_entropy_bits=rolling)
    return x.z, new_state, metrics
