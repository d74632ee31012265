"""sigmaReparam (Zhai et al., ICML 2023) as a Flax NNX layer, and tracking of ||W_Q W_K^T||_2."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from entreg import _checks

_GAMMA_INITS = ("spectral", "one")
_DEFAULT_KERNEL_INIT = nnx.initializers.lecun_normal()


class PowerIteration(nnx.Variable):
    """Non-trainable singular-vector estimates, updated without gradient."""


def _normalize(x):
    return x / jnp.maximum(jnp.linalg.norm(x), 1e-12)


class SigmaReparamLinear(nnx.Module):
    r"""Linear layer with spectrally reparametrized weights W_hat = (gamma / sigma(W)) W.

    sigma(W) ~= u^T W v is refreshed by ONE power-iteration step per training call (u <- W v /
    ||W v||, v <- W^T u / ||W^T u||, without gradient, as in the paper) and the gradient flows
    through sigma = u^T W v. Bounding the spectral norm of the attention logits bounds their
    entropy from below (Theorem 3.1, `entreg.entropy_lower_bound`), which prevents collapse.

    ``gamma_init="spectral"`` sets the learned gamma to the initial spectral norm, so W_hat = W at
    initialization (the PyTorch release); ``"one"`` starts from gamma = 1 (the JAX speech code),
    i.e. a weight of spectral norm 1. sigma is computed in float32 whatever the param dtype.
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
        self.in_features, self.out_features = in_features, out_features
        w = kernel_init(rngs.params(), (in_features, out_features), jnp.float32)
        self.kernel = nnx.Param(w)
        self.bias = nnx.Param(jnp.zeros((out_features,))) if use_bias else None
        # Exact top singular vectors at init (one SVD), so the first sigma is accurate.
        left, _, right = jnp.linalg.svd(w, full_matrices=False)
        u, v = left[:, 0], right[0]
        self.u, self.v = PowerIteration(u), PowerIteration(v)
        sigma = u @ w @ v
        self.gamma = nnx.Param(sigma if gamma_init == "spectral" else jnp.ones((), jnp.float32))
        self.update_stats = True

    def sigma(self) -> jax.Array:
        """The current spectral-norm estimate u^T W v (differentiable in W)."""
        w = self.kernel[...].astype(jnp.float32)
        return self.u[...] @ w @ self.v[...]

    def __call__(self, x: jax.Array) -> jax.Array:
        w = self.kernel[...].astype(jnp.float32)
        if self.update_stats:
            wd = jax.lax.stop_gradient(w)
            u = _normalize(wd @ self.v[...])
            v = _normalize(u @ wd)
            self.u[...], self.v[...] = u, v
        sigma = self.u[...] @ w @ self.v[...]
        w_hat = (self.gamma[...] / sigma) * w
        y = x @ w_hat.astype(x.dtype)
        return y if self.bias is None else y + self.bias[...].astype(y.dtype)


def qk_spectral_norm(w_q, w_k, v, *, iters: int = 1):
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
    if not isinstance(iters, int) or iters < 1:
        raise ValueError(f"`iters` must be a positive int, got {iters!r}.")
    v = jax.lax.stop_gradient(_normalize(_checks.float_array(v, "v")))
    wq_sg, wk_sg = jax.lax.stop_gradient((w_q, w_k))
    for _ in range(iters):
        u = _normalize(wq_sg @ (wk_sg.T @ v))
        v = _normalize(wk_sg @ (wq_sg.T @ u))
    u = _normalize(wq_sg @ (wk_sg.T @ v))
    return u @ (w_q @ (w_k.T @ v)), v
