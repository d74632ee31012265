"""Divergences between two categorical distributions given by logits.

Same conventions as `entreg.categorical`: logits along ``axis`` (-inf excludes a category),
``where`` shared by both distributions (True = included), reduction over ``axis`` only,
float32 accumulation for half-precision inputs, natural logarithms.

Argument order: ``kl_divergence(p_logits, q_logits)`` is KL(p || q), the expectation under the
FIRST argument. optax's ``kl_divergence(log_predictions, targets)`` is KL(targets || predictions),
i.e. the other way round.

Infinite divergences (p puts mass where q has none) return +inf; their gradient is that of the
finite remainder, never NaN.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from entreg import _checks, _masked
from entreg._typing import Array, ArrayLike, Bool, Float

_KINDS = ("kl", "reverse_kl", "js", "squared_hellinger", "total_variation", "chi2", "alpha")


def _pair(p_logits, q_logits, where, axis):
    p_logits, valid, axis = _masked.prepare(p_logits, where, axis, "p_logits")
    q_logits = _checks.float_array(q_logits, "q_logits")
    _checks.same_shape(p_logits, q_logits, "p_logits", "q_logits")
    p = _masked.log_softmax(p_logits, valid, axis)
    q = _masked.log_softmax(q_logits, valid, axis)
    return p, q, axis


def _kl(p: _masked.Dist, q: _masked.Dist, axis: int) -> jax.Array:
    both = p.valid & q.valid
    finite = jnp.sum(jnp.where(both, p.p * (p.log_p - q.log_p), 0.0), axis=axis)
    return _masked.plus_inf_where(finite, jnp.any(p.valid & ~q.valid, axis=axis))


def kl_divergence(
    p_logits: Float[ArrayLike, "*batch v"],
    q_logits: Float[ArrayLike, "*batch v"],
    *,
    axis: int = -1,
    where: Bool[ArrayLike, "*batch v"] | Bool[ArrayLike, "*batch"] | None = None,
) -> Float[Array, "*batch"]:
    r"""Kullback-Leibler divergence KL(p || q) = sum_j p_j (log p_j - log q_j).

    p = softmax(p_logits), q = softmax(q_logits). Terms with p_j = 0 contribute 0; if p_j > 0
    where q_j = 0 (a -inf q-logit) the value is +inf with a finite gradient. KL >= 0, with
    equality iff p = q (Gibbs' inequality).

    Examples:
      >>> import jax.numpy as jnp
      >>> import entreg
      >>> p, q = jnp.log(jnp.array([0.5, 0.5, 0.0])), jnp.log(jnp.array([0.25, 0.25, 0.5]))
      >>> print(f"{entreg.kl_divergence(p, q):.4f} {entreg.kl_divergence(q, p)}")  # log 2; inf
      0.6931 inf
    """
    p, q, axis = _pair(p_logits, q_logits, where, axis)
    return _kl(p, q, axis)


def _js(p: _masked.Dist, q: _masked.Dist, axis: int) -> jax.Array:
    both = p.valid & q.valid
    # log m, m = (p + q) / 2, from whichever of log p, log q exist (safe placeholders elsewhere).
    log_m = jnp.where(
        both,
        jnp.logaddexp(p.log_p, q.log_p),
        jnp.where(p.valid, p.log_p, q.log_p),
    ) - math.log(2.0)
    terms = jnp.where(p.valid, p.p * (p.log_p - log_m), 0.0) + jnp.where(
        q.valid, q.p * (q.log_p - log_m), 0.0
    )
    return 0.5 * jnp.sum(terms, axis=axis)


def js_divergence(
    p_logits: Float[ArrayLike, "*batch v"],
    q_logits: Float[ArrayLike, "*batch v"],
    *,
    axis: int = -1,
    where: Bool[ArrayLike, "*batch v"] | Bool[ArrayLike, "*batch"] | None = None,
) -> Float[Array, "*batch"]:
    r"""Jensen-Shannon divergence JS = KL(p || m)/2 + KL(q || m)/2, m = (p + q)/2 (Lin 1991).

    Symmetric, always finite, 0 <= JS <= log 2.
    """
    p, q, axis = _pair(p_logits, q_logits, where, axis)
    return _js(p, q, axis)


def _squared_hellinger(p, q, axis):
    sqrt_p = jnp.where(p.valid, jnp.exp(0.5 * p.log_p), 0.0)
    sqrt_q = jnp.where(q.valid, jnp.exp(0.5 * q.log_p), 0.0)
    return jnp.sum((sqrt_p - sqrt_q) ** 2, axis=axis)


def _total_variation(p, q, axis):
    diff = p.p - q.p
    # |p - q| is not differentiable at p = q; its gradient there is taken as 0. A difference
    # within round-off of p + q counts as a tie: jit may fuse the two softmaxes differently,
    # and a sign taken from round-off would make the gradient of TV(p, p) depend on it.
    tie = jnp.abs(diff) <= 8.0 * jnp.finfo(diff.dtype).eps * (p.p + q.p)
    return 0.5 * jnp.sum(_masked.abs_zero_grad(jnp.where(tie, 0.0, diff)), axis=axis)


def _log_max(dtype) -> float:
    return math.log(jnp.finfo(dtype).max)


def _chi2(p, q, axis):
    # sum_j q_j (t_j - 1)^2 with t = p/q: non-negative terms, so no cancellation near p = q.
    r = jnp.where(p.valid & q.valid, p.log_p - q.log_p, 0.0)
    big = r > 1.0
    small_term = q.p * jnp.expm1(jnp.where(big, 0.0, r)) ** 2
    # For r > 1: log(q (e^r - 1)^2) = log q + 2 (r + log1p(-e^-r)); overflow -> +inf, no gradient.
    r_big = jnp.where(big, r, 2.0)
    log_term = q.log_p + 2.0 * (r_big + jnp.log1p(-jnp.exp(-r_big)))
    overflow = big & (log_term > _log_max(log_term.dtype))
    big_term = jnp.exp(jnp.where(overflow, 0.0, log_term))
    term = jnp.where(big, jnp.where(overflow, 0.0, big_term), small_term)
    # q > 0 where p = 0 contributes q_j (t_j - 1)^2 = q_j.
    term = jnp.where(p.valid, term, q.p)
    finite = jnp.sum(jnp.where(q.valid, term, 0.0), axis=axis)
    infinite = jnp.any(p.valid & ~q.valid, axis=axis) | jnp.any(overflow, axis=axis)
    return _masked.plus_inf_where(finite, infinite)


def _weighted_expm1(w: _masked.Dist, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """w_j expm1(x_j) with full precision; returns (terms, overflowed) (+inf terms -> flagged)."""
    big = x > 1.0
    log_big = w.log_p + jnp.where(big, x, 0.0)
    overflow = big & (log_big > _log_max(log_big.dtype))
    big_term = jnp.exp(jnp.where(overflow, 0.0, log_big)) - w.p
    small_term = w.p * jnp.expm1(jnp.where(big, 0.0, x))
    return jnp.where(big, jnp.where(overflow, 0.0, big_term), small_term), overflow


def _alpha(p, q, axis, alpha: float):
    if alpha == 1.0:
        return _kl(p, q, axis)
    if alpha == 0.0:
        return _kl(q, p, axis)
    both = p.valid & q.valid
    r = jnp.where(both, p.log_p - q.log_p, 0.0)
    # sum p^a q^(1-a) - 1, centred on the distribution whose limit is nearer (no cancellation):
    # = sum_both p expm1((a-1) r) - P0  or  sum_both q expm1(a r) - Q0,
    # with P0 (Q0) the mass of p (q) where the other is zero.
    if alpha >= 0.5:
        terms, overflow = _weighted_expm1(p, (alpha - 1.0) * r)
        outside = jnp.sum(jnp.where(p.valid & ~q.valid, p.p, 0.0), axis=axis)
    else:
        terms, overflow = _weighted_expm1(q, alpha * r)
        outside = jnp.sum(jnp.where(q.valid & ~p.valid, q.p, 0.0), axis=axis)
    s_minus_1 = jnp.sum(jnp.where(both, terms, 0.0), axis=axis) - outside
    infinite = jnp.any(both & overflow, axis=axis)
    if alpha > 1.0:
        infinite |= jnp.any(p.valid & ~q.valid, axis=axis)
    elif alpha < 0.0:
        infinite |= jnp.any(q.valid & ~p.valid, axis=axis)
    return _masked.plus_inf_where(s_minus_1 / (alpha * (alpha - 1.0)), infinite)


def f_divergence(
    p_logits: Float[ArrayLike, "*batch v"],
    q_logits: Float[ArrayLike, "*batch v"],
    kind: str,
    *,
    alpha: float | None = None,
    axis: int = -1,
    where: Bool[ArrayLike, "*batch v"] | Bool[ArrayLike, "*batch"] | None = None,
) -> Float[Array, "*batch"]:
    r"""f-divergence D_f(p || q) = sum_j q_j f(p_j / q_j) (Csiszar 1967; Ali & Silvey 1966).

    ``kind`` selects f (t = p/q), each evaluated in the log domain:

    ================== ===================================== ==============================
    kind               f(t)                                  closed form
    ================== ===================================== ==============================
    kl                 t log t                               KL(p || q)
    reverse_kl         -log t                                KL(q || p)
    js                 (t log t - (1+t) log((1+t)/2)) / 2     Jensen-Shannon, <= log 2
    squared_hellinger  (sqrt t - 1)^2                        sum (sqrt p - sqrt q)^2, in [0, 2]
    total_variation    |t - 1| / 2                           sum |p - q| / 2, in [0, 1]
    chi2               (t - 1)^2                             Pearson sum (p - q)^2 / q
    alpha              (t^a - a t - (1-a)) / (a (a-1))       (sum p^a q^(1-a) - 1)/(a (a-1))
    ================== ===================================== ==============================

    squared_hellinger is NOT halved (some authors define H^2 = sum (sqrt p - sqrt q)^2 / 2).
    The alpha family (Amari's parameterization as in Cichocki & Amari 2010) has the limits
    alpha -> 1: KL(p || q) and alpha -> 0: KL(q || p), taken exactly at those values and without
    cancellation next to them; ``alpha`` must be a Python number. The total-variation gradient
    uses sign(p_j - q_j), i.e. 0 where p_j = q_j.

    Infinite values: kl, chi2 and alpha > 1 are +inf where p_j > 0 = q_j; reverse_kl and alpha < 0
    where q_j > 0 = p_j; their gradients stay finite.
    """
    _checks.choice(kind, "kind", _KINDS)
    if kind == "alpha":
        if alpha is None:
            raise ValueError("`alpha` is required when kind='alpha'.")
        alpha = _checks.real_scalar(alpha, "alpha")
    elif alpha is not None:
        raise ValueError(f"`alpha` is only used with kind='alpha', got kind={kind!r}.")
    p, q, axis = _pair(p_logits, q_logits, where, axis)
    if kind == "alpha":
        assert alpha is not None  # validated above
        return _alpha(p, q, axis, alpha)
    return _BY_KIND[kind](p, q, axis)


_BY_KIND = {
    "kl": _kl,
    "reverse_kl": lambda p, q, axis: _kl(q, p, axis),
    "js": _js,
    "squared_hellinger": _squared_hellinger,
    "total_variation": _total_variation,
    "chi2": _chi2,
}
