r"""Variational bounds on mutual information from a critic score matrix (nats).

Convention (as TFP's ``mutual_information``): for a batch of N joint pairs (x_i, y_i),
``scores[..., i, j] = f(x_i, y_j)``: rows index x, columns index y. The N diagonal entries are
samples of p(x, y) (the positives), the N (N - 1) off-diagonal ones samples of p(x) p(y) (the
negatives). ``scores`` may be rectangular [..., N, M >= N] (extra negatives in the columns beyond
N). Every bound takes

* ``positives``: boolean [..., N, M], True at the pairs drawn from p(x, y) (default: the diagonal
  j = i); every other valid entry is a negative;
* ``where``: boolean [..., N, M] (or broadcastable: ``[N, 1]`` masks rows, ``[1, M]`` columns),
  False at padding or pairs to ignore. Masked slots may hold garbage (NaN, inf): it never reaches
  a value or a gradient. For per-sample padding pass ``valid[:, None] & valid[None, :]``;
* ``axis_name``: inside ``jax.shard_map``, each device holds a block of rows [n, M] of the global
  matrix (device d rows [d n, (d + 1) n), the default positives shifted accordingly); every
  reduction over rows is psummed, so each device returns the global value;
* ``base``: logarithm base of the result (None: nats, 2: bits).

Notation: E_p is the mean over positives, E_q over negatives, LME = log-mean-exp, sp = softplus.
Sums of e^f always go through a shifted log-sum-exp, accumulated in float32 (float64 for float64
scores), so critic values of +-1e4 do not overflow; where a bound itself is e^(large) the value
is -inf and the gradient stays finite (that of the exponential capped at e^44 in float32).
A batch without a valid positive, or (for the bounds with a partition term) without a valid
negative, gives 0 with a zero gradient.

Training-only estimators (`js_bound`, `smile_bound`) return their value with the gradient of a
different objective attached, ``value = t + stop_gradient(v - t)``; `mine_bound` returns the DV
value with MINE's bias-corrected gradient. Each docstring says which.

References:
  Poole, Ozair, van den Oord, Alemi, Tucker, "On Variational Bounds of Mutual Information",
  ICML 2019. Belghazi et al., "Mutual Information Neural Estimation", ICML 2018. van den Oord,
  Li, Vinyals, "Representation Learning with Contrastive Predictive Coding", 2018. Nguyen,
  Wainwright, Jordan, "Estimating divergence functionals and the likelihood ratio by convex risk
  minimization", IEEE Trans. IT 2010. Song & Ermon, "Understanding the Limitations of
  Variational Mutual Information Estimators", ICLR 2020. Hjelm et al., "Learning deep
  representations by mutual information estimation and maximization", ICLR 2019.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from entreg import _checks, _scores
from entreg._typing import Array, ArrayLike, AxisName, Bool, Float
from entreg.aggregation import psum

_DIRECTIONS = ("rows", "columns", "both")


def _compiled(*static):
    """jax.jit of a bound's array math (validation included: errors are raised while tracing),
    so an eager call compiles one computation instead of one per primitive."""
    return functools.partial(jax.jit, static_argnames=("axis_name", *static))


def _nonempty(value: jax.Array, *masks: jax.Array, axis_name=None) -> jax.Array:
    """``value`` where every mask has an entry, else 0 (the discarded branch stays finite)."""
    ok = jnp.ones(value.shape, bool)
    for m in masks:
        ok = ok & (_scores.count(m, axis_name) > 0)
    return jnp.where(ok, value, 0.0)


def _tuba(s: jax.Array, sc: _scores.Scores, axis_name) -> jax.Array:
    """1 + E_p[s] - E_q[e^s] for already baseline-shifted scores s."""
    partition = _scores.exp_capped(_scores.log_mean_exp(s, sc.neg, axis_name))
    value = 1.0 + _scores.mean(s, sc.pos, axis_name) - partition
    return _nonempty(value, sc.pos, sc.neg, axis_name=axis_name)


def _dv(s: jax.Array, sc: _scores.Scores, axis_name, tau=None) -> jax.Array:
    """E_p[s] - log E_q[e^clip(s)] (clip to [-tau, tau] inside the partition term only)."""
    inner = s if tau is None else jnp.clip(s, -tau, tau)
    # (E_p - lse) + log n: the difference of the two large terms first, for accuracy at 1e4.
    lse = _scores.log_sum_exp(inner, sc.neg, (-2, -1), axis_name)
    log_n = jnp.log(jnp.maximum(_scores.count(sc.neg, axis_name), 1.0).astype(lse.dtype))
    value = (_scores.mean(s, sc.pos, axis_name) - lse) + log_n
    return _nonempty(value, sc.pos, sc.neg, axis_name=axis_name)


def _js_objective(sc: _scores.Scores, axis_name) -> jax.Array:
    """J(f) = E_p[-sp(-f)] - E_q[sp(f)] (the f-GAN Jensen-Shannon objective)."""
    joint = _scores.mean(jax.nn.log_sigmoid(sc.s), sc.pos, axis_name)
    marginal = _scores.mean(jax.nn.softplus(sc.s), sc.neg, axis_name)
    return joint - marginal


def barber_agakov_bound(
    log_conditional: Float[ArrayLike, "*batch n"],
    entropy: Float[ArrayLike, "*#batch"],
    *,
    where: Bool[ArrayLike, "*#batch n"] | None = None,
    axis_name: AxisName | None = None,
    base: float | None = None,
) -> Float[Array, "*batch"]:
    r"""Barber-Agakov lower bound I(X; Y) >= H(X) + E_p[log q(x | y)].

    Tight iff q(x | y) = p(x | y); needs H(X) known (or estimated, as in the ER bound with a
    KDE entropy, Rodriguez-Galvez et al. 2023).

    Args:
      log_conditional: log q(x_i | y_i) of the joint pairs [..., N].
      entropy: H(X) in nats, broadcastable to the batch shape [...].
      where: boolean [..., N], False at padding.
      axis_name: inside shard_map, the axis over which the pairs are sharded.
      base: logarithm base (None: nats).

    Returns:
      The bound [...], float32 or wider; H(X) alone when no pair is valid.

    References:
      Barber & Agakov, "The IM algorithm: a variational approach to information maximization",
      NeurIPS 2003.
    """
    lq = _checks.float_array(log_conditional, "log_conditional")
    if lq.ndim < 1:
        raise ValueError(f"`log_conditional` must be [..., N], got shape {lq.shape}.")
    h = jnp.asarray(entropy)
    if not jnp.issubdtype(h.dtype, jnp.floating):
        raise TypeError(f"`entropy` must be a floating-point value, got dtype {h.dtype}.")
    # A Python float entropy (weakly typed) follows log_conditional's dtype.
    h = h.astype(jnp.result_type(lq, h))
    h = _checks.broadcast(h, lq.shape[:-1], "entropy", "log_conditional batch")
    valid = jnp.ones(lq.shape, bool)
    if where is not None:
        valid = _checks.broadcast_bool(where, lq.shape, "where", "log_conditional")
    lq = jnp.where(valid, lq, 0.0)
    return _checks.in_base(h + _scores.mean(lq[..., None, :], valid[..., None, :], axis_name), base)


def tuba_bound(
    scores: Float[ArrayLike, "*batch n m"],
    log_baseline: Float[ArrayLike, "*#batch m"],
    *,
    positives: Bool[ArrayLike, "*#batch #n #m"] | None = None,
    where: Bool[ArrayLike, "*#batch #n #m"] | None = None,
    axis_name: AxisName | None = None,
    base: float | None = None,
) -> Float[Array, "*batch"]:
    r"""Tractable unnormalized Barber-Agakov bound (TUBA) with a baseline a(y) > 0.

        I >= 1 + E_p[f(x, y) - log a(y)] - E_q[e^f(x, y) / a(y)]

    tight at f* = log a(y) + log r(x, y), r = p(x, y) / (p(x) p(y)). The baseline belongs to y,
    i.e. to the COLUMNS of ``scores`` (Poole et al.'s notebook subtracts it per row because its
    separable critic puts y on the rows). The batch value is unbiased for the bound.

    Args:
      scores: critic scores [..., N, M], S[i, j] = f(x_i, y_j).
      log_baseline: log a(y_j) per column [..., M].
      positives, where, axis_name, base: see the module docstring.

    Returns:
      The bound [...] in nats (or ``base``), float32 or wider.
    """
    return _checks.in_base(_tuba_bound(scores, log_baseline, positives, where, axis_name), base)


@_compiled()
def _tuba_bound(scores, log_baseline, positives, where, axis_name):
    sc = _scores.prepare(scores, positives, where, axis_name)
    la = _checks.float_array(log_baseline, "log_baseline")
    la = _checks.broadcast(la, (*sc.s.shape[:-2], sc.s.shape[-1]), "log_baseline", "columns")
    la = jnp.where(jnp.any(sc.valid, axis=-2), la, 0.0)[..., None, :]
    return _tuba(sc.s - la, sc, axis_name)


def nwj_bound(
    scores: Float[ArrayLike, "*batch n m"],
    *,
    positives: Bool[ArrayLike, "*#batch #n #m"] | None = None,
    where: Bool[ArrayLike, "*#batch #n #m"] | None = None,
    axis_name: AxisName | None = None,
    base: float | None = None,
) -> Float[Array, "*batch"]:
    r"""Nguyen-Wainwright-Jordan bound (f-GAN KL, MINE-f): TUBA with a(y) = e.

        I_NWJ = E_p[f] - e^{-1} E_q[e^f],   optimal critic f* = 1 + log r

    The batch value is an unbiased estimate of the bound (it is linear in the two means); its
    variance at the optimum is (e^{D_2(p || q)} - 1) / (#negatives), which grows at least like
    e^I (Song & Ermon 2020). A critic trained for JS or DV (optimum log r + c) must be shifted
    first: `js_bound` evaluates NWJ(f + 1).

    Args:
      scores, positives, where, axis_name, base: see the module docstring.

    Returns:
      The bound [...]; -inf when E_q[e^f] overflows (the gradient stays finite).
    """
    return _checks.in_base(_nwj_bound(scores, positives, where, axis_name), base)


@_compiled()
def _nwj_bound(scores, positives, where, axis_name):
    sc = _scores.prepare(scores, positives, where, axis_name)
    return _tuba(sc.s - 1.0, sc, axis_name)


def dv_bound(
    scores: Float[ArrayLike, "*batch n m"],
    *,
    positives: Bool[ArrayLike, "*#batch #n #m"] | None = None,
    where: Bool[ArrayLike, "*#batch #n #m"] | None = None,
    axis_name: AxisName | None = None,
    base: float | None = None,
) -> Float[Array, "*batch"]:
    r"""Donsker-Varadhan bound: I >= E_p[f] - log E_q[e^f], optimum f = log r + c.

    Invariant to f -> f + c and >= `nwj_bound` for every critic (log z <= z / e). The batch
    value E_p[f] - LME_q(f) is NOT a lower bound in expectation: E[log Z_hat] <= log Z, so it is
    biased upward (``dv_upper_lower_bound`` in Song & Ermon's code). `mine_bound` reports it
    with a debiased gradient.

    Args:
      scores, positives, where, axis_name, base: see the module docstring.

    Returns:
      The batch value [...].
    """
    return _checks.in_base(_dv_bound(scores, positives, where, axis_name), base)


@_compiled()
def _dv_bound(scores, positives, where, axis_name):
    sc = _scores.prepare(scores, positives, where, axis_name)
    return _dv(sc.s, sc, axis_name)


class MineState(NamedTuple):
    """MINE's moving average of the partition term E_q[e^f], kept in log space.

    ``log_partition`` is the log of the bias-corrected EMA (meaningless while ``count`` is 0);
    ``count`` the number of updates. Start from ``MineState.init()``; it is state, not a
    parameter, and never receives a gradient.
    """

    log_partition: jax.Array
    count: jax.Array  # type: ignore[assignment]  # a field named like tuple.count, kept for the API

    @classmethod
    def init(cls, dtype=jnp.float32) -> MineState:
        """The empty state; ``dtype`` of the average (float32, or float64 under x64)."""
        return cls(jnp.zeros((), dtype), jnp.zeros((), jnp.int32))


def mine_bound(
    scores: Float[ArrayLike, "*batch n m"],
    state: MineState | None = None,
    *,
    decay: float = 0.99,
    positives: Bool[ArrayLike, "*#batch #n #m"] | None = None,
    where: Bool[ArrayLike, "*#batch #n #m"] | None = None,
    axis_name: AxisName | None = None,
    base: float | None = None,
) -> tuple[Float[Array, "*batch"], MineState]:
    r"""MINE (Belghazi et al. 2018): the DV value with a moving-average-corrected gradient.

    The DV batch gradient E_B[grad f] - E_B[e^f grad f] / E_B[e^f] is biased by the ratio; MINE
    replaces the denominator by a moving average m of E_B[e^f] across batches (Sec. 3.2):

        value = E_p[f] - LME_q(f)   (the batch DV),
        grad  = E_p[grad f] - E_q[e^f grad f] / m,
        m_t   = bias-corrected EMA of E_q[e^f] with rate 1 - decay, the current batch included

    so the first step is plain DV. Departures from public code, on purpose: the EMA is debiased
    (no arbitrary m_0 = 1) and kept in log space (no overflow); Song & Ermon's
    ``mine_lower_bound`` returns the batch mean instead of the updated EMA as the new buffer.
    decay = 0.99 is the rate 0.01 of the MINE reproduction most often used; decay = 0 is DV.

    Args:
      scores, positives, where, axis_name, base: see the module docstring.
      state: the previous `MineState` (None: a fresh one). Under vmap, one state per batch.
      decay: EMA decay in [0, 1).

    Returns:
      ``(value [...], new_state)``; a batch without positives or negatives leaves the state
      unchanged.
    """
    decay = _checks.real_scalar(decay, "decay", minimum=0.0)
    if decay >= 1.0:
        raise ValueError(f"`decay` must be in [0, 1), got {decay}.")
    if state is None:
        state = MineState.init()
    if not isinstance(state, MineState):
        raise TypeError(f"`state` must be a MineState, got {type(state).__name__}.")
    value, new_state = _mine_bound(scores, state, positives, where, axis_name, decay)
    return _checks.in_base(value, base), new_state


@_compiled("decay")
def _mine_bound(scores, state, positives, where, axis_name, decay):
    sc = _scores.prepare(scores, positives, where, axis_name)
    lme = _scores.log_mean_exp(sc.s, sc.neg, axis_name)
    ok = (_scores.count(sc.pos, axis_name) > 0) & (_scores.count(sc.neg, axis_name) > 0)
    count = state.count + 1
    # m_n = m_{n-1} + w (x_n - m_{n-1}), w = (1 - d) / (1 - d^n): w = 1 at the first update.
    dtype = jnp.promote_types(sc.s.dtype, state.log_partition.dtype)
    w = (1.0 - decay) / (1.0 - decay ** count.astype(dtype))
    w = jnp.minimum(w, 1.0)
    batch = jax.lax.stop_gradient(jnp.where(ok, lme, 0.0))
    first = (state.count == 0) | (decay == 0.0)
    log_keep = jnp.log1p(-jnp.where(first, 0.0, w)) + state.log_partition
    log_m = jnp.where(first, batch, jnp.logaddexp(log_keep, jnp.log(w) + batch))
    mean_p = _scores.mean(sc.s, sc.pos, axis_name)
    # e^lme / m: the gradient of E_q[e^f] divided by the running average.
    ratio = jnp.exp(jnp.where(ok & (lme > -jnp.inf), lme - log_m, -jnp.inf))
    surrogate = mean_p - ratio
    value = jnp.where(ok, _scores.with_value(surrogate, mean_p - lme), 0.0)
    new_state = MineState(
        jnp.where(ok, log_m, state.log_partition).astype(state.log_partition.dtype),
        jnp.where(ok, count, state.count).astype(jnp.int32),
    )
    return value, new_state


def infonce_bound(
    scores: Float[ArrayLike, "*batch n m"],
    *,
    direction: str = "rows",
    positives: Bool[ArrayLike, "*#batch #n #m"] | None = None,
    where: Bool[ArrayLike, "*#batch #n #m"] | None = None,
    axis_name: AxisName | None = None,
    base: float | None = None,
) -> Float[Array, "*batch"]:
    r"""InfoNCE / CPC bound (van den Oord et al. 2018).

        rows:     I >= E_(i, j) positive [ S_ij - log (1 / K_i) sum_k e^{S_ik} ]

    the mean over positives of the log-softmax of each positive against its whole row (itself
    included, normaliser log K_i, K_i the valid entries of row i: N for a square batch; log N,
    not log(N - 1)). ``direction="columns"`` normalises over x for each y (the column),
    ``"both"`` averages the two (CLIP's symmetric loss); each is a valid bound. It equals
    log N minus the mean softmax cross-entropy with the positives as labels.

    Per batch and for any critic the value is <= max_i log K_i (log N for a square batch),
    reached only as S_ii - S_ij -> inf; it is invariant to adding a constant per row (rows) or
    per column (columns). It is a lower bound in expectation over batches, tight only as
    N -> inf: report log N next to every InfoNCE number.

    Args:
      scores: [..., N, M]; positives, where, axis_name, base: see the module docstring.
      direction: "rows", "columns" or "both".

    Returns:
      The bound [...] in nats (or ``base``); -inf only when a positive score is -inf.
    """
    direction = _checks.choice(direction, "direction", _DIRECTIONS)
    return _checks.in_base(_infonce_bound(scores, positives, where, axis_name, direction), base)


@_compiled("direction")
def _infonce_bound(scores, positives, where, axis_name, direction):
    sc = _scores.prepare(scores, positives, where, axis_name)

    def one(axis: int):
        rows_sharded = axis_name if axis == -2 else None
        lse = _scores.log_sum_exp(sc.s, sc.valid, axis, rows_sharded)
        n = psum(jnp.sum(sc.valid, axis=axis, dtype=lse.dtype), rows_sharded)
        lse, log_n = jnp.expand_dims(lse, axis), jnp.expand_dims(jnp.log(jnp.maximum(n, 1.0)), axis)
        ok = jnp.isfinite(lse)
        # (S_ij - lse) + log K: the difference of the two large terms first.
        term = jnp.where(ok, (sc.s - jnp.where(ok, lse, 0.0)) + log_n, -jnp.inf)
        return _scores.mean(term, sc.pos, axis_name)

    if direction == "rows":
        return one(-1)
    if direction == "columns":
        return one(-2)
    return 0.5 * (one(-1) + one(-2))


def interpolated_bound(
    scores: Float[ArrayLike, "*batch n n"],
    log_baseline: Float[ArrayLike, "*#batch n"],
    alpha_logit: Float[ArrayLike, "*#batch"],
    *,
    where: Bool[ArrayLike, "*#batch n"] | None = None,
    base: float | None = None,
) -> Float[Array, "*batch"]:
    r"""Poole et al.'s interpolated bound I_alpha between InfoNCE and TUBA.

    Multi-sample TUBA with the baseline

        a(y; x_1..K) = alpha (1 / K) sum_k e^{f(x_k, y)} + (1 - alpha) q(y),
        alpha = sigmoid(alpha_logit)

    in the leave-one-out batch form of the paper's code: for y_j and a held-out x_k the
    baseline averages e^{f(x_i, y_j)} over the K = N - 1 other x's (computed in log space with
    a stable leave-one-out log-sum-exp). The joint term averages f(x_j, y_j) - log a(y_j; x_{-k})
    over k != j; the marginal term pairs y_j with x_i, i != j, under a(y_j; x_{-j}):

        I_alpha = 1 + mean_{k != j} [f_jj - log a_j^{-k}] - mean_{i != j} e^{f_ij} / a_j^{-j}

    alpha -> 0 (logit -> -inf) is `tuba_bound` with a = q; alpha -> 1 approaches InfoNCE (Poole
    et al.'s notebook docstring states these limits the other way round). For any critic the
    value is <= 1 + log(K / alpha); the notebook advises small alpha for estimation and
    InfoNCE for representation learning.

    Args:
      scores: square [..., N, N], S[i, j] = f(x_i, y_j), positives on the diagonal.
      log_baseline: log q(y_j) [..., N].
      alpha_logit: logit of alpha (a scalar or [...]; may be learned).
      where: boolean [..., N] per-sample validity (padding); K counts the valid samples - 1.
      base: logarithm base.

    Returns:
      The bound [...]; 0 with fewer than two valid samples.
    """
    return _checks.in_base(_interpolated_bound(scores, log_baseline, alpha_logit, where), base)


@jax.jit
def _interpolated_bound(scores, log_baseline, alpha_logit, where):
    s = _checks.float_array(scores, "scores")
    if s.ndim < 2 or s.shape[-1] != s.shape[-2]:
        raise ValueError(f"`scores` must be square [..., N, N], got shape {s.shape}.")
    n = s.shape[-1]
    batch = s.shape[:-2]
    keep = jnp.ones((*batch, n), bool)
    if where is not None:
        keep = _checks.broadcast_bool(where, (*batch, n), "where", "samples [..., N]")
    log_q = _checks.broadcast(
        _checks.float_array(log_baseline, "log_baseline"), (*batch, n), "log_baseline", "samples"
    )
    logit = _checks.broadcast(
        _checks.float_array(alpha_logit, "alpha_logit"), batch, "alpha_logit", "batch"
    )
    pairs = keep[..., :, None] & keep[..., None, :]
    # Rows of t index y_j, columns x_k: the baseline of y_j sums over a row.
    t = jnp.where(pairs, jnp.swapaxes(s, -1, -2), 0.0)
    log_q = jnp.where(keep, log_q, 0.0)
    lse = _scores.log_sum_exp(t, pairs, -1)
    top = jnp.argmax(jnp.where(pairs, t, -jnp.inf), axis=-1)
    is_top = jnp.arange(n) == top[..., None]
    # Without the top entry the rest is summed directly; any other removal takes at most half
    # of the total, so lse + log1p(-e^(t - lse)) is well conditioned there.
    rest = _scores.log_sum_exp(t, pairs & ~is_top, -1)
    gap = jnp.where(pairs & ~is_top, t - lse[..., None], -1.0)
    loo = jnp.where(is_top, rest[..., None], lse[..., None] + jnp.log1p(-jnp.exp(gap)))
    k = jnp.sum(keep, axis=-1, dtype=t.dtype) - 1.0
    lme_loo = loo - jnp.log(jnp.maximum(k, 1.0))[..., None, None]
    log_a = jnp.logaddexp(
        jax.nn.log_sigmoid(logit)[..., None, None] + lme_loo,
        jax.nn.log_sigmoid(-logit)[..., None, None] + log_q[..., :, None],
    )
    offdiag = pairs & ~jnp.eye(n, dtype=bool)
    diag_t = jnp.diagonal(t, axis1=-2, axis2=-1)
    joint = _scores.mean(diag_t[..., :, None] - log_a, offdiag)
    a_self = jnp.diagonal(log_a, axis1=-2, axis2=-1)
    marginal = _scores.exp_capped(_scores.log_mean_exp(t - a_self[..., :, None], offdiag))
    return jnp.where(k >= 1, 1.0 + joint - marginal, 0.0)


def js_bound(
    scores: Float[ArrayLike, "*batch n m"],
    *,
    positives: Bool[ArrayLike, "*#batch #n #m"] | None = None,
    where: Bool[ArrayLike, "*#batch #n #m"] | None = None,
    axis_name: AxisName | None = None,
    base: float | None = None,
) -> Float[Array, "*batch"]:
    r"""Poole et al.'s I_JS: train the critic on the f-GAN Jensen-Shannon objective, report NWJ.

        J(f) = E_p[-sp(-f)] - E_q[sp(f)],   maximiser f* = log r,   sup J = 2 JSD - 2 log 2
        value = NWJ(f + 1) = 1 + E_p[f] - E_q[e^f],   gradient = grad J

    (value = J + stop_gradient(NWJ(f + 1) - J)). The shift matters: NWJ's optimum is 1 + log r,
    so NWJ(f) of the JS-optimal critic is I - 1/e. Poole et al.'s and Song & Ermon's
    ``js_lower_bound`` report NWJ(f), low by 1/e = 0.368 nats; TFP's docstring calls 1 + log r
    the JS optimum. `dv_bound` of the same critic needs no shift (but is biased upward).

    Args:
      scores, positives, where, axis_name, base: see the module docstring.

    Returns:
      The NWJ(f + 1) value [...] carrying the gradient of J (training-only estimator).
    """
    return _checks.in_base(_js_bound(scores, positives, where, axis_name), base)


@_compiled()
def _js_bound(scores, positives, where, axis_name):
    sc = _scores.prepare(scores, positives, where, axis_name)
    value = _scores.with_value(_js_objective(sc, axis_name), _tuba(sc.s, sc, axis_name))
    return _nonempty(value, sc.pos, sc.neg, axis_name=axis_name)


def jsd_bound(
    scores: Float[ArrayLike, "*batch n m"],
    *,
    positives: Bool[ArrayLike, "*#batch #n #m"] | None = None,
    where: Bool[ArrayLike, "*#batch #n #m"] | None = None,
    axis_name: AxisName | None = None,
    base: float | None = None,
) -> Float[Array, "*batch"]:
    r"""Deep InfoMax's Jensen-Shannon MI estimator (Hjelm et al. 2019), value and gradient.

        E_p[log 2 - sp(-f)] - E_q[sp(f) - log 2] = J(f) + 2 log 2
            <= KL(p || m) + KL(q || m) = 2 JSD(p(x, y) || p(x) p(y)) <= 2 log 2

    (m = (p + q) / 2), reached at f = log r. It bounds the Jensen-Shannon divergence between the
    joint and the product of marginals, not the KL (the MI): it is a training objective that
    rises and falls with the MI, saturating at 2 log 2 = 1.386 nats. Its gradient is the f-GAN
    JS gradient (`js_bound` trains on the same one).

    Args:
      scores, positives, where, axis_name, base: see the module docstring.

    Returns:
      The estimate [...] in [-inf, 2 log 2].
    """
    return _checks.in_base(_jsd_bound(scores, positives, where, axis_name), base)


@_compiled()
def _jsd_bound(scores, positives, where, axis_name):
    sc = _scores.prepare(scores, positives, where, axis_name)
    value = _js_objective(sc, axis_name) + 2.0 * math.log(2.0)
    return _nonempty(value, sc.pos, sc.neg, axis_name=axis_name)


def smile_bound(
    scores: Float[ArrayLike, "*batch n m"],
    *,
    tau: float | None = 5.0,
    positives: Bool[ArrayLike, "*#batch #n #m"] | None = None,
    where: Bool[ArrayLike, "*#batch #n #m"] | None = None,
    axis_name: AxisName | None = None,
    base: float | None = None,
) -> Float[Array, "*batch"]:
    r"""SMILE (Song & Ermon 2020): DV with the partition term's critic clipped to [-tau, tau].

        value = E_p[f] - log E_q[clip(e^f, e^-tau, e^tau)],   gradient = grad J (f-GAN JS)

    The joint term uses the unclipped f. Clipping bounds the partition estimate in
    [e^-tau, e^tau], so its variance over n negatives is <= (e^tau - e^-tau)^2 / (4 n)
    (Popoviciu) whatever the MI, at the cost of a bias; tau = None (no clipping) is DV on a
    JS-trained critic. Song & Ermon run tau in {1, 5, inf}; 5 is the default here.

    Args:
      scores, positives, where, axis_name, base: see the module docstring.
      tau: clipping threshold > 0, or None for no clipping.

    Returns:
      The clipped DV value [...] carrying the gradient of J (training-only estimator).
    """
    if tau is not None:
        tau = _checks.real_scalar(tau, "tau", allow_inf=True)
        if not tau > 0:
            raise ValueError(f"`tau` must be > 0 (or None), got {tau}.")
        tau = None if math.isinf(tau) else tau
    return _checks.in_base(_smile_bound(scores, positives, where, axis_name, tau), base)


@_compiled("tau")
def _smile_bound(scores, positives, where, axis_name, tau):
    sc = _scores.prepare(scores, positives, where, axis_name)
    value = _scores.with_value(_js_objective(sc, axis_name), _dv(sc.s, sc, axis_name, tau))
    return _nonempty(value, sc.pos, sc.neg, axis_name=axis_name)
