r"""Forward processes ("graphs") of discrete diffusion, after SEDD (Lou, Meng & Ermon 2024).

A graph is a rate matrix Q whose columns sum to 0; at total noise sigma_bar the forward process has
p_t(. | x_0) = exp(sigma_bar Q) e_{x_0}. Two graphs are provided:

* `AbsorbingGraph(N)`: N real tokens plus MASK = N (dim N + 1). A token is replaced by MASK at
  rate 1 and MASK is absorbing.
* `UniformGraph(N)`: Q = (1 1^T - N I) / N: a token is redrawn uniformly (possibly as itself) at
  rate 1.

Conventions shared by every method: tokens ``x`` are integer arrays [...]; ``sigma`` broadcasts
against ``x``'s shape (pass ``sigma[:, None]`` for a batch of sequences); vocabulary-valued
results add a trailing axis of size ``dim``. ``log_score`` is the log of the predicted concrete
score s_y ~= p_t(y) / p_t(x) at each position, over the vocabulary, as `log_score` below builds it
from a network's output.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from entreg import _checks
from entreg._typing import Array, ArrayLike, Float, Integer, PRNGKeyArray


def _tokens(x, name: str, dim: int) -> jax.Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise TypeError(f"`{name}` must be an integer token array, got dtype {x.dtype}.")
    return _checks.index_range(x, name, dim)


def _sigma(sigma, shape) -> jax.Array:
    s = _checks.float_array(sigma, "sigma")
    try:
        return jnp.broadcast_to(s, jnp.broadcast_shapes(s.shape, shape))
    except ValueError:
        raise ValueError(
            f"`sigma` of shape {s.shape} does not broadcast against tokens of shape {shape}; "
            "pass sigma[:, None] for a batch of sequences."
        ) from None


def _log_score(log_score, shape, dim) -> jax.Array:
    s = _checks.float_array(log_score, "log_score")
    if s.shape[-1:] != (dim,) or s.shape[:-1] != tuple(shape):
        raise ValueError(
            f"`log_score` must have shape {(*shape, dim)} (tokens + vocabulary), got {s.shape}."
        )
    return s


def _inv_expm1(sigma):
    """1 / expm1(sigma) for sigma > 0 as e^-sigma / -expm1(-sigma): no overflow of e^sigma, so
    value and gradient stay finite for large sigma (1 / expm1 gives inf / inf = NaN there)."""
    return jnp.exp(-sigma) / -jnp.expm1(-sigma)


def _log_expm1(sigma):
    """log(e^sigma - 1) without cancellation for small sigma; -inf at 0."""
    # Both branches stay finite (and so do their gradients) whichever one `where` selects.
    big = sigma + jnp.log1p(-jnp.exp(-jnp.maximum(sigma, 20.0)))
    return jnp.where(sigma > 20.0, big, jnp.log(jnp.expm1(jnp.minimum(sigma, 20.0))))


def _one_hot(x, dim, dtype):
    return jax.nn.one_hot(x, dim, dtype=dtype)


@dataclasses.dataclass(frozen=True)
class _Graph:
    """What both graphs share: the vocabulary size and the reverse rates from the scores."""

    num_tokens: int

    def __post_init__(self):
        n = self.num_tokens
        if not isinstance(n, int) or isinstance(n, bool) or n < 2:
            raise ValueError(f"`num_tokens` must be an int >= 2, got {n!r}.")

    if TYPE_CHECKING:  # provided by each graph

        @property
        def dim(self) -> int: ...

        def rate_weights(self, xt) -> jax.Array: ...

    def reverse_rate(
        self, log_score: Float[ArrayLike, "*shape dim"], xt: Integer[ArrayLike, "*shape"]
    ) -> Float[Array, "*shape dim"]:
        """Reverse rates R(x_t -> y) = Q(x_t, y) s_y off the diagonal, minus their sum on it."""
        xt = _tokens(xt, "xt", self.dim)
        rate = self.rate_weights(xt) * jnp.exp(_log_score(log_score, xt.shape, self.dim))
        return rate - _one_hot(xt, self.dim, rate.dtype) * jnp.sum(rate, -1, keepdims=True)


@dataclasses.dataclass(frozen=True)
class AbsorbingGraph(_Graph):
    r"""Absorbing (masking) diffusion over ``num_tokens`` real tokens plus MASK = ``num_tokens``.

    x_t = MASK with probability 1 - e^{-sigma_bar}, else x_0, independently per position. At a
    masked position the only non-zero conditional ratio is r = 1 / expm1(sigma_bar) at y = x_0,
    and every real y has rate 1 into MASK; unmasked positions contribute nothing to the loss.
    """

    @property
    def dim(self) -> int:
        return self.num_tokens + 1

    @property
    def mask_id(self) -> int:
        return self.num_tokens

    def transition(
        self, x0: Integer[ArrayLike, "*shape"], sigma: Float[ArrayLike, "*#shape"]
    ) -> Float[Array, "*shape dim"]:
        """p_t(y | x_0) [..., dim]."""
        x0 = _tokens(x0, "x0", self.dim)
        sigma = _sigma(sigma, x0.shape)[..., None]
        # -expm1(-sigma), not 1 - e^-sigma: the latter is 1.3% off at sigma = 1e-6 in float32.
        return jnp.exp(-sigma) * _one_hot(x0, self.dim, sigma.dtype) - jnp.expm1(-sigma) * _one_hot(
            jnp.full_like(x0, self.mask_id), self.dim, sigma.dtype
        )

    def sample_transition(
        self,
        key: PRNGKeyArray,
        x0: Integer[ArrayLike, "*shape"],
        sigma: Float[ArrayLike, "*#shape"],
    ) -> Integer[Array, "*shape"]:
        """Draws x_t ~ p_t(. | x_0)."""
        x0 = _tokens(x0, "x0", self.dim)
        masked = jax.random.bernoulli(key, -jnp.expm1(-_sigma(sigma, x0.shape)))
        return jnp.where(masked, self.mask_id, x0)

    def rate_weights(self, xt: Integer[ArrayLike, "*shape"]) -> Float[Array, "*shape dim"]:
        """Q(x_t, y) for y != x_t (rate from y into x_t), [..., dim]."""
        xt = _tokens(xt, "xt", self.dim)
        real = jnp.arange(self.dim) < self.num_tokens
        return jnp.where((xt == self.mask_id)[..., None] & real, 1.0, 0.0)

    def ratios(
        self,
        x0: Integer[ArrayLike, "*shape"],
        xt: Integer[ArrayLike, "*shape"],
        sigma: Float[ArrayLike, "*#shape"],
    ) -> Float[Array, "*shape dim"]:
        """Conditional ratios p_t(y | x_0) / p_t(x_t | x_0) where the rate is non-zero, else 0."""
        x0, xt = _tokens(x0, "x0", self.dim), _tokens(xt, "xt", self.dim)
        sigma = _sigma(sigma, jnp.broadcast_shapes(x0.shape, xt.shape))
        masked = xt == self.mask_id
        # sigma = 0 with x_t = MASK is impossible: the ratio is +inf there, with no gradient.
        live = masked & (sigma > 0)
        impossible = jnp.where(masked, jnp.inf, 0.0)
        r = jnp.where(live, _inv_expm1(jnp.where(live, sigma, 1.0)), impossible)
        return jnp.where(_one_hot(x0, self.dim, bool), r[..., None], 0.0)

    def score_entropy(
        self,
        log_score: Float[ArrayLike, "*shape dim"],
        xt: Integer[ArrayLike, "*shape"],
        x0: Integer[ArrayLike, "*shape"],
        sigma: Float[ArrayLike, "*#shape"],
    ) -> Float[Array, "*shape"]:
        r"""Per-position denoising score entropy sum_y Q(x_t, y) f(s_y; r_y) [...] (closed form).

        Masked position: sum_{y real} e^{s_y} - r s_{x_0} + r (log r - 1), r = 1 / expm1(sigma);
        0 elsewhere. Multiply by sigma'(t) for the diffusion-weighted loss.
        """
        xt, x0 = _tokens(xt, "xt", self.dim), _tokens(x0, "x0", self.dim)
        shape = jnp.broadcast_shapes(xt.shape, x0.shape)
        s = _log_score(log_score, shape, self.dim)
        masked = xt == self.mask_id
        sigma = _sigma(sigma, shape)
        # A masked position has sigma > 0 (at sigma = 0 it is impossible: +inf, no gradient);
        # elsewhere a placeholder keeps 1 / expm1 finite.
        live = masked & (sigma > 0)
        log_r = -_log_expm1(jnp.where(live, sigma, 1.0))
        r = jnp.exp(log_r)
        pos = jnp.sum(jnp.exp(s[..., : self.num_tokens]), axis=-1)
        neg = r * jnp.take_along_axis(s, x0[..., None], axis=-1)[..., 0]
        value = jnp.where(live, pos - neg + r * (log_r - 1.0), 0.0)
        return jnp.where(masked & ~live, jnp.inf, value)

    def log_score(
        self,
        output: Float[ArrayLike, "*shape dim"],
        xt: Integer[ArrayLike, "*shape"],
        sigma: Float[ArrayLike, "*#shape"],
    ) -> Float[Array, "*shape dim"]:
        """The paper's parameterization: output - log expm1(sigma) - log N, entry x_t set to 0.

        Subtracting log(expm1(sigma) N) makes the total ratio mass right at initialization (a
        zero output predicts sum_y s_y = 1 / expm1(sigma), the exact value at a masked position).
        """
        xt = _tokens(xt, "xt", self.dim)
        out = _log_score(output, xt.shape, self.dim)
        # At sigma = 0 nothing is masked; the floor keeps the unused entries finite.
        sigma = jnp.maximum(_sigma(sigma, xt.shape), 1e-30)
        out = out - (_log_expm1(sigma) + jnp.log(float(self.num_tokens)))[..., None]
        return jnp.where(_one_hot(xt, self.dim, bool), 0.0, out)

    def staggered_score(
        self, score: Float[ArrayLike, "*shape dim"], dsigma: Float[ArrayLike, "*#shape"]
    ) -> Float[Array, "*shape dim"]:
        """exp(-dsigma Q) applied to the score vector: e^{dsigma} s, plus (1 - e^{dsigma}) sum s
        on the MASK entry."""
        score = _checks.float_array(score, "score")
        d = _sigma(dsigma, score.shape[:-1])[..., None]
        # MASK entry: e^d s_M + (1 - e^d) sum_y s_y = s_M - expm1(d) sum_{y real} s_y, without
        # the cancellation of two e^d-sized terms.
        mask = _one_hot(self.mask_id, self.dim, bool)
        real = jnp.sum(jnp.where(mask, 0.0, score), -1, keepdims=True)
        return jnp.where(mask, score - jnp.expm1(d) * real, jnp.exp(d) * score)

    def transp_transition(
        self, xt: Integer[ArrayLike, "*shape"], dsigma: Float[ArrayLike, "*#shape"]
    ) -> Float[Array, "*shape dim"]:
        """Row x_t of exp(dsigma Q): e^{-dsigma} at y = x_t, plus 1 - e^{-dsigma} everywhere when
        x_t is MASK."""
        xt = _tokens(xt, "xt", self.dim)
        d = _sigma(dsigma, xt.shape)[..., None]
        spread = jnp.where((xt == self.mask_id)[..., None], -jnp.expm1(-d), 0.0)
        return jnp.exp(-d) * _one_hot(xt, self.dim, d.dtype) + spread

    def sample_prior(
        self, key: PRNGKeyArray, shape: tuple[int, ...], sigma: Float[ArrayLike, "*#shape"]
    ) -> Integer[Array, "*shape"]:
        """x_T from the base distribution pi = p_T of a uniform x_0: MASK with probability
        1 - e^{-sigma}, else a uniform real token (so `prior_kl` is finite)."""
        k1, k2 = jax.random.split(key)
        keep = jax.random.bernoulli(k1, jnp.exp(-jnp.asarray(sigma, jnp.float32)), shape)
        return jnp.where(keep, jax.random.randint(k2, shape, 0, self.num_tokens), self.mask_id)

    def prior_kl(
        self, x0: Integer[ArrayLike, "*shape"], sigma: Float[ArrayLike, "*#shape"]
    ) -> Float[Array, "*shape"]:
        """KL(p_T(. | x_0) || pi) per position = e^{-sigma} log N."""
        x0 = _tokens(x0, "x0", self.dim)
        return jnp.exp(-_sigma(sigma, x0.shape)) * jnp.log(float(self.num_tokens))


@dataclasses.dataclass(frozen=True)
class UniformGraph(_Graph):
    r"""Uniform diffusion over ``num_tokens`` tokens, Q = (1 1^T - N I) / N (the SEDD code's scale).

    x_t is redrawn uniformly with probability 1 - e^{-sigma_bar}. With rho = e/(e + N), e =
    expm1(sigma), current token b and clean token a, <f> = (1/N) sum_{y != b} f_y::

      b = a:   l = <e^s> - rho <s> + ((N - 1)/N) K(rho)
      b != a:  l = <e^s> - s_a / e - <s> + (K(1/rho) - (N - 2)) / N

    Every position contributes.
    """

    @property
    def dim(self) -> int:
        return self.num_tokens

    def transition(
        self, x0: Integer[ArrayLike, "*shape"], sigma: Float[ArrayLike, "*#shape"]
    ) -> Float[Array, "*shape dim"]:
        """p_t(y | x_0) = e^{-sigma} [y = x_0] + (1 - e^{-sigma}) / N, shape [..., dim]."""
        x0 = _tokens(x0, "x0", self.dim)
        sigma = _sigma(sigma, x0.shape)[..., None]
        moved = -jnp.expm1(-sigma) / self.num_tokens
        return jnp.exp(-sigma) * _one_hot(x0, self.dim, sigma.dtype) + moved

    def sample_transition(
        self,
        key: PRNGKeyArray,
        x0: Integer[ArrayLike, "*shape"],
        sigma: Float[ArrayLike, "*#shape"],
    ) -> Integer[Array, "*shape"]:
        """Draws x_t ~ p_t(. | x_0): redrawn uniformly with probability 1 - e^{-sigma}."""
        x0 = _tokens(x0, "x0", self.dim)
        k1, k2 = jax.random.split(key)
        moved = jax.random.bernoulli(k1, -jnp.expm1(-_sigma(sigma, x0.shape)))
        return jnp.where(moved, jax.random.randint(k2, x0.shape, 0, self.num_tokens), x0)

    def rate_weights(self, xt: Integer[ArrayLike, "*shape"]) -> Float[Array, "*shape dim"]:
        """Q(x_t, y) = 1 / N for y != x_t, 0 at y = x_t, [..., dim]."""
        xt = _tokens(xt, "xt", self.dim)
        return jnp.where(_one_hot(xt, self.dim, bool), 0.0, 1.0 / self.num_tokens)

    def ratios(
        self,
        x0: Integer[ArrayLike, "*shape"],
        xt: Integer[ArrayLike, "*shape"],
        sigma: Float[ArrayLike, "*#shape"],
    ) -> Float[Array, "*shape dim"]:
        """Conditional ratios p_t(y | x_0) / p_t(x_t | x_0) for y != x_t, 0 at y = x_t."""
        x0, xt = _tokens(x0, "x0", self.dim), _tokens(xt, "xt", self.dim)
        p = self.transition(x0, _sigma(sigma, jnp.broadcast_shapes(x0.shape, xt.shape)))
        xt = jnp.broadcast_to(xt, p.shape[:-1])
        p_xt = jnp.take_along_axis(p, xt[..., None], axis=-1)
        # p_t(x_t | x_0) = 0 only at sigma = 0 with x_t != x_0 (impossible): +inf at y = x_0.
        possible = p_xt > 0
        r = jnp.where(possible, p / jnp.where(possible, p_xt, 1.0), jnp.where(p > 0, jnp.inf, 0.0))
        return jnp.where(_one_hot(xt, self.dim, bool), 0.0, r)

    def score_entropy(
        self,
        log_score: Float[ArrayLike, "*shape dim"],
        xt: Integer[ArrayLike, "*shape"],
        x0: Integer[ArrayLike, "*shape"],
        sigma: Float[ArrayLike, "*#shape"],
    ) -> Float[Array, "*shape"]:
        """Per-position denoising score entropy (closed form, see the class docstring)."""
        xt, x0 = _tokens(xt, "xt", self.dim), _tokens(x0, "x0", self.dim)
        shape = jnp.broadcast_shapes(xt.shape, x0.shape)
        s = _log_score(log_score, shape, self.dim)
        n = float(self.num_tokens)
        stayed = xt == x0
        # sigma = 0 only meets x_t = x_0 (no noise): the floor keeps log rho (and the gradient
        # of 1 / expm1, ~ -1 / sigma^2, even in float32) finite there, and the moved branch
        # gets a placeholder (double where).
        sigma = jnp.maximum(_sigma(sigma, shape), 1e-12)
        inv_e = _inv_expm1(jnp.where(stayed, 1.0, sigma))
        # rho = e / (e + N), e = expm1(sigma), through 1 / e: finite for any sigma.
        log_rho = -jnp.log1p(n * _inv_expm1(sigma))
        rho = jnp.exp(log_rho)
        others = ~_one_hot(xt, self.dim, bool)
        mean_exp = jnp.sum(jnp.where(others, jnp.exp(s), 0.0), -1) / n
        mean_s = jnp.sum(jnp.where(others, s, 0.0), -1) / n
        same = mean_exp - rho * mean_s + (n - 1.0) / n * rho * (log_rho - 1.0)
        s_a = jnp.take_along_axis(s, x0[..., None], axis=-1)[..., 0]
        log_rho_moved = -jnp.log1p(n * inv_e)
        k_inv = (1.0 + n * inv_e) * (-log_rho_moved - 1.0)  # K(1 / rho)
        moved = mean_exp - s_a * inv_e - mean_s + (k_inv - (n - 2.0)) / n
        return jnp.where(stayed, same, moved)

    def log_score(
        self,
        output: Float[ArrayLike, "*shape dim"],
        xt: Integer[ArrayLike, "*shape"],
        sigma: Float[ArrayLike, "*#shape"],
    ) -> Float[Array, "*shape dim"]:
        """The network's output as log-scores, the current token's entry set to 0 (ratio 1)."""
        xt = _tokens(xt, "xt", self.dim)
        out = _log_score(output, xt.shape, self.dim)
        return jnp.where(_one_hot(xt, self.dim, bool), 0.0, out)

    def staggered_score(
        self, score: Float[ArrayLike, "*shape dim"], dsigma: Float[ArrayLike, "*#shape"]
    ) -> Float[Array, "*shape dim"]:
        """exp(-dsigma Q) s = e^{dsigma} s + (1 - e^{dsigma}) / N sum s."""
        score = _checks.float_array(score, "score")
        d = _sigma(dsigma, score.shape[:-1])[..., None]
        return jnp.exp(d) * score - jnp.expm1(d) / self.num_tokens * jnp.sum(
            score, -1, keepdims=True
        )

    def transp_transition(
        self, xt: Integer[ArrayLike, "*shape"], dsigma: Float[ArrayLike, "*#shape"]
    ) -> Float[Array, "*shape dim"]:
        """Row x_t of exp(dsigma Q)."""
        return self.transition(_tokens(xt, "xt", self.dim), dsigma)

    def sample_prior(
        self, key: PRNGKeyArray, shape: tuple[int, ...], sigma: Float[ArrayLike, "*#shape"]
    ) -> Integer[Array, "*shape"]:
        """Uniform tokens (the limit of the forward process, and its marginal for uniform x_0)."""
        del sigma
        return jax.random.randint(key, shape, 0, self.num_tokens)

    def prior_kl(
        self, x0: Integer[ArrayLike, "*shape"], sigma: Float[ArrayLike, "*#shape"]
    ) -> Float[Array, "*shape"]:
        """KL(p_T(. | x_0) || uniform) per position."""
        x0 = _tokens(x0, "x0", self.dim)
        sigma = _sigma(sigma, x0.shape)
        n = float(self.num_tokens)
        q = -jnp.expm1(-sigma) / n  # p_T(y | x_0) for y != x_0
        p = jnp.exp(-sigma) + q
        safe = jnp.where(q > 0, q * n, 1.0)  # q log(q N) -> 0 at q = 0, with a finite gradient
        return p * jnp.log(p * n) + (n - 1.0) * jnp.where(q > 0, q * jnp.log(safe), 0.0)
