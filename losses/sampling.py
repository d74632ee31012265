"""Reverse-process samplers for SEDD: Euler (tau-leaping) and analytic (Tweedie tau-leaping)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from entreg import _checks
from entreg._typing import Array, ArrayLike, Float, Integer, PRNGKeyArray

from .graphs import AbsorbingGraph, UniformGraph
from .noise import GeometricNoise, LogLinearNoise
from .score_entropy import ModelFn

_METHODS = ("analytic", "euler")


def _draw(key, probs):
    """Samples from unnormalized, possibly slightly negative probabilities [..., dim].

    Negative entries (an Euler step larger than the rates allow) are clipped to 0;
    `jax.random.categorical` takes logits, so it gets log(probs) (-inf for zeros), in float32.
    """
    probs = jnp.maximum(probs.astype(jnp.float32), 0.0)
    logits = jnp.where(probs > 0, jnp.log(jnp.where(probs > 0, probs, 1.0)), -jnp.inf)
    return jax.random.categorical(key, logits, axis=-1)


def _analytic_probs(graph, log_score, xt, dsigma):
    stag = graph.staggered_score(jnp.exp(log_score), dsigma)
    return stag * graph.transp_transition(xt, dsigma)


def step_probs(
    graph: AbsorbingGraph | UniformGraph,
    noise: LogLinearNoise | GeometricNoise,
    log_score: Float[ArrayLike, "*shape dim"],
    xt: Integer[ArrayLike, "*shape"],
    t: float | Float[Array, "*#shape"],
    s: float | Float[Array, "*#shape"],
    *,
    method: str = "analytic",
) -> Float[Array, "*shape dim"]:
    r"""Unnormalized transition probabilities [..., dim] of one reverse step from time t to s < t.

    * ``"euler"``: P(y) = (t - s) sigma'(t) Q(x, y) s_y for y != x, P(x) = 1 - sum (tau-leaping).
    * ``"analytic"``: P(y) proportional to (exp(-dsigma Q) s)_y exp(dsigma Q)(x, y) with dsigma =
      sigma_bar(t) - sigma_bar(s). For absorbing diffusion at a masked position this unmasks to
      y with probability (e^{dsigma} - 1) s_y; with exact scores and the log-linear schedule the
      unmasking probability is (t - s) / t, as in MDLM's ancestral sampler.

    ``t`` and ``s`` broadcast against ``xt``. Entries are not clipped (see `sample`).
    """
    _checks.choice(method, "method", _METHODS)
    if method == "euler":
        rate = graph.reverse_rate(log_score, xt)
        dt = jnp.asarray(t - s, rate.dtype) * noise.rate(t)
        return jax.nn.one_hot(xt, graph.dim, dtype=rate.dtype) + dt[..., None] * rate
    dsigma = noise.total(t) - noise.total(s)
    return _analytic_probs(graph, log_score, xt, jnp.broadcast_to(dsigma, jnp.shape(xt)))


def sample(
    key: PRNGKeyArray,
    model_fn: ModelFn,
    graph: AbsorbingGraph | UniformGraph,
    noise: LogLinearNoise | GeometricNoise,
    shape: tuple[int, int],
    *,
    steps: int,
    method: str = "analytic",
    eps: float = 1e-5,
    denoise: bool = True,
) -> Integer[Array, "b l"]:
    r"""Draws token sequences [B, L] from a trained SEDD model in ``steps`` reverse steps.

    Starts from the graph's base distribution at t = 1, steps t -> s on the uniform grid from 1
    to ``eps`` (``method`` = ``"analytic"`` or ``"euler"``, see `step_probs`), then applies one
    analytic denoising step from ``eps`` to sigma = 0 that never returns MASK. That last step
    evaluates the model once more, so a run costs ``steps + 1`` evaluations. Jit it with the
    model's parameters as arguments; ``shape`` and ``method`` are static, ``steps`` may be a
    traced integer (one compilation then serves every step count). Every random choice comes
    from ``key``.
    """
    _checks.choice(method, "method", _METHODS)
    if not (isinstance(shape, tuple) and len(shape) == 2):
        raise ValueError(f"`shape` must be (batch, length), got {shape!r}.")
    shape = (_checks.positive_int(shape[0], "shape"), _checks.positive_int(shape[1], "shape"))
    if _checks.is_static_scalar(steps):
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"`steps` must be a positive int, got {steps!r}.")
    elif not jnp.issubdtype(jnp.asarray(steps).dtype, jnp.integer):
        raise TypeError("`steps` must be an int or an integer scalar array.")
    eps = _checks.real_scalar(eps, "eps", minimum=0.0)
    if not 0.0 < eps < 1.0:
        raise ValueError(f"`eps` must be in (0, 1), got {eps}.")
    batch = shape[0]
    k_prior, k_steps, k_final = jax.random.split(key, 3)
    x = graph.sample_prior(k_prior, shape, noise.total(1.0))

    def log_score_at(x, t):
        sigma = jnp.full((batch,), noise.total(t))
        return graph.log_score(model_fn(x, sigma), x, sigma[:, None])

    def time(i):  # the uniform grid from 1 to eps in `steps` steps
        return 1.0 - (1.0 - eps) * i / steps

    def body(i, x):
        t, s = time(i), time(i + 1)
        probs = step_probs(graph, noise, log_score_at(x, t), x, t, s, method=method)
        return _draw(jax.random.fold_in(k_steps, i), probs)

    # A traced step count makes a while loop: one compilation serves every step count.
    x = jax.lax.fori_loop(0, steps, body, x)
    if not denoise:
        return x
    sigma = noise.total(eps)
    probs = _analytic_probs(graph, log_score_at(x, eps), x, jnp.full(shape, sigma))
    if isinstance(graph, AbsorbingGraph):  # the last step never returns MASK
        probs = probs[..., : graph.num_tokens]
    return _draw(k_final, probs)
