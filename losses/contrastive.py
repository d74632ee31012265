r"""Mutual-information terms for representation learning, as `entreg.compose` bonuses.

Each term reads embedding signals, measures an MI bound or an entropy (nats) and is maximized:
it contributes ``-weight * value``. Signals are [N, ...] batches whose rows are samples; with
``axis_name`` (inside ``jax.shard_map``, rows sharded over that axis) the negatives come from
every device and the measured value is the global one on each device.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from entreg.kernels import infonce_from_embeddings

from entreg import _checks, _masked
from entreg.embedding_entropy import m_spacing_entropy, vmf_kde_entropy
from entreg.mi_bounds import jsd_bound
from entreg.terms import LossTerm, TermResult, Weight, weight_fn

_NEGATIVES = ("cross", "all")
_SIMILARITIES = ("cosine", "dot")
_ESTIMATORS = ("e2mc", "vmf_kde")


def _bonus_term(name: str, weight: Weight, measure) -> LossTerm:
    """A bonus whose ``measure(signals) -> (value, extra_loss, extras)`` may add a penalty."""
    name = _checks.term_name(name)
    weight_at = weight_fn(weight, name)

    def apply(signals, state, step):
        value, extra_loss, extras = measure(signals)
        w = weight_at(step)
        return TermResult(value, w, -w * value + extra_loss, state, extras)

    return LossTerm(name, init=lambda: (), apply=apply)


def _row_mask(signals, where, n: int):
    return None if where is None else _checks.sample_flags(signals[where], n)


def infonce_bonus(
    temperature=0.1,
    *,
    name: str = "infonce",
    weight: Weight = 1.0,
    views: tuple[str, str] = ("z1", "z2"),
    similarity: str = "cosine",
    negatives: str = "cross",
    direction: str = "both",
    where: str | None = None,
    axis_name: str | None = None,
    block_size: int = 512,
    implementation: str | None = None,
) -> LossTerm:
    r"""Contrastive InfoNCE with a temperature (SimCLR / CLIP) as a bonus: ``loss -= w * I_NCE``.

    With z, z' the two views' embeddings [N, e] (signals ``views``), S_ij = sim(z_i, z'_j) / tau:

    * ``negatives="cross"`` (CLIP): each anchor against the N embeddings of the other view,
      ``direction`` "rows", "columns" or "both" (the symmetric loss); K = N candidates;
    * ``negatives="all"`` (SimCLR's NT-Xent): the 2N views [z; z'] are anchors and candidates,
      each anchor against the other 2N - 1 (itself excluded), positive = its other view;
      K = 2N - 1 (``direction`` does not apply: the loss is symmetric).

    The value is the InfoNCE bound log K - CE in nats (`entreg.infonce_bound`), so minimizing the
    usual cross-entropy and maximizing this bonus are the same gradient. It is <= log K, and
    with cosine similarity <= log K - log(1 + (K - 1) e^{-2/tau}): the temperature caps the
    reportable MI (K = 64: 1.905 at tau = 1, 3.392 at 0.5). ``<name>/ceiling`` reports log K.
    Computed by `entreg.kernels.infonce_from_embeddings` (blockwise, no [N, K] matrix).

    Args:
      temperature: tau > 0, a number or the name of a scalar signal (a learned temperature, e.g.
        CLIP's exp(-logit_scale), initialized at 0.07).
      name, weight: the term's name and non-negative weight (or optax schedule).
      views: the two embedding signals [N, e].
      similarity: "cosine" (rows normalized; SimCLR, CLIP) or "dot".
      negatives: "cross" or "all" (above).
      direction: for "cross": "rows", "columns" or "both".
      where: name of a boolean [N] signal, False at padding samples.
      axis_name: inside shard_map, the axis the batch rows are sharded over.
      block_size, implementation: passed to `entreg.kernels.infonce_from_embeddings`.
    """
    _checks.choice(negatives, "negatives", _NEGATIVES)
    _checks.choice(similarity, "similarity", _SIMILARITIES)
    _checks.choice(direction, "direction", ("rows", "columns", "both"))
    if not isinstance(temperature, str):
        _checks.temperature(temperature)
    if not (isinstance(views, (tuple, list)) and len(views) == 2):
        raise ValueError(f"`views` must name two embedding signals, got {views!r}.")

    def measure(signals):
        temp_signal = temperature if isinstance(temperature, str) else None
        _checks.signals(signals, (*views, where, temp_signal), name)
        tau = signals[temperature] if temp_signal else temperature
        z1, z2 = (jnp.asarray(signals[v]) for v in views)
        n = z1.shape[0]
        devices = 1 if axis_name is None else _checks.axis_size(axis_name)
        mask = _row_mask(signals, where, n)
        if mask is not None:  # padding rows may hold garbage: select before any arithmetic
            z1, z2 = (jnp.where(mask[:, None], z, jnp.zeros((), z.dtype)) for z in (z1, z2))
        if similarity == "cosine":
            z1, z2 = _masked.unit_rows(z1), _masked.unit_rows(z2)
        kw = dict(
            temperature=tau,
            block_size=block_size,
            axis_name=axis_name,
            implementation=implementation,
        )
        if negatives == "cross":
            value = infonce_from_embeddings(
                z1, z2, direction=direction, where_x=mask, where_y=mask, **kw
            )
            ceiling = math.log(n * devices)
        else:
            both = jnp.concatenate([z1, z2])
            local = jnp.arange(2 * n)
            offset = 0 if axis_name is None else jax.lax.axis_index(axis_name) * 2 * n
            partner = offset + jnp.where(local < n, local + n, local - n)
            mask2 = None if mask is None else jnp.concatenate([mask, mask])
            value = infonce_from_embeddings(
                both,
                both,
                labels=partner,
                exclude_diagonal=True,
                where_x=mask2,
                where_y=mask2,
                **kw,
            )
            ceiling = math.log(2 * n * devices - 1)
        return value, 0.0, {"ceiling": jnp.asarray(ceiling, value.dtype)}

    return _bonus_term(name, weight, measure)


def deep_infomax_bonus(
    local_features: str = "local",
    global_features: str = "global",
    *,
    name: str = "deep_infomax",
    weight: Weight = 1.0,
    where: str | None = None,
    axis_name: str | None = None,
) -> LossTerm:
    r"""Deep InfoMax's Jensen-Shannon MI term (Hjelm et al. 2019, local-global "fd" mode, JSD).

    Scores T[l, i, j] = <local_i,l, global_j> of every location l of image i with every
    global vector j; positives i = j. Per location, `entreg.jsd_bound`:

        E_p[log 2 - sp(-T)] - E_q[sp(T) - log 2] <= 2 JSD(p(x, y) || p(x) p(y)) <= 2 log 2

    averaged over locations, as a bonus. It tracks the MI but saturates at 2 log 2 nats.

    Args:
      local_features: signal name of local features [N, L, e] (or [N, e] for global-global).
      global_features: signal name of global features [N, e] (the same width e; DIM projects
        both with small networks first).
      name, weight: the term's name and weight.
      where: name of a boolean [N] signal, False at padding images.
      axis_name: inside shard_map, the axis the images are sharded over (globals gathered).
    """

    def measure(signals):
        _checks.signals(signals, (local_features, global_features, where), name)
        loc = _checks.float_array(signals[local_features], "local_features")
        glob = _checks.float_array(signals[global_features], "global_features")
        if loc.ndim == 2:
            loc = loc[:, None, :]
        if loc.ndim != 3 or glob.ndim != 2 or loc.shape[-1] != glob.shape[-1]:
            raise ValueError(
                f"`local_features` [N, L, e] and `global_features` [N, e] must agree, got "
                f"{loc.shape} and {glob.shape}."
            )
        mask = _row_mask(signals, where, loc.shape[0])
        if mask is not None:  # padding rows may hold garbage: select before the products
            loc = jnp.where(mask[:, None, None], loc, 0.0)
            glob = jnp.where(mask[:, None], glob, 0.0)
        glob_all = glob if axis_name is None else jax.lax.all_gather(glob, axis_name, tiled=True)
        scores = jnp.einsum("nle,me->lnm", loc, glob_all)
        pairs = None
        if mask is not None:
            cols = mask if axis_name is None else jax.lax.all_gather(mask, axis_name, tiled=True)
            pairs = mask[:, None] & cols[None, :]
        value = jnp.mean(jsd_bound(scores, where=pairs, axis_name=axis_name))
        return value, 0.0, {}

    return _bonus_term(name, weight, measure)


def _decorrelation(u: jax.Array, valid: jax.Array) -> jax.Array:
    """VICReg's covariance penalty: squared off-diagonal covariances (denominator N - 1) / D,
    over the valid rows, averaged over leading axes."""
    d = u.shape[-1]
    n = jnp.sum(valid, axis=-1).astype(u.dtype)[..., None, None]
    mean = jnp.sum(jnp.where(valid[..., None], u, 0.0), axis=-2, keepdims=True) / jnp.maximum(
        n, 1.0
    )
    centred = jnp.where(valid[..., None], u - mean, 0.0)
    cov = jnp.einsum("...ni,...nj->...ij", centred, centred) / jnp.maximum(n - 1.0, 1.0)
    off = jnp.where(jnp.eye(d, dtype=bool), 0.0, cov)
    return jnp.mean(jnp.sum(off * off, axis=(-2, -1)) / d)


def effective_entropy_bonus(
    estimator: str = "e2mc",
    *,
    name: str = "effective_entropy",
    weight: Weight = 1.0,
    features: str = "features",
    where: str | None = None,
    covariance_weight: float = 0.0,
    kappa: float | None = None,
) -> LossTerm:
    r"""An embedding-entropy bonus: E2MC's effective entropy or ER's vMF KDE entropy.

    * ``"e2mc"`` (Chakraborty et al., AISTATS 2025): each coordinate mapped into (0, 1) by a
      sigmoid, value = mean over coordinates of the m-spacing marginal entropy
      (`entreg.m_spacing_entropy`, m = round(sqrt(N))). ``covariance_weight`` c adds VICReg's
      decorrelation penalty of the transformed coordinates (sum of squared off-diagonal
      covariances / D) to the loss, so the marginals stand for the joint entropy. Value and
      penalty are averaged over leading axes: with the two views stacked [2, N, d] the paper's
      ``c_cov (cov_x + cov_y) - c_ent (H_x + H_y) / 2`` is ``weight=c_ent,
      covariance_weight=2 c_cov`` (c_ent = 10, c_cov = 1 there, added to VICReg for a few
      epochs of continued pre-training). The penalty is reported as ``<name>/covariance``.
    * ``"vmf_kde"`` (Rodriguez-Galvez et al., ICML 2023): the vMF kernel density entropy of the
      unit-normalized features (`entreg.vmf_kde_entropy`, kappa = 10 by default), the entropy
      half of the ER bound.

    Features [..., N, d] (leading axes, e.g. two views stacked, are averaged).

    Args:
      estimator: "e2mc" or "vmf_kde".
      name, weight: the term's name and weight.
      features: the embedding signal.
      where: name of a boolean [..., N] signal, False at padding rows.
      covariance_weight: "e2mc" only, >= 0.
      kappa: "vmf_kde" only, > 0 (default 10).
    """
    _checks.choice(estimator, "estimator", _ESTIMATORS)
    c = _checks.real_scalar(covariance_weight, "covariance_weight", minimum=0.0)
    if estimator == "vmf_kde":
        if c:
            raise ValueError("`covariance_weight` applies to estimator='e2mc' only.")
        kappa = 10.0 if kappa is None else kappa
        if _checks.real_scalar(kappa, "kappa") <= 0:
            raise ValueError(f"`kappa` must be > 0, got {kappa}.")
    elif kappa is not None:
        raise ValueError("`kappa` applies to estimator='vmf_kde' only.")

    def measure(signals):
        _checks.signals(signals, (features, where), name)
        x = _checks.float_array(signals[features], "features")
        if x.ndim < 2:
            raise ValueError(f"`features` must be [..., N, d], got shape {x.shape}.")
        valid = jnp.ones(x.shape[:-1], bool)
        if where is not None:
            valid = _checks.broadcast_bool(signals[where], x.shape[:-1], "where", "features rows")
        x = jnp.where(valid[..., None], x, 0.0)  # padding may hold garbage
        if estimator == "vmf_kde":
            # kappa is a float here (set above for estimator='vmf_kde')
            h = vmf_kde_entropy(x, kappa=kappa, where=valid)  # type: ignore[arg-type]
            return jnp.mean(h), 0.0, {}
        u = jax.nn.sigmoid(x)
        value = jnp.mean(m_spacing_entropy(u, where=valid))
        if not c:
            return value, 0.0, {}
        cov = _decorrelation(jnp.where(valid[..., None], u, 0.0), valid)
        return value, c * cov, {"covariance": cov}

    return _bonus_term(name, weight, measure)
