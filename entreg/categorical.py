"""Entropies of categorical distributions given by logits.

Conventions shared by every function here (and by `entreg.divergences`):

* ``logits`` are unnormalized log-probabilities along ``axis``; log-probabilities are valid logits.
  A logit of ``-inf`` excludes its category.
* ``where`` (True = included, as in optax) has the shape of the logits (per-category mask) or their
  batch shape (whole-row mask). A row with no included category returns 0 with a zero gradient.
* The result is reduced over ``axis`` only; batch axes are untouched.
* float16 / bfloat16 inputs are accumulated and returned in float32; float32 and float64 inputs
  keep their dtype.
* Natural logarithms (nats).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from entreg import _checks, _masked
from entreg._typing import Array, ArrayLike, Bool, Float

# |order - 1| below which Renyi / Tsallis use their cumulant series (error ~ |b|^4 * kappa_5 / 120).
_SERIES_RADIUS = 1e-3


def entropy(
    logits: Float[ArrayLike, "*batch v"],
    *,
    axis: int = -1,
    where: Bool[ArrayLike, "*batch v"] | Bool[ArrayLike, "*batch"] | None = None,
) -> Float[Array, "*batch"]:
    r"""Shannon entropy H(p) = -sum_j p_j log p_j of p = softmax(logits).

    Computed as -sum_j p_j (z_j - logsumexp(z)), which never takes the log of a probability, so
    p_j = 0 (a -inf or masked logit, or an underflow) contributes exactly 0 to the value and to
    the gradient dH/dz_j = -p_j (log p_j + H).

    Args:
      logits: unnormalized log-probabilities [..., K, ...].
      axis: the category axis.
      where: optional boolean mask, True = category included (full or batch shape).

    Returns:
      The entropy in nats, with `axis` removed; 0 <= H <= log(#included categories).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import entreg
      >>> logits = jnp.array([[0.0, 0.0, -jnp.inf], [1e4, 0.0, -1e4]])
      >>> print(entreg.entropy(logits))  # log 2, and 0 for a one-hot row
      [0.6931 0.    ]
      >>> bool(jnp.isfinite(jax.grad(lambda z: entreg.entropy(z).sum())(logits)).all())
      True
    """
    logits, valid, axis = _masked.prepare(logits, where, axis)
    return _masked.entropy_of(_masked.log_softmax(logits, valid, axis), axis)


def cross_entropy(
    logits: Float[ArrayLike, "*batch v"],
    target_logits: Float[ArrayLike, "*batch v"] | None = None,
    *,
    target_probs: Float[ArrayLike, "*batch v"] | None = None,
    axis: int = -1,
    where: Bool[ArrayLike, "*batch v"] | Bool[ArrayLike, "*batch"] | None = None,
) -> Float[Array, "*batch"]:
    r"""Cross-entropy CE(t, p) = -sum_j t_j log p_j, with p = softmax(logits).

    The target is either ``target_logits`` (t = softmax(target_logits) over the included
    categories) or ``target_probs`` (used as given: it is not renormalized, and its entries at
    excluded categories are ignored). Exactly one of the two must be passed.

    Where the target puts mass on a category that ``logits`` excludes, CE = +inf; the gradient is
    then that of the finite remainder (never NaN). ``target_probs`` gets the gradient -log p_j.

    Returns:
      The cross-entropy in nats, with `axis` removed.
    """
    logits, valid, axis = _masked.prepare(logits, where, axis)
    if (target_logits is None) == (target_probs is None):
        raise ValueError("Pass exactly one of `target_logits` and `target_probs`.")
    q = _masked.log_softmax(logits, valid, axis)
    if target_logits is not None:
        target_logits = _checks.float_array(target_logits, "target_logits")
        _checks.same_shape(logits, target_logits, "logits", "target_logits")
        t = _masked.log_softmax(target_logits, valid, axis)
        t_probs, t_support = t.p, t.valid
    else:
        target_probs = _checks.float_array(target_probs, "target_probs")
        _checks.same_shape(logits, target_probs, "logits", "target_probs")
        t_support = target_probs != 0 if valid is None else valid & (target_probs != 0)
        t_probs = jnp.where(t_support, target_probs, 0.0)
    finite = -jnp.sum(jnp.where(q.valid, t_probs * q.log_p, 0.0), axis=axis)
    return _masked.plus_inf_where(finite, jnp.any(t_support & ~q.valid, axis=axis))


def binary_entropy(
    logit: Float[ArrayLike, "*shape"], *, where: Bool[ArrayLike, "*#shape"] | None = None
) -> Float[Array, "*shape"]:
    r"""Elementwise entropy of a Bernoulli(sigmoid(logit)) variable.

    H(x) = softplus(x) - x sigmoid(x), evaluated in the symmetric form
    softplus(-|x|) + |x| sigmoid(-|x|), which keeps full relative precision for large |x|
    (the direct form cancels to 0 already at |x| = 17 in float32). dH/dx = -x sigmoid'(x),
    0 at x = 0. Entries where ``where`` is False, and infinite logits (a certain outcome),
    give 0 with a zero gradient.
    """
    x = _checks.float_array(logit, "logit")
    include = jnp.isfinite(x)  # an infinite logit is a certain outcome: H = 0, zero gradient
    if where is not None:
        include &= _checks.broadcast_bool(where, x.shape, "where", "logit")
    return jnp.where(include, _binary_entropy(jnp.where(include, x, 0.0)), 0.0)


@jax.custom_jvp
def _binary_entropy(x: jax.Array) -> jax.Array:
    a = jnp.abs(x)
    return jax.nn.softplus(-a) + a * jax.nn.sigmoid(-a)


@_binary_entropy.defjvp
def _binary_entropy_jvp(primals, tangents):
    # The derivative of the symmetric form, written without |x|, is smooth: derivatives of every
    # order are right at x = 0 (through |x| the second one would be 0 there instead of -1/4).
    (x,), (dx,) = primals, tangents
    return _binary_entropy(x), -x * jax.nn.sigmoid(x) * jax.nn.sigmoid(-x) * dx


def _power_sum_terms(d: _masked.Dist, order, axis: int):
    """Returns (sum_j p_j^order - 1, b = order - 1) with full relative precision near order 1.

    Each term p (p^b - 1) = p expm1(b log p) has the sign of -b for every j (log p <= 0), so the
    sum has no cancellation. Where b log p > 1 the equivalent exp(order log p) - p is used, which
    cannot overflow for order >= 0.
    """
    b = order - 1.0
    x = b * d.log_p
    big = x > 1.0
    term = jnp.where(
        big,
        jnp.exp(jnp.where(big, order * d.log_p, 0.0)) - d.p,
        d.p * jnp.expm1(jnp.where(big, 0.0, x)),
    )
    return jnp.sum(jnp.where(d.valid, term, 0.0), axis=axis), b


def _log_p_moments(d: _masked.Dist, axis: int, center: jax.Array | None, powers):
    x = d.log_p if center is None else d.log_p - jnp.expand_dims(center, axis)
    return [jnp.sum(jnp.where(d.valid, d.p * x**k, 0.0), axis=axis) for k in powers]


def _order_param(order, name: str):
    """Static orders are validated here; traced orders are used as given (must be finite >= 0)."""
    if _checks.is_static_scalar(order):
        return _checks.real_scalar(order, name, minimum=0.0, allow_inf=True), True
    if isinstance(order, (str, bool)) or order is None:
        raise TypeError(f"`{name}` must be a real number >= 0 or a scalar array, got {order!r}.")
    order = _checks.float_array(order, name)
    if order.ndim != 0:
        raise ValueError(f"`{name}` must be a scalar, got shape {order.shape}.")
    return order, False


def _near_one(order, static: bool):
    b = order - 1.0
    return abs(b) < _SERIES_RADIUS if static else jnp.abs(b) < _SERIES_RADIUS


def renyi_entropy(
    logits: Float[ArrayLike, "*batch v"],
    order: float | Float[ArrayLike, ""],
    *,
    axis: int = -1,
    where: Bool[ArrayLike, "*batch v"] | Bool[ArrayLike, "*batch"] | None = None,
) -> Float[Array, "*batch"]:
    r"""Renyi entropy H_a(p) = log(sum_j p_j^a) / (1 - a) of p = softmax(logits).

    Limits: a = 0 gives log |support|, a -> 1 the Shannon entropy, a = inf gives -log max_j p_j.
    H_a is non-increasing in a (Renyi 1961).

    Near a = 1 the function is evaluated exactly rather than by dividing by (1 - a): with
    b = a - 1, log sum p^a = K(b) is the cumulant generating function of log p under p, so
    H_a = -K(b)/b = H - b k2/2 - b^2 k3/6 - b^3 k4/24 - ... with k_n the cumulants of log p.
    For |b| < 1e-3 that series is used (truncation error below 1e-12 k5); elsewhere
    K(b) = log1p(sum p expm1(b log p)), which keeps full precision. Value and gradient (in the
    logits and in a traced ``order``) are continuous through a = 1.

    Args:
      logits: unnormalized log-probabilities.
      order: a >= 0, a Python number (validated, ``inf`` allowed) or a traced scalar (finite).
      axis: the category axis.
      where: optional boolean mask, True = included.
    """
    logits, valid, axis = _masked.prepare(logits, where, axis)
    order, static = _order_param(order, "order")
    d = _masked.log_softmax(logits, valid, axis)
    if static and order == float("inf"):
        max_log_p = jnp.max(jnp.where(d.valid, d.log_p, -jnp.inf), axis=axis)
        return -jnp.where(jnp.squeeze(d.nonempty, axis), max_log_p, 0.0)

    def series(b):
        k1 = -_masked.entropy_of(d, axis)
        m2, m3, m4 = _log_p_moments(d, axis, k1, (2, 3, 4))
        k4 = m4 - 3.0 * m2**2
        return -(k1 + b * m2 / 2.0 + b**2 * m3 / 6.0 + b**3 * k4 / 24.0)

    def direct(order_safe):
        s, b = _power_sum_terms(d, order_safe, axis)
        # log sum p^a: log1p keeps full precision while sum p^a is near 1 (|a - 1| small); far
        # from 1 sum p^a can be tiny against 1 (uniform over 4 at a = 20: 4^-19), where
        # log1p(s) cancels to log1p(-1) = -inf, so the log-sum-exp of a log p takes over.
        far = jnp.abs(b) >= 0.5
        lse = jax.nn.logsumexp(
            jnp.where(d.valid, order_safe * d.log_p, -jnp.inf), axis=axis, where=d.valid
        )
        empty = ~jnp.squeeze(d.nonempty, axis)
        log_sum = jnp.where(far, jnp.where(empty, 0.0, lse), jnp.log1p(jnp.where(far, 0.0, s)))
        return -log_sum / b + 0.0  # + 0.0 turns -0.0 into 0.0

    return _switch_near_one(order, static, series, direct)


def tsallis_entropy(
    logits: Float[ArrayLike, "*batch v"],
    order: float | Float[ArrayLike, ""],
    *,
    axis: int = -1,
    where: Bool[ArrayLike, "*batch v"] | Bool[ArrayLike, "*batch"] | None = None,
) -> Float[Array, "*batch"]:
    r"""Tsallis entropy S_q(p) = (1 - sum_j p_j^q) / (q - 1) of p = softmax(logits).

    Limits: q = 0 gives |support| - 1, q -> 1 the Shannon entropy, q = inf gives 0.
    The numerator is computed as -sum p expm1((q - 1) log p) (no cancellation), and for
    |q - 1| < 1e-3 the raw-moment series S_q = -(m1 + b m2/2 + b^2 m3/6 + b^3 m4/24),
    m_n = E_p[(log p)^n], b = q - 1, replaces the division. Continuous value and gradient
    through q = 1.

    Args:
      logits: unnormalized log-probabilities.
      order: q >= 0, a Python number (validated, ``inf`` allowed) or a traced scalar (finite).
    """
    logits, valid, axis = _masked.prepare(logits, where, axis)
    order, static = _order_param(order, "order")
    d = _masked.log_softmax(logits, valid, axis)
    if static and order == float("inf"):
        return jnp.zeros(logits.shape[:axis] + logits.shape[axis + 1 :], logits.dtype)

    def series(b):
        m1, m2, m3, m4 = _log_p_moments(d, axis, None, (1, 2, 3, 4))
        return -(m1 + b * m2 / 2.0 + b**2 * m3 / 6.0 + b**3 * m4 / 24.0)

    def direct(order_safe):
        s, b = _power_sum_terms(d, order_safe, axis)
        return -s / b

    return _switch_near_one(order, static, series, direct)


def _switch_near_one(order, static: bool, series, direct):
    """Series inside |order - 1| < radius, direct formula outside (double-where when traced)."""
    near = _near_one(order, static)
    if static:
        return series(order - 1.0) if near else direct(order)
    order_safe = jnp.where(near, 1.0 + 2.0 * _SERIES_RADIUS, order)
    return jnp.where(near, series(order - 1.0), direct(order_safe))
