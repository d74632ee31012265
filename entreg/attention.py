"""Attention entropy from attention logits."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from entreg import _checks, _masked
from entreg._typing import Array, ArrayLike, Bool, Float, Integer


def visible_keys(shape: tuple[int, ...], mask, causal: bool) -> jax.Array | None:
    """Boolean key-visibility [..., Tq, Tk] from a broadcastable mask and a causal flag.

    The causal mask is aligned top-left (query i sees keys j <= i), as in
    ``jax.nn.dot_product_attention(is_causal=True)``.
    """
    if mask is not None:
        mask = _checks.broadcast_bool(mask, shape, "mask", "logits")
    if causal:
        tq, tk = shape[-2:]
        tri = jnp.arange(tk)[None, :] <= jnp.arange(tq)[:, None]
        mask = tri if mask is None else mask & tri
    return mask


def _attention_dist(logits, mask, causal, sink):
    """Validates the inputs and returns the masked attention distribution over [sink,] keys."""
    logits = _checks.float_array(logits, "logits")
    if logits.ndim < 2:
        raise ValueError(f"`logits` must have shape [..., Tq, Tk], got {logits.shape}.")
    valid = visible_keys(logits.shape, mask, causal)
    if sink is not None:
        sink = _checks.float_array(sink, "sink")
        sink = _checks.broadcast(sink, logits.shape[:-1], "sink", "the logits' rows")
        logits = jnp.concatenate([sink[..., None].astype(logits.dtype), logits], axis=-1)
        if valid is not None:
            valid = jnp.concatenate([jnp.ones(valid.shape[:-1] + (1,), bool), valid], axis=-1)
    return _masked.log_softmax(logits, valid, -1)


def attention_entropy(
    logits: Float[ArrayLike, "*batch q k"],
    *,
    mask: Bool[ArrayLike, "*#batch #q #k"] | None = None,
    causal: bool = False,
    normalize: bool = False,
    sink: Float[ArrayLike, "*#batch #q"] | None = None,
) -> Float[Array, "*batch q"]:
    r"""Per-query entropy of attention maps, H_i = logsumexp_j s_ij - sum_j A_ij s_ij.

    Computed from the attention LOGITS s (already scaled; -inf = masked), so it never takes the
    log of an attention weight; gradient dH_i/ds_ij = -A_ij (s_ij - E_{A_i}[s]).
    Zhai et al., "Stabilizing Transformer Training by Preventing Attention Entropy Collapse"
    (ICML 2023).

    Args:
      logits: [..., Tq, Tk] attention logits.
      mask: optional boolean, broadcastable to the logits, True = key visible (as in
        ``jax.nn.dot_product_attention``).
      causal: also hide keys j > i (top-left aligned).
      normalize: divide by the row's maximum entropy log(#visible keys) (log(i+1) under a causal
        mask), giving values in [0, 1]; rows with at most one visible key give 0.
      sink: optional learned sink logit(s) broadcasting to the rows [..., Tq] (e.g. one per
        head, shape [heads, 1]): a virtual key that is always visible and holds no value. The
        entropy is then that of the distribution the layer actually uses, over the sink and the
        keys (the sink counts as one more key in the normalization). Leave it out for the
        entropy over the real keys alone, renormalized.

    Returns:
      [..., Tq] entropies (nats, or normalized). Rows without a visible key return 0.

    Examples:
      >>> import jax.numpy as jnp
      >>> import entreg
      >>> scores = jnp.zeros((1, 4, 4))  # [heads, Tq, Tk]: uniform attention
      >>> print(entreg.attention_entropy(scores, causal=True))  # log(i + 1)
      [[0.     0.6931 1.0986 1.3863]]
      >>> print(entreg.attention_entropy(scores, causal=True, normalize=True))
      [[0. 1. 1. 1.]]
    """
    d = _attention_dist(logits, mask, causal, sink)
    h = _masked.entropy_of(d, -1)
    if not normalize:
        return h
    n = jnp.sum(d.valid, axis=-1)
    h_max = jnp.log(jnp.maximum(n, 1).astype(h.dtype))
    return jnp.where(n > 1, h / jnp.where(n > 1, h_max, 1.0), 0.0)


def effective_keys(
    logits: Float[ArrayLike, "*batch q k"],
    *,
    mask: Bool[ArrayLike, "*#batch #q #k"] | None = None,
    causal: bool = False,
    sink: Float[ArrayLike, "*#batch #q"] | None = None,
) -> Float[Array, "*batch q"]:
    """exp(H_i): the effective number of keys query i attends to (the Hopfield view: ~#keys is
    global averaging, ~1 single-pattern retrieval). Rows without a visible key return 0."""
    d = _attention_dist(logits, mask, causal, sink)
    return jnp.where(d.nonempty[..., 0], jnp.exp(_masked.entropy_of(d, -1)), 0.0)


def attention_sink_mass(
    logits: Float[ArrayLike, "*batch q k"],
    *,
    mask: Bool[ArrayLike, "*#batch #q #k"] | None = None,
    causal: bool = False,
    sink: Float[ArrayLike, "*#batch #q"] | None = None,
) -> Float[Array, "*batch q"]:
    """Attention mass on the sink: the learned ``sink`` column when given, else the first key.

    Per query row [..., Tq]; average it over queries, heads and layers for the usual "sink
    mass" statistic (Gated Attention reports 46.7% without an output gate, 4.8% with one).
    Rows without a visible key return 0.
    """
    return _attention_dist(logits, mask, causal, sink).p[..., 0]


def head_entropy_fractions(
    normalized_entropy: Float[ArrayLike, "*batch heads"],
    *,
    collapse_below: float = 0.1,
    overload_above: float = 0.9,
    axis: int = -1,
) -> tuple[Float[Array, "*batch"], Float[Array, "*batch"]]:
    """Fractions of heads in the collapse band and in the overload band.

    ``normalized_entropy`` holds each head's query-averaged entropy divided by its maximum
    (`attention_entropy(..., normalize=True).mean(-1)`), heads along ``axis``. A head has
    collapsed below ``collapse_below`` (attends to about one key, Zhai et al. 2023) and is
    overloaded above ``overload_above`` (attends almost uniformly, "entropic overload" of Jha &
    Reagen 2025). Returns ``(collapse_fraction, overload_fraction)`` reduced over ``axis``.
    """
    h = _checks.float_array(normalized_entropy, "normalized_entropy")
    axis = _checks.normalize_axis(axis, h.ndim, "normalized_entropy")
    if h.shape[axis] == 0:
        raise ValueError("`normalized_entropy` has no heads along `axis`: fractions undefined.")
    lo = _checks.real_scalar(collapse_below, "collapse_below", minimum=0.0)
    hi = _checks.real_scalar(overload_above, "overload_above", minimum=0.0)
    if not lo < hi:
        raise ValueError(f"`collapse_below` ({lo}) must be < `overload_above` ({hi}).")
    return jnp.mean(h < lo, axis=axis), jnp.mean(h > hi, axis=axis)


def entropy_lower_bound(
    sigma: Float[ArrayLike, "*shape"], length: int | Integer[ArrayLike, "*#shape"]
) -> Float[Array, "*shape"]:
    r"""Theorem 3.1 of Zhai et al. (2023): the smallest attention entropy a logit matrix with
    spectral scale sigma = ||W_K W_Q^T||_2 ||X X^T||_2 allows over ``length`` = T keys.

        gamma = sigma sqrt(T / (T - 1)),  beta = exp(-gamma)
        H >= log(1 + (T - 1) beta) + gamma (T - 1) beta / (1 + (T - 1) beta)

    It is the entropy of a softmax with one logit gamma above T - 1 equal ones, so entropy can
    fall exponentially in the logits' spectral norm: a diagnostic for collapse (compare the
    measured entropy with the bound of the measured sigma). T = 50, sigma = 2 gives 3.7655.
    """
    sigma = _checks.float_array(sigma, "sigma")
    length = _checks.positive_int(length, "length")
    if length < 2:
        raise ValueError(f"`length` must be >= 2 keys (one key has entropy 0), got {length}.")
    t = jnp.asarray(length, sigma.dtype)
    gamma = sigma * jnp.sqrt(t / (t - 1.0))
    # (T - 1) beta in log space, so large gamma neither overflows nor loses the bound's tail.
    log_mb = jnp.log(t - 1.0) - gamma
    mb = jnp.exp(log_mb)
    return jnp.log1p(mb) + gamma * jax.nn.sigmoid(log_mb)
