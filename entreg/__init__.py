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
from entreg.critics import concat_scores, separable_scores
from entreg.discrete import discrete_entropy, discrete_mutual_information
from entreg.divergences import f_divergence, js_divergence, kl_divergence
from entreg.embedding_entropy import m_spacing_entropy, vmf_kde_entropy, vmf_log_normalizer
from entreg.estimators import kl_estimate
from entreg.gaussian import (
    gaussian_entropy,
    gaussian_mutual_information,
    gaussian_o_information,
    gaussian_total_correlation,
)
from entreg.knn import kl_entropy, ksg_mutual_information, ksg_total_correlation
from entreg.mi_bounds import (
    MineState,
    barber_agakov_bound,
    dv_bound,
    infonce_bound,
    interpolated_bound,
    js_bound,
    jsd_bound,
    mine_bound,
    nwj_bound,
    smile_bound,
    tuba_bound,
)
from entreg.o_information import MultivariateInformation, multivariate_information
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
    "MineState",
    "MultivariateInformation",
    "barber_agakov_bound",
    "concat_scores",
    "discrete_entropy",
    "discrete_mutual_information",
    "dv_bound",
    "gaussian_entropy",
    "gaussian_mutual_information",
    "gaussian_o_information",
    "gaussian_total_correlation",
    "infonce_bound",
    "interpolated_bound",
    "js_bound",
    "jsd_bound",
    "kl_entropy",
    "ksg_mutual_information",
    "ksg_total_correlation",
    "m_spacing_entropy",
    "mine_bound",
    "multivariate_information",
    "nwj_bound",
    "separable_scores",
    "smile_bound",
    "tuba_bound",
    "vmf_kde_entropy",
    "vmf_log_normalizer",
]
