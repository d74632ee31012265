"""sigmaReparam (Zhai et al., ICML 2023) as a Flax NNX layer, and tracking of ||W_Q W_K^T||_2."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from entreg import _checks
from entreg._typing import Array, ArrayLike, Float, Scalar

_GAMMA_INITS = {"spectral": None, "one": 1.0, "zero": 0.0}
_DEFAULT_KERNEL_INIT = nnx.initializers.lecun_normal()


class PowerIteration(nnx.Variable):
    """Non-trainable singular-vector estimates, updated without gradient."""


def _normalize(x, fallback) -> jax.Array:
    """x / ||x||, or ``fallback`` where x is (numerically) zero: a zero weight would otherwise
    zero the singular-vector estimates for good."""
    norm = jnp.linalg.norm(x)
    ok = norm > 1e-30
    return jnp.where(ok, x / jnp.where(ok, norm, 1.0), fallback)


def _spectral_scale(gamma, sigma):
    """gamma / sigma, and 0 where sigma = 0 (a zero weight: W_hat = 0, gradients finite)."""
    ok = sigma > 0
    return jnp.where(ok, gamma / jnp.where(ok, sigma, 1.0), 0.0)


class SigmaReparamLinear(nnx.Module):
    r"""Linear layer with spectrally reparametrized weights W_hat = (gamma / sigma(W)) W.

    sigma(W) ~= u^T W v is refreshed by ONE power-iteration step per training call (u <- W v /
    ||W v||, v <- W^T u / ||W^T u||, without gradient, as in the paper) and the gradient flows
    through sigma = u^T W v. Bounding the spectral norm of the attention logits bounds their
    entropy from below (Theorem 3.1, `entreg.entropy_lower_bound`), which prevents collapse.

    ``gamma_init="spectral"`` sets the learned gamma to the initial spectral norm, so W_hat = W at
    initialization (the PyTorch release); ``"one"`` starts from gamma = 1 (the JAX speech code),
    i.e. a weight of spectral norm 1; ``"zero"`` starts from gamma = 0, a layer whose output
    is zero at initialization that still trains (d W_hat / d gamma = W / sigma). A zero
    *kernel* instead gives W_hat = 0 with zero gradients: the direction W / sigma(W) is
    undefined at W = 0, so keep the kernel init random. sigma is computed in float32 whatever
    the param dtype.
    ``update_stats=False`` (evaluation) reuses the stored vectors; set it on a whole model with
    ``model.eval(update_stats=False)`` and ``model.train(update_stats=True)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        use_bias: bool = True,
        gamma_init: str = "spectral",
        kernel_init=_DEFAULT_KERNEL_INIT,
        rngs: nnx.Rngs,
    ):
        _checks.choice(gamma_init, "gamma_init", _GAMMA_INITS)
        in_features = _checks.positive_int(in_features, "in_features")
        out_features = _checks.positive_int(out_features, "out_features")
        self.in_features, self.out_features = in_features, out_features
        w = kernel_init(rngs.params(), (in_features, out_features), jnp.float32)
        self.kernel = nnx.Param(w)
        self.bias = nnx.Param(jnp.zeros((out_features,))) if use_bias else None
        # Exact top singular vectors at init (one SVD), so the first sigma is accurate.
        left, _, right = jnp.linalg.svd(w, full_matrices=False)
        u, v = left[:, 0], right[0]
        self.u, self.v = PowerIteration(u), PowerIteration(v)
        sigma = u @ w @ v
        init = _GAMMA_INITS[gamma_init]
        self.gamma = nnx.Param(sigma if init is None else jnp.asarray(init, jnp.float32))
        self.update_stats = True

    def sigma(self) -> jax.Array:
        """The current spectral-norm estimate u^T W v (differentiable in W)."""
        w = self.kernel[...].astype(jnp.float32)
        return self.u[...] @ w @ self.v[...]

    def __call__(self, x: Float[Array, "*batch din"]) -> Float[Array, "*batch dout"]:
        """x [..., in_features] -> x W_hat + b [..., out_features]; refreshes u, v first when
        ``update_stats`` (one power-iteration step, no gradient)."""
        w = self.kernel[...].astype(jnp.float32)
        if self.update_stats:
            wd = jax.lax.stop_gradient(w)
            u = _normalize(wd @ self.v[...], self.u[...])
            v = _normalize(u @ wd, self.v[...])
            self.u[...], self.v[...] = u, v
        sigma = self.u[...] @ w @ self.v[...]
        w_hat = _spectral_scale(self.gamma[...], sigma) * w
        y = x @ w_hat.astype(x.dtype)
        return y if self.bias is None else y + self.bias[...].astype(y.dtype)


def qk_spectral_norm(
    w_q: Float[ArrayLike, "dm dh"],
    w_k: Float[ArrayLike, "dm dh"],
    v: Float[ArrayLike, " dm"],
    *,
    iters: int = 1,
) -> tuple[Scalar, Float[Array, " dm"]]:
    r"""Power iteration for ||W_Q W_K^T||_2 without forming the d x d product.

    With M = W_Q W_K^T (``w_q``, ``w_k``: [d_model, d_head]), each step applies M and M^T as two
    thin matrix-vector products: u = M v = W_Q (W_K^T v), v' = M^T u = W_K (W_Q^T u). Carry
    ``v`` across training steps (like sigmaReparam's state) and one step per call tracks the
    norm as the weights move. Returns ``(sigma, v_next)``; no gradient flows into ``v``.
    """
    w_q = _checks.float_array(w_q, "w_q")
    w_k = _checks.float_array(w_k, "w_k")
    _checks.same_shape(w_q, w_k, "w_q", "w_k")
    if w_q.ndim != 2:
        raise ValueError(f"`w_q` must be [d_model, d_head], got {w_q.shape}.")
    iters = _checks.positive_int(iters, "iters")
    v = _checks.float_array(v, "v")
    if v.shape != (w_q.shape[0],):
        raise ValueError(f"`v` must be a vector of length d_model = {w_q.shape[0]}, got {v.shape}.")
    # A zero vector (or zero weights) falls back to the uniform direction: never 0 / 0.
    uniform = jnp.full(v.shape, 1.0 / jnp.sqrt(v.shape[0]), v.dtype)
    v = jax.lax.stop_gradient(_normalize(v, uniform))
    wq_sg, wk_sg = jax.lax.stop_gradient((w_q, w_k))
    for _ in range(iters):
        u = _normalize(wq_sg @ (wk_sg.T @ v), uniform)
        v = _normalize(wk_sg @ (wq_sg.T @ u), v)
    u = _normalize(wq_sg @ (wk_sg.T @ v), uniform)
    return u @ (w_q @ (w_k.T @ v)), v
