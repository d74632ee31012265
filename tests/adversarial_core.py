"""Adversarial cases for the core functionals (entreg)."""

import jax.numpy as jnp
from adversarial import Bad, Edge

import entreg

NEG_INF = -jnp.inf

CASES = {
    "entreg.entropy": [
        Edge("-inf logit", entreg.entropy, (jnp.array([[2.0, NEG_INF, 0.0]]),)),
        Bad("axis", lambda: entreg.entropy(jnp.zeros(3), axis=2), ValueError, "axis"),
    ],
}
