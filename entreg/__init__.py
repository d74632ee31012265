"""entreg: differentiable, numerically safe entropy and divergence functionals for JAX.

Core functionals live in this package; training-loss terms in `entreg.losses`; fused and chunked
implementations in `entreg.kernels`.
"""

from entreg.aggregation import aggregate
from entreg.categorical import (
    binary_entropy,
    cross_entropy,
    entropy,
    renyi_entropy,
    tsallis_entropy,
)
from entreg.divergences import f_divergence, js_divergence, kl_divergence
from entreg.estimators import kl_estimate

__version__ = "0.1.0"

__all__ = [
    "aggregate",
    "binary_entropy",
    "cross_entropy",
    "entropy",
    "f_divergence",
    "js_divergence",
    "kl_divergence",
    "kl_estimate",
    "renyi_entropy",
    "tsallis_entropy",
]
