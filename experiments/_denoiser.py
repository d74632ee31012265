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


class MLPDenoiser(nnx.Module):
    """``model(x_t [B, L], sigma [B]) -> outputs [B, L, vocab]``: a residual MLP over the whole
    one-hot sequence, for sources that are dictionaries of short strings (names), where the
    denoiser must memorize whole-string patterns: at equal compute it learns them faster than
    the transformer. It ignores sigma: under absorbing diffusion the optimal log-score is the
    posterior of the clean tokens given the unmasked ones, which does not depend on sigma once
    the graph's log expm1(sigma) scaling is applied (Ou et al. 2024, "Your absorbing discrete
    diffusion secretly models the conditional distributions of clean data")."""

    def __init__(self, vocab: int, length: int, *, width=512, blocks=2, rngs: nnx.Rngs):
        self.vocab, self.length = vocab, length
        self.embed = nnx.Linear(vocab * length, width, rngs=rngs)
        self.norms = nnx.List([nnx.LayerNorm(width, rngs=rngs) for _ in range(blocks)])
        self.up = nnx.List([nnx.Linear(width, 2 * width, rngs=rngs) for _ in range(blocks)])
        self.down = nnx.List([nnx.Linear(2 * width, width, rngs=rngs) for _ in range(blocks)])
        self.norm = nnx.LayerNorm(width, rngs=rngs)
        self.out = nnx.Linear(width, vocab * length, kernel_init=nnx.initializers.zeros, rngs=rngs)

    def __call__(self, xt, sigma):
        del sigma
        h = self.embed(jax.nn.one_hot(xt, self.vocab).reshape(xt.shape[0], -1))
        for norm, up, down in zip(self.norms, self.up, self.down, strict=True):
            h = h + down(jax.nn.gelu(up(norm(h))))
        return self.out(self.norm(h)).reshape(xt.shape[0], self.length, self.vocab)
