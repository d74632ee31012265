r"""Denoising score entropy (SEDD; Lou, Meng & Ermon, ICML 2024): training loss, likelihood bound.

A model ``model_fn(x_t, sigma) -> output`` maps noised tokens [B, L] and the total noise sigma_bar
[B] to unconstrained outputs [B, L, dim]; ``graph.log_score`` turns them into log concrete scores
(the paper's parameterization), and the diffusion-weighted denoising score entropy

    L(x_0) = E_{t ~ U[0, 1], x_t ~ p_t(. | x_0)} sigma'(t) sum_i sum_{y != x_t^i}
             Q(x_t^i, y) [ s_y - r_y log s_y + K(r_y) ],  r_y = p_t(y | x_0^i) / p_t(x_t^i | x_0^i)

plus the prior term sum_i KL(p_1(. | x_0^i) || pi) bounds -log p(x_0) in nats per sequence.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from entreg import _checks
from entreg._typing import Array, ArrayLike, Bool, Float, Integer, PRNGKeyArray
from entreg.terms import LossTerm, TermResult, Weight, weight_fn

from .graphs import AbsorbingGraph, UniformGraph
from .noise import GeometricNoise, LogLinearNoise

ModelFn = Callable[[jax.Array, jax.Array], jax.Array]


def _sequences(x0, mask) -> tuple[jax.Array, jax.Array]:
    x0 = jnp.asarray(x0)
    if not jnp.issubdtype(x0.dtype, jnp.integer) or x0.ndim < 1:
        raise TypeError(f"`x0` must be integer tokens [..., L], got {x0.dtype} {x0.shape}.")
    if mask is None:
        return x0, jnp.ones(x0.shape, bool)
    valid = _checks.token_mask(mask, x0.shape, "x0")
    # Padding may hold any id (-1, a pad id past the vocabulary): token 0 stands in for it.
    return jnp.where(valid, x0, 0), valid


def _per_sequence(values, name, batch_shape) -> jax.Array:
    v = _checks.float_array(values, name)
    if v.shape != batch_shape:
        raise ValueError(f"`{name}` must hold one value per sequence {batch_shape}, got {v.shape}.")
    return v


def denoising_score_entropy(
    graph: AbsorbingGraph | UniformGraph,
    log_score: Float[ArrayLike, "*batch l dim"],
    xt: Integer[ArrayLike, "*batch l"],
    x0: Integer[ArrayLike, "*batch l"],
    sigma: Float[ArrayLike, "*#batch"],
    rate: Float[ArrayLike, "*#batch"],
    *,
    mask: Bool[ArrayLike, "*#batch l"] | None = None,
) -> Float[Array, "*batch"]:
    r"""Diffusion-weighted denoising score entropy per sequence: rate * sum_i l_i, shape [...].

    Args:
      graph: `AbsorbingGraph` or `UniformGraph`.
      log_score: log concrete scores [..., L, dim] (``graph.log_score(output, xt, sigma)``).
      xt, x0: noised and clean tokens [..., L].
      sigma, rate: sigma_bar(t) and sigma'(t), one per sequence [...].
      mask: boolean [..., L], False for padding: those positions do not count, whatever
        ``x0``, ``xt`` and ``log_score`` hold there (NaN included), in value and gradient.
    """
    if not isinstance(graph, (AbsorbingGraph, UniformGraph)):
        raise TypeError(f"`graph` must be an AbsorbingGraph or a UniformGraph, got {graph!r}.")
    x0, valid = _sequences(x0, mask)
    sigma = _per_sequence(sigma, "sigma", x0.shape[:-1])
    rate = _per_sequence(rate, "rate", x0.shape[:-1])
    if mask is not None:  # padding is replaced before any arithmetic (double where)
        xt = jnp.where(valid, jnp.asarray(xt), x0)
        log_score = jnp.where(valid[..., None], _checks.float_array(log_score, "log_score"), 0.0)
    per_token = graph.score_entropy(log_score, xt, x0, sigma[..., None])
    return rate * jnp.sum(jnp.where(valid, per_token, 0.0), axis=-1)


def _batch(x0, mask) -> tuple[jax.Array, jax.Array]:
    x0, valid = _sequences(x0, mask)
    if x0.ndim != 2:
        raise ValueError(f"`x0` must be [batch, length], got {x0.shape}.")
    return x0, valid


def _dse_at(key, model_fn, x0, valid, graph, noise, t):
    """Noises x0 at times t [B], evaluates the model once, returns the weighted DSE [B]."""
    sigma, rate = noise(t)
    xt = graph.sample_transition(key, x0, sigma[:, None])
    log_score = graph.log_score(model_fn(xt, sigma), xt, sigma[:, None])
    return denoising_score_entropy(graph, log_score, xt, x0, sigma, rate, mask=valid)


def _stratified_times(key, n, lo):
    """n times in [lo, 1], one per stratum of width (1 - lo) / n, in random order."""
    k1, k2 = jax.random.split(key)
    u = (jnp.arange(n) + jax.random.uniform(k1, (n,))) / n
    return lo + (1.0 - lo) * jax.random.permutation(k2, u)


def sedd_loss(
    key: PRNGKeyArray,
    model_fn: ModelFn,
    x0: Integer[ArrayLike, "b l"],
    graph: AbsorbingGraph | UniformGraph,
    noise: LogLinearNoise | GeometricNoise,
    *,
    mask: Bool[ArrayLike, "b l"] | None = None,
    sampling_eps: float = 1e-3,
    stratified: bool = True,
) -> Float[Array, " b"]:
    r"""One Monte-Carlo draw of the SEDD training loss per sequence [B] (nats).

    Draws t in [sampling_eps, 1] (stratified across the batch by default, which lowers the
    variance of the batch mean), x_t ~ p_t(. | x_0), evaluates the model once and returns the
    diffusion-weighted denoising score entropy. ``sampling_eps = 1e-3`` as released.
    """
    x0, valid = _batch(x0, mask)
    eps = _checks.real_scalar(sampling_eps, "sampling_eps", minimum=0.0)
    if eps >= 1.0:
        raise ValueError(
            f"`sampling_eps` must be in [0, 1) (times are drawn in [eps, 1]), got {eps}."
        )
    kt, kx = jax.random.split(key)
    b = x0.shape[0]
    if stratified:
        t = _stratified_times(kt, b, eps)
    else:
        t = eps + (1.0 - eps) * jax.random.uniform(kt, (b,))
    return _dse_at(kx, model_fn, x0, valid, graph, noise, t)


def sedd_elbo(
    key: PRNGKeyArray,
    model_fn: ModelFn,
    x0: Integer[ArrayLike, "b l"],
    graph: AbsorbingGraph | UniformGraph,
    noise: LogLinearNoise | GeometricNoise,
    *,
    num_times: int = 32,
    mask: Bool[ArrayLike, "b l"] | None = None,
) -> Float[Array, " b"]:
    r"""Upper bound on -log p(x_0) in nats per sequence [B], for bits per token divide by L log 2.

        bound = E_{t ~ U[0, 1]} [sigma'(t) sum_i l_i(x_t)] + sum_i KL(p_1(. | x_0^i) || pi)

    estimated with ``num_times`` stratified times per sequence (one model call each, over the
    whole batch). pi is the graph's base distribution (``graph.sample_prior``), the one the
    samplers start from. The estimate is unbiased for the bound; its per-sequence spread gives a
    standard error. Under `GeometricNoise` the integral starts at sigma_min, not 0.
    """
    x0, valid = _batch(x0, mask)
    num_times = _checks.positive_int(num_times, "num_times")
    b = x0.shape[0]
    k_t, k_x = jax.random.split(key)
    u = jax.random.uniform(k_t, (num_times, b))
    times = (jnp.arange(num_times)[:, None] + u) / num_times

    def one(inputs):
        t, k = inputs
        return _dse_at(k, model_fn, x0, valid, graph, noise, t)

    dse = jax.lax.map(one, (times, jax.random.split(k_x, num_times)))
    prior = graph.prior_kl(x0, noise.total(1.0))
    return jnp.mean(dse, axis=0) + jnp.sum(jnp.where(valid, prior, 0.0), axis=-1)


SCORE_ENTROPY_SIGNALS = ("log_score", "xt", "x0", "sigma", "rate")


def score_entropy_term(
    graph: AbsorbingGraph | UniformGraph,
    *,
    name: str = "score_entropy",
    weight: Weight = 1.0,
    mask: str | None = None,
) -> LossTerm:
    """`denoising_score_entropy`, averaged over sequences, as an `entreg.compose` penalty.

    Reads the signals ``log_score``, ``xt``, ``x0``, ``sigma`` and ``rate`` (and ``mask`` under
    the given signal name), so a diffusion model's forward can expose them and the loss can be
    combined with other terms (e.g. an entropy bonus on the denoiser's predictions).
    """
    name = _checks.term_name(name)
    weight_at = weight_fn(weight, name)

    def apply(signals, state, step):
        _checks.signals(signals, (*SCORE_ENTROPY_SIGNALS, mask), name)
        per_seq = denoising_score_entropy(
            graph,
            *(signals[s] for s in SCORE_ENTROPY_SIGNALS),
            mask=None if mask is None else signals[mask],
        )
        value = jnp.mean(per_seq)
        w = weight_at(step)
        return TermResult(value, w, w * value, state, {})

    return LossTerm(name, init=lambda: (), apply=apply)
