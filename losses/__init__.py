"""Training-loss terms built on the entreg core (installed as `entreg.losses`).

Representation regularizers: VNE and Vendi-diversity terms; mutual-information bonuses
(contrastive InfoNCE, Deep InfoMax's JSD, E2MC / ER effective entropy).

Discrete diffusion (SEDD): graphs, noise schedules, the denoising score entropy loss, its
likelihood bound and samplers.

RL policy terms take per-token [B, T] matrices (``log_prob, old_log_prob, advantages, mask``)
and return ``(per_token_loss, metrics)``; reduce the loss with `entreg.aggregate`, or wrap it
with `policy_term` for `entreg.compose`.

Test-time adaptation by entropy minimization (Tent, EATA, SAR, DeYO, the open-set filter,
CoTTA / RMT, SHOT-IM): sample filters, weights, losses and terms from `tta`; the NNX + optax
adaptation loop in `entreg.losses.adaptation`.
"""

from entreg.temperature import solve_temperature, token_log_probs

from . import adaptation
from .attention import attention_band_penalty, attention_floor_penalty, max_attention_entropy
from .contrastive import deep_infomax_bonus, effective_entropy_bonus, infonce_bonus
from .covariance import clip_cov_loss, kl_cov_loss, token_covariance
from .diagnostics import EntropyRewardFit, first_order_entropy_change, fit_entropy_reward
from .epo import (
    EpoState,
    epo_init,
    epo_loss,
    epo_penalty,
    epo_phase_weight,
    epo_term,
    epo_update,
    turn_entropy,
)
from .graphs import AbsorbingGraph, UniformGraph
from .grpo import grpo_advantages
from .noise import GeometricNoise, LogLinearNoise
from .ppo import ppo_loss
from .representation import vendi_bonus, vne_bonus, vne_penalty
from .sampling import sample, step_probs
from .score_entropy import (
    denoising_score_entropy,
    score_entropy_term,
    sedd_elbo,
    sedd_loss,
)
from .sigma_reparam import PowerIteration, SigmaReparamLinear, qk_spectral_norm
from .steer import steer_loss, steer_weights
from .terms import attention_entropy_term, entropy_bonus, policy_term
from .tta import (
    EataState,
    FisherState,
    RecoveryState,
    confidence_drop_mask,
    deyo_loss,
    deyo_term,
    eata_init,
    eata_loss,
    eata_term,
    eata_update,
    entropy_margin,
    entropy_weight,
    fisher_diagonal,
    fisher_penalty,
    fisher_term,
    im_term,
    information_maximization,
    mean_teacher_loss,
    mean_teacher_term,
    nonredundant_mask,
    open_set_loss,
    open_set_term,
    patch_shuffle,
    plpd,
    recovery_init,
    recovery_update,
    reliable_mask,
    sar_loss,
    sar_term,
    symmetric_cross_entropy,
    tent_loss,
    tent_term,
)

__all__ = [
    "AbsorbingGraph",
    "GeometricNoise",
    "LogLinearNoise",
    "UniformGraph",
    "denoising_score_entropy",
    "sample",
    "score_entropy_term",
    "sedd_elbo",
    "sedd_loss",
    "step_probs",
    "PowerIteration",
    "SigmaReparamLinear",
    "attention_band_penalty",
    "attention_entropy_term",
    "attention_floor_penalty",
    "max_attention_entropy",
    "qk_spectral_norm",
    "EntropyRewardFit",
    "EpoState",
    "clip_cov_loss",
    "deep_infomax_bonus",
    "effective_entropy_bonus",
    "infonce_bonus",
    "entropy_bonus",
    "epo_init",
    "epo_loss",
    "epo_penalty",
    "epo_phase_weight",
    "epo_term",
    "epo_update",
    "first_order_entropy_change",
    "fit_entropy_reward",
    "grpo_advantages",
    "kl_cov_loss",
    "policy_term",
    "ppo_loss",
    "solve_temperature",
    "steer_loss",
    "steer_weights",
    "token_covariance",
    "token_log_probs",
    "turn_entropy",
    "vendi_bonus",
    "vne_bonus",
    "vne_penalty",
    "EataState",
    "FisherState",
    "RecoveryState",
    "adaptation",
    "confidence_drop_mask",
    "deyo_loss",
    "deyo_term",
    "eata_init",
    "eata_loss",
    "eata_term",
    "eata_update",
    "entropy_margin",
    "entropy_weight",
    "fisher_diagonal",
    "fisher_penalty",
    "fisher_term",
    "im_term",
    "information_maximization",
    "mean_teacher_loss",
    "mean_teacher_term",
    "nonredundant_mask",
    "open_set_loss",
    "open_set_term",
    "patch_shuffle",
    "plpd",
    "recovery_init",
    "recovery_update",
    "reliable_mask",
    "sar_loss",
    "sar_term",
    "symmetric_cross_entropy",
    "tent_loss",
    "tent_term",
]
