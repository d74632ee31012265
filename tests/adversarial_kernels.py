"""Adversarial cases for the fused kernels (entreg.kernels), on the default ("xla") path and
the unfused references."""

import jax.numpy as jnp
import numpy as np
from adversarial import Bad, Edge

from entreg import kernels

BF16, F32 = jnp.bfloat16, jnp.float32
RNG = np.random.default_rng(2)
HIDDEN = RNG.normal(size=(2, 3, 8)) * 1e2  # logits of order 1e3
WEIGHT = RNG.normal(size=(8, 11)) * 10.0
LABELS = np.array([[0, 10, -1], [11, 3, 5]])  # -1 and 11 are outside the vocabulary: -inf
Q = RNG.normal(size=(2, 5, 2, 4))
MASK = RNG.random((2, 1, 5, 5)) < 0.6
MASK[0, 0, 1] = False  # a query without a visible key


def token_cases(fn):
    return [
        Edge(
            "labels outside [0, V), large logits, padded vocabulary",
            lambda h, w: fn(h, w, LABELS, valid_vocab=9),
            (HIDDEN, WEIGHT),
            (0, 1),
            infinite_ok=True,
        ),
        Edge(
            "temperature 1e-3",
            lambda h, w: fn(h, w, LABELS, temperature=1e-3),
            (HIDDEN, WEIGHT),
            (0, 1),
            infinite_ok=True,
        ),
        Edge(
            "bf16",
            lambda h, w: fn(h, w, np.array([1, 2])),
            (jnp.ones((2, 8), BF16), jnp.ones((8, 11), BF16)),
            (0, 1),
            dtype=F32,
        ),
        Edge("empty batch", lambda h: fn(h, WEIGHT, np.zeros((0,), int)), (np.zeros((0, 8)),)),
    ]


def token_bads(fn):
    return [
        Bad(
            "integer hidden",
            lambda: fn(np.ones((2, 8), int), WEIGHT, np.array([0, 1])),
            TypeError,
            "hidden",
        ),
        Bad("label shape", lambda: fn(HIDDEN, WEIGHT, np.zeros(3, int)), ValueError, "labels"),
        Bad(
            "temperature",
            lambda: fn(HIDDEN, WEIGHT, LABELS, temperature=-1.0),
            ValueError,
            "temperature",
        ),
    ]


def attention_cases(fn):
    return [
        Edge(
            "dense mask with an empty row, +-1e3 scores",
            lambda q: fn(q * 1e3, q, q, mask=MASK),
            (Q,),
        ),
        Edge("causal, one key", lambda q: fn(q, q[:, :1], q[:, :1], is_causal=True), (Q,)),
        Edge("bf16, causal", lambda q: fn(q, q, q, is_causal=True), (jnp.asarray(Q, BF16),)),
        Edge("unbatched", lambda q: fn(q, q, q), (Q[0],)),
    ]


def attention_bads(fn):
    return [
        Bad("integer query", lambda: fn(np.ones((2, 5, 2, 4), int), Q, Q), TypeError, "query"),
        Bad(
            "key heads",
            lambda: fn(Q, Q[:, :, :1].repeat(3, 2), Q[:, :, :1].repeat(3, 2)),
            ValueError,
            "key",
        ),
        Bad("mask shape", lambda: fn(Q, Q, Q, mask=np.ones((3, 5, 5), bool)), ValueError, "mask"),
    ]


CASES = {
    "entreg.kernels.linear_log_probs_and_entropy": [
        *token_cases(
            lambda h, w, y, **k: kernels.linear_log_probs_and_entropy(h, w, y, chunk_size=4, **k)
        ),
        *token_bads(kernels.linear_log_probs_and_entropy),
        Bad(
            "valid_vocab",
            lambda: kernels.linear_log_probs_and_entropy(HIDDEN, WEIGHT, LABELS, valid_vocab=0),
            ValueError,
            "valid_vocab",
        ),
        Bad(
            "implementation",
            lambda: kernels.linear_log_probs_and_entropy(
                HIDDEN, WEIGHT, LABELS, implementation="cuda"
            ),
            ValueError,
            "implementation",
        ),
    ],
    "entreg.kernels.reference_log_probs_and_entropy": [
        *token_cases(kernels.reference_log_probs_and_entropy),
        *token_bads(kernels.reference_log_probs_and_entropy)[:1],
    ],
    "entreg.kernels.attention_with_entropy": [
        *attention_cases(
            lambda *a, **k: kernels.attention_with_entropy(*a, block_q=2, block_k=2, **k)
        ),
        *attention_bads(kernels.attention_with_entropy),
        Bad(
            "block",
            lambda: kernels.attention_with_entropy(Q, Q, Q, block_q=0),
            ValueError,
            "block_q",
        ),
    ],
    "entreg.kernels.reference_attention_with_entropy": [
        *attention_cases(kernels.reference_attention_with_entropy),
        *attention_bads(kernels.reference_attention_with_entropy)[:2],
    ],
}
