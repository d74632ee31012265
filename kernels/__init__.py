"""Fused, chunked and Pallas implementations of entreg functionals (as `entreg.kernels`).

Each op has an unfused reference next to its implementations and an ``implementation=``
argument; None picks the best one for the backend and falls back to the pure-JAX one.
"""

from .attention import attention_with_entropy, reference_attention_with_entropy
from .token_entropy import linear_log_probs_and_entropy, reference_log_probs_and_entropy

__all__ = [
    "attention_with_entropy",
    "linear_log_probs_and_entropy",
    "reference_attention_with_entropy",
    "reference_log_probs_and_entropy",
]
