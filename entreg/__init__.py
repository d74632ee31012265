"""entreg: differentiable, numerically safe entropy and divergence functionals for JAX.

Core functionals live in this package; training-loss terms in `entreg.losses`; fused and chunked
implementations in `entreg.kernels`; entropy-controlled decoding (logits processors, Mirostat,
generation, model switching) in `entreg.decoding`.
"""

from entreg import decoding, nnx
from entreg.aggregation import aggregate
from entreg.attention import (
    attention_entropy,
    attention_sink_mass,
    effective_keys,
    entropy_lower_bound,
    head_entropy_fractions,
)
from entreg.categorical import (
    binary_entropy,
    cross_entropy,
    entropy,
    renyi_entropy,
    tsallis_entropy,
)
from entreg.compose import ComposedLoss, compose
from entreg.divergences import f_divergence, js_divergence, kl_divergence
from entreg.estimators import kl_estimate
from entreg.score_entropy import score_entropy
from entreg.spectral import (
    diffusion_spectral_entropy,
    diffusion_spectral_mutual_information,
    effective_rank,
    joint_matrix_entropy,
    log_vendi_score,
    log_vendi_score_from_kernel,
    matrix_entropy,
    matrix_mutual_information,
    spectral_entropy,
    stochastic_spectral_entropy,
    vendi_score,
    vendi_score_from_kernel,
    von_neumann_entropy,
)
from entreg.temperature import solve_temperature, token_log_probs
from entreg.terms import (
    BandState,
    ConstraintState,
    EmaState,
    LossTerm,
    TermResult,
    band_penalty,
    bonus,
    constraint,
    ema_metric,
    penalty,
)

__version__ = "0.1.0"

__all__ = [
    "BandState",
    "ComposedLoss",
    "ConstraintState",
    "EmaState",
    "LossTerm",
    "TermResult",
    "aggregate",
    "attention_entropy",
    "attention_sink_mass",
    "effective_keys",
    "entropy_lower_bound",
    "head_entropy_fractions",
    "band_penalty",
    "bonus",
    "compose",
    "constraint",
    "decoding",
    "ema_metric",
    "nnx",
    "penalty",
    "binary_entropy",
    "cross_entropy",
    "entropy",
    "f_divergence",
    "js_divergence",
    "kl_divergence",
    "kl_estimate",
    "renyi_entropy",
    "score_entropy",
    "solve_temperature",
    "token_log_probs",
    "tsallis_entropy",
    "diffusion_spectral_entropy",
    "diffusion_spectral_mutual_information",
    "effective_rank",
    "joint_matrix_entropy",
    "log_vendi_score",
    "log_vendi_score_from_kernel",
    "matrix_entropy",
    "matrix_mutual_information",
    "spectral_entropy",
    "stochastic_spectral_entropy",
    "vendi_score",
    "vendi_score_from_kernel",
    "von_neumann_entropy",
]
