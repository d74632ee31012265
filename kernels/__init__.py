"""Fused, chunked and Pallas implementations of entreg functionals (as `entreg.kernels`).

Each op has an unfused reference next to its implementations ("reference"), a pure-JAX blockwise
one that every backend runs ("xla", the default) and Pallas kernels: "mosaic" (Mosaic GPU for
Hopper; emulated elsewhere, `_mosaic.py`) and "triton" (Triton lowering on GPU, interpret mode
elsewhere), chosen by ``implementation=``. One test suite per op runs all four.
`infonce_from_embeddings` (contrastive InfoNCE without the [N, M] scores) has the blockwise
"xla" implementation and its dense "reference".
"""

from .attention import attention_with_entropy, reference_attention_with_entropy
from .contrastive import infonce_from_embeddings, reference_infonce_from_embeddings
from .token_entropy import linear_log_probs_and_entropy, reference_log_probs_and_entropy

__all__ = [
    "attention_with_entropy",
    "infonce_from_embeddings",
    "linear_log_probs_and_entropy",
    "reference_attention_with_entropy",
    "reference_infonce_from_embeddings",
    "reference_log_probs_and_entropy",
]
