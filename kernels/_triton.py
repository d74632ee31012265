"""How the Pallas kernels are compiled on this backend."""

from __future__ import annotations

import jax


def compiler_params() -> dict:
    """pallas_call keywords: Triton lowering on GPU, interpret mode on every other backend
    (semantics only, for tests and as a portable fallback)."""
    if jax.default_backend() == "gpu":
        from jax.experimental.pallas import triton as plt

        return {"compiler_params": plt.CompilerParams(num_warps=4, num_stages=2)}
    return {"interpret": True}


def pow2(n: int, least: int = 16) -> int:
    """The tile size Triton accepts for n: the next power of two, at least ``least``."""
    return max(least, 1 << (n - 1).bit_length())
