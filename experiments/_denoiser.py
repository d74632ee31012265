"""A small Flax NNX denoiser for discrete diffusion: a bidirectional transformer over tokens,
conditioned on the total noise sigma_bar through an embedding of log sigma_bar added to every
position (SEDD conditions on sigma_bar, not t). The output layer starts at zero, so the initial
log-scores are the graph's parameterization alone."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


def noise_features(sigma, dim: int):
    """Sinusoidal features [B, dim] of log sigma_bar."""
    freqs = jnp.exp(jnp.linspace(0.0, jnp.log(100.0), dim // 2))
    angle = jnp.log(sigma)[:, None] * freqs * 0.25
    return jnp.concatenate([jnp.sin(angle), jnp.cos(angle)], axis=-1)


class Block(nnx.Module):
    def __init__(self, dim: int, heads: int, rngs: nnx.Rngs):
        self.norm1 = nnx.LayerNorm(dim, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(heads, dim, decode=False, rngs=rngs)
        self.norm2 = nnx.LayerNorm(dim, rngs=rngs)
        self.mlp1 = nnx.Linear(dim, 4 * dim, rngs=rngs)
        self.mlp2 = nnx.Linear(4 * dim, dim, rngs=rngs)

    def __call__(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp2(jax.nn.gelu(self.mlp1(self.norm2(x))))


class Denoiser(nnx.Module):
    """``model(x_t [B, L], sigma [B]) -> outputs [B, L, vocab]`` (unconstrained log-scores)."""

    def __init__(self, vocab: int, length: int, *, dim=64, heads=4, layers=2, rngs: nnx.Rngs):
        self.dim = dim
        self.embed = nnx.Embed(vocab, dim, rngs=rngs)
        self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (length, dim)))
        self.time1 = nnx.Linear(dim, dim, rngs=rngs)
        self.time2 = nnx.Linear(dim, dim, rngs=rngs)
        self.blocks = nnx.List([Block(dim, heads, rngs) for _ in range(layers)])
        self.norm = nnx.LayerNorm(dim, rngs=rngs)
        self.out = nnx.Linear(dim, vocab, kernel_init=nnx.initializers.zeros, rngs=rngs)

    def __call__(self, xt, sigma):
        c = self.time2(jax.nn.silu(self.time1(noise_features(sigma, self.dim))))
        x = self.embed(xt) + self.pos[...] + c[:, None, :]
        for block in self.blocks:
            x = block(x)
        return self.out(self.norm(x))
