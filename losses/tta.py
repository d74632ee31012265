"""Test-time adaptation (TTA) by entropy minimization: sample filters, weights, losses, terms.

A source-trained classifier sees unlabeled test batches once, predicts each and updates its
normalization parameters from it. The methods differ in which samples they learn from and how
they weight them:

=================== ===================================================================
Tent                mean entropy of the batch (Wang et al., ICLR 2021)
EATA / ETA          H < E0 and |cos(m, p)| < eps, weight exp(E0 - H), Fisher anchor
                    (Niu et al., ICML 2022)
SAR                 H < E0 at theta and at the SAM point, model recovery (Niu et al., ICLR 2023)
DeYO                H < tau_ent and PLPD > tau_plpd, weight exp(E0 - H) + exp(PLPD)
                    (Lee et al., ICLR 2024)
open-set filter     keep p_adapted(c_o) >= p_original(c_o) (Lee et al., ICCV 2023)
CoTTA / RMT         (symmetric) cross-entropy to an EMA teacher (Wang et al., CVPR 2022;
                    Doebler et al., CVPR 2023)
SHOT-IM             mean H(p_i) - H(mean p) (Liang et al., ICML 2020)
=================== ===================================================================

Conventions:

* ``logits`` are [B, C]: one row per test sample, classes last; a ``-inf`` logit excludes its
  class. ``where`` is an optional boolean [B] marking the rows that exist (False = padding, whose
  logits may hold NaN: they are selected out before any arithmetic).
* Filters are boolean [B] masks, never boolean indexing, so every shape is static under jit.
* A loss is the mean over the SELECTED rows (denominator = number selected, as the reference
  code does); a batch with nothing selected gives exactly 0 with a zero gradient.
* Sample weights, PLPD, EMA states and teacher outputs are detached (``stop_gradient``); the
  entropy being minimized keeps its gradient.
* E0-style margins scale with ln C: E0 = 0.4 ln C is 2.763 for C = 1000 and 0.921 for C = 10
  (`entropy_margin`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
from jaxtyping import Array, Bool, Float

from entreg import _checks, _masked
from entreg.aggregation import aggregate
from entreg.categorical import cross_entropy, entropy
from entreg.divergences import kl_divergence
from entreg.terms import LossTerm, TermResult, Weight, weight_fn

EATA_MOMENTUM = 0.9  # m <- 0.9 m + 0.1 mean p (EATA's update_model_probs)
RECOVERY_MOMENTUM = 0.9  # e <- 0.9 e + 0.1 loss (SAR's update_ema)

# Shape annotations (B = batch, C = classes).
Logits = Float[ArrayLike, "B C"]
Probs = Float[ArrayLike, "B C"]
RowValues = Float[ArrayLike, " B"]
RowMask = Bool[ArrayLike, " B"]
Images = Float[ArrayLike, "B H W C"]
PerRow = Float[Array, " B"]
RowsKept = Bool[Array, " B"]


# ----------------------------------------------------------------------------- validation


def entropy_margin(num_classes: int, factor: float = 0.4) -> float:
    """An entropy margin that scales with the number of classes: factor * ln C.

    EATA's E0, SAR's E0 and DeYO's Ent0 are 0.4 ln C (EATA's command-line default
    0.4 ln 1000 = 2.763; the EATA class default ln(1000)/2 - 1 = 2.454 is used only when a caller
    omits the argument); DeYO's first filter tau_ent is 0.5 ln C.

    Args:
      num_classes: C >= 2.
      factor: the multiple of ln C, > 0.

    Returns:
      The margin in nats (a Python float).
    """
    c = _checks.positive_int(num_classes, "num_classes")
    if c < 2:
        raise ValueError(f"`num_classes` must be >= 2 (ln 1 = 0 leaves no margin), got {c}.")
    factor = _checks.real_scalar(factor, "factor")
    if not factor > 0:
        raise ValueError(f"`factor` must be > 0, got {factor}.")
    return factor * math.log(c)


def _positive(value, name: str) -> float:
    """A static margin in nats: a Python number > 0."""
    value = _checks.real_scalar(value, name)
    if not value > 0:
        raise ValueError(f"`{name}` must be > 0 (an entropy margin in nats), got {value}.")
    return value


def _margin(value, name: str, num_classes: int, factor: float) -> float:
    """A positive static margin, or factor * ln C when None."""
    return entropy_margin(num_classes, factor) if value is None else _positive(value, name)


def _unit_interval(x, name: str) -> float:
    x = _checks.real_scalar(x, name, minimum=0.0)
    if x > 1.0:
        raise ValueError(f"`{name}` must be in [0, 1], got {x}.")
    return x


def _rows(logits, where, name: str = "logits") -> tuple[jax.Array, jax.Array]:
    """Validated [B, C] logits (upcast, padding rows zeroed) and the [B] row mask."""
    z = _checks.float_array(logits, name)
    if z.ndim != 2 or z.shape[-1] < 1:
        raise ValueError(f"`{name}` must be [batch, classes], got shape {z.shape}.")
    valid = _row_mask(where, z.shape[0], name)
    # Padding rows may hold NaN: select them out before any arithmetic.
    return jnp.where(valid[:, None], z, 0.0), valid


def _row_mask(where, batch: int, target: str, name: str = "where") -> jax.Array:
    if where is None:
        return jnp.ones((batch,), jnp.bool_)
    where = _checks.bool_array(where, name)
    if where.shape != (batch,):
        raise ValueError(
            f"`{name}` must be a [batch] row mask matching `{target}` ({batch},), "
            f"got shape {where.shape}."
        )
    return where


def _paired(logits, other, other_name: str, where):
    z, valid = _rows(logits, where)
    o = _checks.float_array(other, other_name)
    _checks.same_shape(z, o, "logits", other_name)
    return z, jnp.where(valid[:, None], o, 0.0), valid


def _probs(z: jax.Array) -> jax.Array:
    return _masked.log_softmax(z, None, -1).p


def _count(mask: jax.Array) -> jax.Array:
    return jnp.sum(mask.astype(jnp.int32))


def _mean(values: jax.Array, selected: jax.Array) -> jax.Array:
    """Mean over the selected rows; 0 with a zero gradient when none is selected."""
    return aggregate(values, selected, "token-mean")


def _weighted_mean(weight: jax.Array, h: jax.Array, selected: jax.Array) -> jax.Array:
    """Mean of weight * h over the selected rows; the weight of the others (possibly NaN, e.g.
    from a garbage x' row) is selected out before it multiplies h, or 0 * NaN reaches dh."""
    return _mean(jnp.where(selected, weight, 0.0) * h, selected)


# ------------------------------------------------------------------ per-sample filters, weights


def reliable_mask(entropy: RowValues, e0: float, *, where=None) -> RowsKept:
    """EATA's and SAR's reliability filter: keep the samples with H < e0 (strict).

    Args:
      entropy: per-sample entropies [B] (nats), e.g. ``entreg.entropy(logits)``.
      e0: the margin, a Python number > 0 (0.4 ln C in EATA, SAR and DeYO).
      where: optional [B] row mask (False rows are never kept).

    Returns:
      A boolean [B] mask. NaN entropies are not kept.
    """
    h = _checks.float_array(entropy, "entropy")
    if h.ndim != 1:
        raise ValueError(f"`entropy` must be a [batch] vector, got shape {h.shape}.")
    return (h < _positive(e0, "e0")) & _row_mask(where, h.shape[0], "entropy")


def entropy_weight(entropy: ArrayLike, e0: float) -> jax.Array:
    r"""EATA's sample weight S(x) = 1 / exp(H - E0) = exp(E0 - H), of the DETACHED entropy.

    For selected samples (H < E0) the weight lies in (1, exp(E0)] = (1, C^0.4] at E0 = 0.4 ln C;
    DeYO uses the same term. Computed for every row (static shapes); combine with a filter by
    selection, never by multiplication.

    Args:
      entropy: entropies (any shape), nats.
      e0: the margin, a Python number > 0.

    Returns:
      The weights, with no gradient.
    """
    h = _checks.float_array(entropy, "entropy")
    return jnp.exp(_positive(e0, "e0") - jax.lax.stop_gradient(h))


def nonredundant_mask(probs: Probs, reference: ArrayLike, eps: float, *, where=None) -> RowsKept:
    """EATA's redundancy filter: keep the samples with |cos(reference, p)| < eps.

    ``reference`` is the EMA m of past mean probability vectors (`EataState.probs`). Since
    p, m >= 0 the cosine is >= 0 and the absolute value is a no-op. For a one-hot p and a uniform m
    the cosine is 1/sqrt(C): 0.032 for C = 1000 (kept at EATA's eps = 0.05) but 0.316 for C = 10,
    where eps = 0.05 rejects practically every sample: scale eps with C (the test-time-adaptation
    benchmark uses 0.4 on CIFAR-10/100).

    Args:
      probs: [B, C] probabilities.
      reference: [C] reference probability vector.
      eps: the cosine margin, in (0, 1].
      where: optional [B] row mask.

    Returns:
      A boolean [B] mask (True = not redundant). The cosine uses max(|p| |m|, 1e-8) as its
      denominator (PyTorch's `cosine_similarity` guard), so a zero reference keeps every row.
    """
    p = _checks.float_array(probs, "probs")
    if p.ndim != 2:
        raise ValueError(f"`probs` must be [batch, classes], got shape {p.shape}.")
    m = _checks.float_array(reference, "reference")
    if m.shape != p.shape[-1:]:
        raise ValueError(f"`reference` must have shape {p.shape[-1:]}, got {m.shape}.")
    eps = _checks.real_scalar(eps, "eps")
    if not 0.0 < eps <= 1.0:
        raise ValueError(f"`eps` must be in (0, 1], got {eps}.")
    valid = _row_mask(where, p.shape[0], "probs")
    p = jnp.where(valid[:, None], p, 0.0)
    norms = jnp.linalg.norm(p, axis=-1) * jnp.linalg.norm(m)
    cos = (p @ m) / jnp.maximum(norms, 1e-8)
    return (jnp.abs(cos) < eps) & valid


def plpd(logits: Logits, destroyed_logits: Logits, *, where=None) -> PerRow:
    r"""DeYO's pseudo-label probability difference p(yhat | x) - p(yhat | x').

    yhat = argmax_c p(c | x) and x' is an object-destroying transform of x (`patch_shuffle`),
    forwarded by the same model. A prediction that rests on shape drops when the shape is
    destroyed (large PLPD); one that rests on colour, texture or a spurious cue does not.

    Args:
      logits: [B, C] logits of x.
      destroyed_logits: [B, C] logits of x'.
      where: optional [B] row mask (0 on False rows).

    Returns:
      PLPD [B], in [-1, 1]; differentiable (the DeYO loss detaches it).
    """
    z, zd, valid = _paired(logits, destroyed_logits, "destroyed_logits", where)
    yhat = jnp.argmax(z, axis=-1)[:, None]
    p = jnp.take_along_axis(_probs(z), yhat, axis=-1)[:, 0]
    pd = jnp.take_along_axis(_probs(zd), yhat, axis=-1)[:, 0]
    return jnp.where(valid, p - pd, 0.0)


def patch_shuffle(key: jax.Array, images: Images, *, grid: int = 4) -> jax.Array:
    """DeYO's object-destroying transform: an independent random permutation of a grid of patches
    per image.

    Each image (NHWC) is cut into ``grid`` x ``grid`` patches, which are reassembled in the order
    ``argsort`` of uniform noise drawn from ``key`` (one permutation per image). If H or W is not
    a multiple of ``grid`` the image is first resized (bilinear) to the nearest smaller multiple
    and back afterwards, as in DeYO. ``grid = 1`` is the identity.

    Args:
      key: a PRNG key.
      images: [B, H, W, C] images.
      grid: patches per side (DeYO's patch_len, default 4: 16 patches).

    Returns:
      The shuffled images, same shape and dtype.
    """
    x = jnp.asarray(images)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"`images` must be a floating-point array, got dtype {x.dtype}.")
    if x.ndim != 4:
        raise ValueError(f"`images` must be [batch, height, width, channels], got {x.shape}.")
    grid = _checks.positive_int(grid, "grid")
    b, h, w, c = x.shape
    ph, pw = h // grid, w // grid
    if ph == 0 or pw == 0:
        raise ValueError(f"`grid` ({grid}) must not exceed the image size {(h, w)}.")
    resized = (ph * grid, pw * grid) != (h, w)
    y = jax.image.resize(x, (b, ph * grid, pw * grid, c), "bilinear") if resized else x
    patches = y.reshape(b, grid, ph, grid, pw, c).transpose(0, 1, 3, 2, 4, 5)
    patches = patches.reshape(b, grid * grid, ph, pw, c)
    order = jnp.argsort(jax.random.uniform(key, (b, grid * grid)), axis=-1)
    patches = jnp.take_along_axis(patches, order[:, :, None, None, None], axis=1)
    y = patches.reshape(b, grid, grid, ph, pw, c).transpose(0, 1, 3, 2, 4, 5)
    y = y.reshape(b, ph * grid, pw * grid, c)
    return (jax.image.resize(y, x.shape, "bilinear") if resized else y).astype(x.dtype)


def confidence_drop_mask(logits: Logits, original_logits: Logits, *, where=None) -> RowsKept:
    """The open-set filter of Lee et al. (ICCV 2023): keep x iff p_a(c_o | x) >= p_o(c_o | x).

    c_o is the class the original (source) model predicts; p_a and p_o are the adapting and the
    original model's probabilities. Under entropy minimization the confidence of wrong and
    unknown-class samples tends to fall, so they drop out. Ties are kept, so before the first
    update (same parameters, same normalization statistics) every sample is kept.

    Args:
      logits: [B, C] logits of the adapting model.
      original_logits: [B, C] logits of the frozen original model on the same batch.
      where: optional [B] row mask.

    Returns:
      A boolean [B] mask.
    """
    z, zo, valid = _paired(logits, original_logits, "original_logits", where)
    c_o = jnp.argmax(zo, axis=-1)[:, None]
    pa = jnp.take_along_axis(_probs(z), c_o, axis=-1)[:, 0]
    po = jnp.take_along_axis(_probs(zo), c_o, axis=-1)[:, 0]
    return (pa >= po) & valid


def symmetric_cross_entropy(
    logits: Logits, teacher_logits: Logits, *, alpha: float = 0.5, where=None
) -> PerRow:
    r"""Per-sample symmetric cross-entropy to a teacher (RMT, Doebler et al. 2023):

        SCE(s, t) = -(1 - a) sum_c t_c log s_c - a sum_c s_c log t_c,

    s = softmax(logits), t = softmax(teacher_logits). ``alpha`` = 0.5 is RMT's (and CoTTA's
    ImageNet loss); ``alpha`` = 0 is CoTTA's CIFAR loss, the cross-entropy with the soft teacher
    target. The teacher is DETACHED (``stop_gradient``); the student gets gradient through both
    terms, through s in the second. SCE(z, z) = H(softmax z); at a = 0.5 the value is symmetric.

    Args:
      logits: [B, C] student logits.
      teacher_logits: [B, C] teacher logits.
      alpha: a in [0, 1].
      where: optional [B] row mask (0 on False rows).

    Returns:
      SCE [B] in nats; +inf where one distribution puts mass on a class the other excludes.
    """
    alpha = _unit_interval(alpha, "alpha")
    s, t, valid = _paired(logits, teacher_logits, "teacher_logits", where)
    t = jax.lax.stop_gradient(t)
    value = (1.0 - alpha) * cross_entropy(s, t)
    if alpha > 0.0:
        value = value + alpha * cross_entropy(t, s)
    return jnp.where(valid, value, 0.0)


def information_maximization(logits: Logits, *, prior=None, where=None) -> jax.Array:
    r"""SHOT's information-maximization loss (Liang et al., ICML 2020) of a batch:

        L_IM = mean_i H(p_i) - H(pbar),      pbar = mean_i p_i,

    i.e. minus the mutual information between a sample and its prediction: confident (low
    H(p_i)) and diverse (high H(pbar)) predictions. L_IM lies in [-ln C, 0]: 0 iff all p_i are
    equal, -ln C iff every p_i is one-hot and pbar is uniform. With a known class ``prior`` pi the
    diversity term becomes KL(pbar || pi): L = mean_i H(p_i) + KL(pbar || pi) >= 0; for a uniform
    prior this is L_IM + ln C (same gradient).

    SHOT evaluates both entropies as -sum p log(p + 1e-5), which shifts them by up to about
    1e-5 C nats; here they are exact (log pbar is a logsumexp of the log-probabilities).

    Args:
      logits: [B, C] logits.
      prior: optional [C] class prior (non-negative, summing to 1).
      where: optional [B] row mask; pbar and the mean are over the True rows.

    Returns:
      The scalar loss; 0 for a batch without rows.
    """
    z, valid = _rows(logits, where)
    d = _masked.log_softmax(z, None, -1)
    mean_h = _mean(_masked.entropy_of(d, -1), valid)
    n = jnp.maximum(_count(valid), 1).astype(z.dtype)
    # log pbar_c = logsumexp_i(log p_ic) - log n over the valid rows, -inf for a class no row
    # supports; jax.nn.logsumexp's gradient is NaN for such an all -inf column (0 / 0).
    keep = valid[:, None] & d.valid
    top = jnp.max(jnp.where(keep, d.log_p, -jnp.inf), axis=0, initial=-jnp.inf)
    top = jax.lax.stop_gradient(jnp.where(jnp.isfinite(top), top, 0.0))
    total = jnp.sum(jnp.where(keep, jnp.exp(jnp.where(keep, d.log_p - top, 0.0)), 0.0), axis=0)
    some = total > 0
    log_pbar = jnp.where(some, top + jnp.log(jnp.where(some, total, 1.0)) - jnp.log(n), -jnp.inf)
    if prior is None:
        diversity = -entropy(log_pbar)
    else:
        prior = _checks.float_array(prior, "prior")
        if prior.shape != z.shape[-1:]:
            raise ValueError(f"`prior` must have shape {z.shape[-1:]}, got {prior.shape}.")
        prior = _checks.nonnegative(prior, "prior", "a class distribution")
        diversity = kl_divergence(log_pbar, jnp.log(prior))
    return jnp.where(jnp.any(valid), mean_h + diversity, 0.0)


# ------------------------------------------------------------------------------------ losses


def _selection_metrics(h, selected, valid, weight=None) -> dict:
    metrics = {
        "selected": selected,
        "num_selected": _count(selected),
        "entropy": _mean(h, valid),
    }
    if weight is not None:
        metrics["weight"] = _mean(weight, selected)
    return metrics


def tent_loss(logits: Logits, *, where=None) -> tuple[jax.Array, dict]:
    """Tent's objective (Wang et al., ICLR 2021): the mean entropy over the batch.

    Args:
      logits: [B, C] logits.
      where: optional [B] row mask; the mean is over the True rows.

    Returns:
      ``(loss, metrics)``: the mean entropy, and ``selected`` (the rows), ``num_selected``,
      ``entropy``.
    """
    z, valid = _rows(logits, where)
    h = entropy(z)
    return _mean(h, valid), _selection_metrics(h, valid, valid)


class EataState(NamedTuple):
    """EATA's running estimate m of the mean prediction, for the redundancy filter."""

    probs: jax.Array  # [C] EMA of the mean probability vector of the selected samples
    initialised: jax.Array  # bool: m exists (False until a batch had a reliable sample)


def eata_init(num_classes: int) -> EataState:
    """An empty `EataState`: the first batch has no m, hence no redundancy filter."""
    c = _checks.positive_int(num_classes, "num_classes")
    return EataState(jnp.zeros((c,), jnp.float32), jnp.zeros((), jnp.bool_))


def _eata_state(state, num_classes: int) -> EataState:
    if not isinstance(state, EataState):
        raise TypeError(
            f"`state` must be an EataState (see eata_init), got {type(state).__name__}."
        )
    if state.probs.shape != (num_classes,):
        raise ValueError(
            f"`state` holds {state.probs.shape} probabilities for {num_classes} classes; "
            f"build it with eata_init({num_classes})."
        )
    return state


def eata_loss(
    logits: Logits, state: EataState, *, eps: float, e0: float | None = None, where=None
) -> tuple[jax.Array, dict]:
    r"""EATA's sample-efficient entropy (Niu et al., ICML 2022), without the Fisher term:

        loss = (1/|S|) sum_{i in S} exp(E0 - sg H_i) H_i,
        S = {i : H_i < E0  and  |cos(m, p_i)| < eps},

    the redundancy condition applying once m exists (``state.initialised``). Fewer selected
    samples mean fewer backward samples; the weight favours confident ones. With no sample
    selected the loss is 0 and EATA takes no optimizer step at all (`adaptation.eata` skips it).
    Update the state afterwards with ``eata_update(state, logits, metrics["selected"])``.
    ETA is this loss alone; EATA adds `fisher_penalty`.

    Args:
      logits: [B, C] logits (of the forward used for the update).
      state: the `EataState` before this batch.
      eps: the redundancy margin (0.05 on ImageNet-1k in EATA; 0.4 on CIFAR-10/100 in the
        test-time-adaptation benchmark; see `nonredundant_mask` for why it must grow as C shrinks).
      e0: the reliability margin, > 0; default 0.4 ln C.
      where: optional [B] row mask.

    Returns:
      ``(loss, metrics)`` with ``selected`` [B], ``reliable`` [B], ``num_selected``,
      ``num_reliable``, ``entropy`` (mean over rows) and ``weight`` (mean over the selected).
    """
    z, valid = _rows(logits, where)
    state = _eata_state(state, z.shape[-1])
    e0 = _margin(e0, "e0", z.shape[-1], 0.4)
    h = entropy(z)
    reliable = reliable_mask(h, e0, where=valid)
    novel = nonredundant_mask(jax.lax.stop_gradient(_probs(z)), state.probs, eps, where=valid)
    selected = reliable & (novel | ~state.initialised)
    w = entropy_weight(h, e0)
    metrics = _selection_metrics(h, selected, valid, w)
    metrics.update(reliable=reliable, num_reliable=_count(reliable))
    return _weighted_mean(w, h, selected), metrics


def eata_update(state: EataState, logits: Logits, selected: RowMask) -> EataState:
    """m <- 0.9 m + 0.1 mean(p over the selected rows); the first value is the plain mean.

    ``selected`` is the mask `eata_loss` returned (on the first batch it equals the reliable
    rows, as in EATA). m is unchanged when nothing is selected. No gradient flows into m.
    """
    z = jax.lax.stop_gradient(_checks.float_array(logits, "logits"))
    if z.ndim != 2:
        raise ValueError(f"`logits` must be [batch, classes], got shape {z.shape}.")
    state = _eata_state(state, z.shape[-1])
    selected = _row_mask(selected, z.shape[0], "logits", "selected")
    n = _count(selected)
    p = jnp.where(selected[:, None], _probs(jnp.where(selected[:, None], z, 0.0)), 0.0)
    mean = jnp.sum(p, axis=0) / jnp.maximum(n, 1).astype(p.dtype)
    blended = EATA_MOMENTUM * state.probs + (1.0 - EATA_MOMENTUM) * mean
    new = jnp.where(state.initialised, blended, mean).astype(state.probs.dtype)
    return EataState(jnp.where(n > 0, new, state.probs), state.initialised | (n > 0))


class FisherState(NamedTuple):
    """EATA's anti-forgetting anchor: diagonal Fisher F and source parameters theta0 (pytrees)."""

    fisher: Any
    anchor: Any


def fisher_diagonal(grad_fn: Callable[[Any, Any], Any], params: Any, batches: Any) -> FisherState:
    r"""EATA's diagonal Fisher estimate F = (1/K) sum_k g_k^2, g_k = grad_fn(params, batch_k).

    EATA squares the gradient of the BATCH-MEAN pseudo-label cross-entropy (2000 clean samples in
    batches of 64, the model already in its adaptation configuration): an empirical Fisher of
    batch means, not of per-sample gradients, so its scale depends on the batch size and the
    penalty weight alpha was tuned against it. `adaptation.estimate_fisher` builds ``grad_fn``
    for an NNX model.

    Args:
      grad_fn: ``(params, batch) -> grads`` (a pytree like ``params``).
      params: the source parameters theta0 (the anchor).
      batches: a pytree whose leaves have a leading axis K >= 1 of batches.

    Returns:
      `FisherState` (fisher, anchor = params), both detached.
    """
    leaves = jax.tree.leaves(batches)
    if not leaves or any(
        jnp.ndim(x) == 0 or jnp.shape(x)[0] != jnp.shape(leaves[0])[0] for x in leaves
    ):
        raise ValueError("`batches` must be a pytree of arrays with a shared leading batch axis.")
    k = jnp.shape(leaves[0])[0]
    if k == 0:
        raise ValueError("`batches` must hold at least one batch (leading axis K >= 1).")
    params = jax.lax.stop_gradient(params)

    def add(total, batch):
        g = grad_fn(params, batch)
        return jax.tree.map(lambda t, x: t + jnp.square(x), total, g), None

    zeros = jax.tree.map(jnp.zeros_like, params)
    total, _ = jax.lax.scan(add, zeros, batches)
    return FisherState(jax.tree.map(lambda t: t / k, total), params)


def fisher_penalty(params: Any, state: FisherState, *, alpha: float) -> jax.Array:
    r"""EATA's anti-forgetting regularizer alpha * sum_i F_i (theta_i - theta0_i)^2.

    alpha = 2000 in EATA (ImageNet, Fisher from 64-sample batches) and 1 in the
    test-time-adaptation benchmark's CIFAR configurations; it must be tuned against the Fisher's
    scale (see `fisher_diagonal`). F and theta0 carry no gradient.

    Args:
      params: the adapted parameters (a pytree like ``state.anchor``).
      state: a `FisherState`.
      alpha: the weight, >= 0.

    Returns:
      The scalar penalty (float32 or wider).
    """
    alpha = _checks.real_scalar(alpha, "alpha", minimum=0.0)
    if not isinstance(state, FisherState):
        raise TypeError(f"`state` must be a FisherState, got {type(state).__name__}.")
    if jax.tree.structure(params) != jax.tree.structure(state.anchor):  # type: ignore[operator]
        raise ValueError(
            "`params` must have the tree structure of the Fisher anchor "
            f"({jax.tree.structure(state.anchor)}), got {jax.tree.structure(params)}."
        )
    fisher, anchor = jax.lax.stop_gradient((state.fisher, state.anchor))
    terms = jax.tree.map(
        lambda f, p, a: jnp.sum(
            f * jnp.square(p - a), dtype=jnp.promote_types(p.dtype, jnp.float32)
        ),
        fisher,
        params,
        anchor,
    )
    return alpha * sum(jax.tree.leaves(terms), jnp.zeros((), jnp.float32))


def sar_loss(logits: Logits, *, e0: float | None = None, where=None) -> tuple[jax.Array, dict]:
    r"""SAR's reliable entropy (Niu et al., ICLR 2023): the plain mean of H_i over H_i < E0.

    SAR evaluates it twice per batch: at theta (rows that pass form the first filter) and at the
    sharpness-aware point theta + rho g / ||g|| on those rows only (pass them as ``where``), and
    steps with the second gradient (`adaptation.sar`). No weighting.

    Args:
      logits: [B, C] logits.
      e0: the margin, > 0; default 0.4 ln C.
      where: optional [B] row mask (the first filter, in the second evaluation).

    Returns:
      ``(loss, metrics)`` with ``selected``, ``num_selected`` and ``entropy``.
    """
    z, valid = _rows(logits, where)
    h = entropy(z)
    selected = reliable_mask(h, _margin(e0, "e0", z.shape[-1], 0.4), where=valid)
    return _mean(h, selected), _selection_metrics(h, selected, valid)


class RecoveryState(NamedTuple):
    """SAR's model-recovery monitor: an EMA of the second-step loss."""

    ema: jax.Array
    initialised: jax.Array  # bool: False until the first valid loss (and after each reset)


def recovery_init() -> RecoveryState:
    return RecoveryState(jnp.zeros((), jnp.float32), jnp.zeros((), jnp.bool_))


def recovery_update(
    state: RecoveryState, loss: ArrayLike, valid: ArrayLike, *, threshold: float = 0.2
) -> tuple[RecoveryState, jax.Array]:
    """SAR's recovery rule: e <- 0.9 e + 0.1 loss (first value = loss), reset when e < threshold.

    ``valid`` False (nothing survived the filters; SAR's loss is NaN then) leaves e unchanged.
    When the EMA falls below ``threshold`` the caller restores the model and optimizer state
    (`adaptation.Adapter` does) and the EMA restarts from the next loss.

    SAR's code takes ``reset_constant_em`` but compares with a hard-coded 0.2 (its default);
    here ``threshold`` is honoured. The entropy scale grows with ln C, so with few classes a
    lower threshold may suit.

    Args:
      state: the `RecoveryState` before this batch.
      loss: the scalar second-step loss (detached here).
      valid: scalar bool, whether the loss averaged at least one sample.
      threshold: the reset threshold, >= 0 (0.2 in SAR).

    Returns:
      ``(new_state, reset)``: ``reset`` is a scalar bool; after a reset the state is cleared.
    """
    threshold = _checks.real_scalar(threshold, "threshold", minimum=0.0)
    if not isinstance(state, RecoveryState):
        raise TypeError(f"`state` must be a RecoveryState, got {type(state).__name__}.")
    loss = jax.lax.stop_gradient(_checks.float_array(loss, "loss"))
    valid = _checks.bool_array(valid, "valid")
    if loss.shape != () or valid.shape != ():
        raise ValueError(
            f"`loss` and `valid` must be scalars, got shapes {loss.shape} and {valid.shape}."
        )
    blended = RECOVERY_MOMENTUM * state.ema + (1.0 - RECOVERY_MOMENTUM) * loss
    ema = jnp.where(state.initialised, blended, loss)
    ema = jnp.where(valid, ema, state.ema).astype(state.ema.dtype)
    initialised = state.initialised | valid
    reset = initialised & (ema < threshold)
    cleared = recovery_init()
    new = RecoveryState(
        jnp.where(reset, cleared.ema, ema), jnp.where(reset, cleared.initialised, initialised)
    )
    return new, reset


def deyo_loss(
    logits: Logits,
    destroyed_logits: Logits,
    *,
    tau_plpd: float = 0.2,
    tau_ent: float | None = None,
    e0: float | None = None,
    reweight_ent: bool = True,
    reweight_plpd: bool = True,
    where=None,
) -> tuple[jax.Array, dict]:
    r"""DeYO's loss (Lee et al., ICLR 2024, "Entropy is not enough for test-time adaptation"):

        loss = (1/|S|) sum_{i in S} a_i H_i,   a_i = exp(Ent0 - sg H_i) + exp(sg PLPD_i),
        S = {i : H_i < tau_ent  and  PLPD_i > tau_plpd}.

    PLPD (`plpd`) compares the prediction on x with the prediction on a shape-destroyed x'
    (`patch_shuffle`); a sample whose prediction survives the destruction rests on something other
    than the object, and is dropped. DeYO forwards x' without gradient and with normalization
    statistics of the first-filter rows only (`adaptation.deyo` does). Either weight can be switched
    off; with both off a_i = 1. No optimizer step when either filter empties the batch.

    Args:
      logits: [B, C] logits of x.
      destroyed_logits: [B, C] logits of x'.
      tau_plpd: PLPD threshold (strict): 0.2 in DeYO's config (wild settings), 0.3 on ImageNet-C,
        0.5 on Waterbirds and ColoredMNIST.
      tau_ent: first-filter entropy margin; default 0.5 ln C.
      e0: Ent0 of the entropy weight; default 0.4 ln C.
      reweight_ent, reweight_plpd: include each weight term.
      where: optional [B] row mask.

    Returns:
      ``(loss, metrics)`` with ``selected``, ``reliable`` (first filter), their counts,
      ``entropy``, ``weight`` and ``plpd`` (mean over the first filter).
    """
    z, zd, valid = _paired(logits, destroyed_logits, "destroyed_logits", where)
    c = z.shape[-1]
    tau_plpd = _checks.real_scalar(tau_plpd, "tau_plpd")
    tau_ent = _margin(tau_ent, "tau_ent", c, 0.5)
    e0 = _margin(e0, "e0", c, 0.4)
    h = entropy(z)
    reliable = reliable_mask(h, tau_ent, where=valid)
    d = jax.lax.stop_gradient(plpd(z, zd, where=reliable))
    selected = reliable & (d > tau_plpd)
    w = jnp.ones_like(h)
    if reweight_ent or reweight_plpd:
        w = reweight_ent * entropy_weight(h, e0) + reweight_plpd * jnp.exp(d)
    metrics = _selection_metrics(h, selected, valid, w)
    metrics.update(reliable=reliable, num_reliable=_count(reliable), plpd=_mean(d, reliable))
    return _weighted_mean(w, h, selected), metrics


def open_set_loss(
    logits: Logits, original_logits: Logits, *, diversity: float = 0.5, where=None
) -> tuple[jax.Array, dict]:
    r"""Entropy minimization with the confidence-drop filter (Lee, Das, Choo, Choi, ICCV 2023):

        loss = (1/|S|) sum_{i in S} H_i - lambda H(mean_i p_i),   S = `confidence_drop_mask`,

    the diversity term over the whole batch, as in the UniEnt re-implementation (lambda = 0.5;
    whether the paper's loss has it is unconfirmed). ``diversity`` = 0 gives Tent on the kept
    samples. A batch with nothing kept gives 0 (the diversity term is dropped too).

    Args:
      logits: [B, C] logits of the adapting model.
      original_logits: [B, C] logits of the frozen original model.
      diversity: lambda >= 0.
      where: optional [B] row mask.

    Returns:
      ``(loss, metrics)`` with ``selected``, ``num_selected`` and ``entropy``.
    """
    diversity = _checks.real_scalar(diversity, "diversity", minimum=0.0)
    z, zo, valid = _paired(logits, original_logits, "original_logits", where)
    h = entropy(z)
    selected = confidence_drop_mask(z, zo, where=valid)
    loss = _mean(h, selected)
    if diversity > 0.0:
        # -H(pbar) = L_IM - mean H: reuse the information-maximization diversity term.
        spread = information_maximization(z, where=valid) - _mean(h, valid)
        loss = jnp.where(jnp.any(selected), loss + diversity * spread, 0.0)
    return loss, _selection_metrics(h, selected, valid)


def mean_teacher_loss(
    logits: Logits,
    teacher_logits: Logits,
    *,
    alpha: float = 0.5,
    augmented_logits=None,
    where=None,
) -> tuple[jax.Array, dict]:
    r"""Mean-teacher self-training: the mean over rows of SCE(student, teacher).

    ``alpha`` = 0: CoTTA's cross-entropy with the soft teacher target (CIFAR); 0.5: RMT's
    symmetric cross-entropy. With ``augmented_logits`` (the student on an augmented view) the
    loss is RMT's 1/2 SCE(s(x), t(x)) + 1/2 SCE(s(aug x), t(x)). The teacher is detached.

    Args:
      logits: [B, C] student logits.
      teacher_logits: [B, C] teacher logits (CoTTA: augmentation-averaged when the anchor is
        unsure).
      alpha: SCE's a in [0, 1].
      augmented_logits: optional [B, C] student logits of an augmented view.
      where: optional [B] row mask.

    Returns:
      ``(loss, metrics)`` with ``selected`` (the rows), ``num_selected`` and ``entropy``.
    """
    z, valid = _rows(logits, where)
    value = symmetric_cross_entropy(z, teacher_logits, alpha=alpha, where=valid)
    if augmented_logits is not None:
        za, _ = _rows(augmented_logits, valid, "augmented_logits")
        _checks.same_shape(z, za, "logits", "augmented_logits")
        aug = symmetric_cross_entropy(za, teacher_logits, alpha=alpha, where=valid)
        value = 0.5 * value + 0.5 * aug
    return _mean(value, valid), _selection_metrics(entropy(z), valid, valid)


# ---------------------------------------------------------------------------------- terms


def _signals(signals, name: str, needed: tuple[str, ...]):
    missing = [s for s in needed if s not in signals]
    if missing:
        raise KeyError(f"Term {name!r} needs the signals {missing}.")
    return signals.get("where")


def _loss_term(
    name: str,
    weight: Weight,
    loss_fn: Callable,
    needed: tuple[str, ...],
    init: Callable[[], Any] = tuple,
    update: Callable | None = None,
) -> LossTerm:
    """A penalty term around ``loss_fn(signals, state, where) -> (loss, metrics)``; the metrics
    become the term's extras (``<name>/selected``, ``<name>/num_selected``, ...)."""
    name = _checks.term_name(name)
    weight_at = weight_fn(weight, name)

    def apply(signals, state, step):
        where = _signals(signals, name, needed)
        loss, metrics = loss_fn(signals, state, where)
        new_state = state if update is None else update(signals, state, metrics)
        w = weight_at(step)
        return TermResult(loss, w, w * loss, new_state, metrics)

    return LossTerm(name, init=init, apply=apply)


def tent_term(*, name: str = "tent", weight: Weight = 1.0) -> LossTerm:
    """`tent_loss` as an `entreg.compose` penalty. Signals: ``logits`` [B, C], optional
    ``where``."""
    return _loss_term(
        name, weight, lambda s, _, where: tent_loss(s["logits"], where=where), ("logits",)
    )


def eata_term(
    num_classes: int,
    *,
    eps: float,
    e0: float | None = None,
    name: str = "eata",
    weight: Weight = 1.0,
) -> LossTerm:
    """`eata_loss` as a stateful penalty term; its state is an `EataState` (updated by
    `eata_update` inside the term). Signals: ``logits``, optional ``where``. Add `fisher_term`
    for EATA (without it, this is ETA)."""
    eata_init(num_classes)  # validates num_classes at construction

    def loss(s, state, where):
        return eata_loss(s["logits"], state, eps=eps, e0=e0, where=where)

    def update(s, state, metrics):
        return eata_update(state, s["logits"], metrics["selected"])

    return _loss_term(
        name, weight, loss, ("logits",), init=lambda: eata_init(num_classes), update=update
    )


def fisher_term(state: FisherState, *, alpha: float, name: str = "fisher") -> LossTerm:
    """`fisher_penalty` as a penalty term reading the signal ``params`` (the adapted
    parameters, a pytree like ``state.anchor``). The weight is ``alpha``."""
    if not isinstance(state, FisherState):
        raise TypeError(f"`state` must be a FisherState, got {type(state).__name__}.")
    alpha = _checks.real_scalar(alpha, "alpha", minimum=0.0)

    def loss(s, _, where):
        return fisher_penalty(s["params"], state, alpha=1.0), {}

    return _loss_term(name, alpha, loss, ("params",))


def sar_term(*, e0: float | None = None, name: str = "sar", weight: Weight = 1.0) -> LossTerm:
    """`sar_loss` as a penalty term. Signals: ``logits``, optional ``where`` (the first filter
    in SAR's second evaluation, which `adaptation.Adapter` passes)."""
    return _loss_term(
        name, weight, lambda s, _, where: sar_loss(s["logits"], e0=e0, where=where), ("logits",)
    )


def deyo_term(*, name: str = "deyo", weight: Weight = 1.0, **deyo_kwargs) -> LossTerm:
    """`deyo_loss` as a penalty term. Signals: ``logits``, ``destroyed_logits`` (the model on
    the shape-destroyed batch, no gradient), optional ``where``. ``deyo_kwargs`` go to
    `deyo_loss` (``tau_plpd``, ``tau_ent``, ``e0``, ``reweight_ent``, ``reweight_plpd``)."""
    unknown = set(deyo_kwargs) - {"tau_plpd", "tau_ent", "e0", "reweight_ent", "reweight_plpd"}
    if unknown:
        raise TypeError(f"`deyo_kwargs` has unknown options {sorted(unknown)}.")

    def loss(s, _, where):
        return deyo_loss(s["logits"], s["destroyed_logits"], where=where, **deyo_kwargs)

    return _loss_term(name, weight, loss, ("logits", "destroyed_logits"))


def open_set_term(
    *, diversity: float = 0.5, name: str = "open_set", weight: Weight = 1.0
) -> LossTerm:
    """`open_set_loss` as a penalty term. Signals: ``logits``, ``original_logits`` (the frozen
    original model on the same batch), optional ``where``."""
    _checks.real_scalar(diversity, "diversity", minimum=0.0)

    def loss(s, _, where):
        return open_set_loss(s["logits"], s["original_logits"], diversity=diversity, where=where)

    return _loss_term(name, weight, loss, ("logits", "original_logits"))


def mean_teacher_term(
    *,
    alpha: float = 0.5,
    augmented: bool = False,
    name: str = "teacher",
    weight: Weight = 1.0,
) -> LossTerm:
    """`mean_teacher_loss` as a penalty term. Signals: ``logits``, ``teacher_logits``, optional
    ``where`` and, with ``augmented=True``, ``augmented_logits``."""
    _unit_interval(alpha, "alpha")
    needed = ("logits", "teacher_logits") + (("augmented_logits",) if augmented else ())

    def loss(s, _, where):
        aug = s["augmented_logits"] if augmented else None
        return mean_teacher_loss(
            s["logits"], s["teacher_logits"], alpha=alpha, augmented_logits=aug, where=where
        )

    return _loss_term(name, weight, loss, needed)


def im_term(*, prior=None, name: str = "im", weight: Weight = 1.0) -> LossTerm:
    """`information_maximization` as a penalty term (SHOT-IM online: Tent plus a diversity
    term). Signals: ``logits``, optional ``where``. Its value may be negative."""

    def loss(s, _, where):
        z, valid = _rows(s["logits"], where)
        h = entropy(z)
        value = information_maximization(z, prior=prior, where=valid)
        return value, _selection_metrics(h, valid, valid)

    return _loss_term(name, weight, loss, ("logits",))
