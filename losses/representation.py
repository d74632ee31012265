"""Spectral regularizers of representations as `entreg.compose` terms: VNE and Vendi diversity.

The sign is in the name: a ``*_bonus`` is maximized (contributes ``-weight * value``), a
``*_penalty`` minimized (``+weight * value``). Each term reads a features signal [..., N, d]
(a batch of embeddings; leading axes are independent sets whose values are averaged).
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp

from entreg import _checks
from entreg.spectral import log_vendi_score, von_neumann_entropy
from entreg.terms import LossTerm, Weight, bonus, penalty


def _features_measure(fn: Callable, features: str, where: str | None, name: str, **kwargs):
    def measure(signals):
        _checks.signals(signals, (features, where), name)
        mask = None if where is None else signals[where]
        return jnp.mean(
            fn(signals[features], **kwargs, **({} if mask is None else {"where": mask}))
        )

    return measure


def vne_bonus(
    weight: Weight = 1.0,
    *,
    name: str = "vne",
    features: str = "features",
    where: str | None = None,
    order: float = 1.0,
) -> LossTerm:
    r"""Von Neumann entropy of the representation as a bonus: ``loss -= weight * VNE``
    (Kim et al., CVPR 2023, "VNE+"). Raises the effective rank and isotropy of the features;
    the paper uses weights well below 0.5 and batches of at least 32. ``where`` names an
    optional boolean row-mask signal. Value: `entreg.von_neumann_entropy` (nats), averaged over
    leading axes."""
    return bonus(
        name, _features_measure(von_neumann_entropy, features, where, name, order=order), weight
    )


def vne_penalty(
    weight: Weight = 1.0,
    *,
    name: str = "vne",
    features: str = "features",
    where: str | None = None,
    order: float = 1.0,
) -> LossTerm:
    r"""Von Neumann entropy as a penalty: ``loss += weight * VNE`` ("VNE-", the paper's negative
    coefficient). Lowers the effective rank: features concentrate on few directions."""
    return penalty(
        name, _features_measure(von_neumann_entropy, features, where, name, order=order), weight
    )


def vendi_bonus(
    weight: Weight = 1.0,
    *,
    name: str = "vendi",
    features: str = "features",
    order: float = 1.0,
    kernel: Callable | None = None,
) -> LossTerm:
    r"""Sample diversity as a bonus: ``loss -= weight * log VS_q(features)`` (Friedman & Dieng
    2023; order q from Pasarkar & Dieng 2024). The log is the scale-free quantity whose gradient
    Vendi sampling follows; small q rewards covering rare modes. Cosine kernel by default."""
    measure = _features_measure(log_vendi_score, features, None, name, order=order, kernel=kernel)
    return bonus(name, measure, weight)
