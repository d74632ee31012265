"""Test-time adaptation of a Flax NNX model: one jitted step per test batch.

A `Method` is a configuration of `entreg.losses` terms (`tent_term`, `eata_term`, ...) plus the
machinery around them; `Adapter` runs it. Each step predicts the batch with the current
parameters, then updates the adapted parameters from the same forward::

    adapter = adaptation.Adapter(model, adaptation.tent(optax.adam(1e-3)))
    state = adapter.init()
    for x in stream:
        state, logits, metrics = adapter.step(state, x)  # logits: pre-update prediction

What the loop does, following the reference implementations:

* Only the selected parameters get gradients (default: the scale and bias of every BatchNorm,
  LayerNorm, GroupNorm and RMSNorm layer, `norm_params`); everything else is left bit-identical.
  The optimizer sees only those parameters, so no masking is needed (``optax.masked`` would pass
  the raw gradient of the unmasked leaves through as their update: it is not a freezing tool).
* BatchNorm normalizes with the statistics of the current test batch in every forward (its
  running averages still move as a side effect and are part of the state, never used).
* Episodic mode resets to the source model and optimizer state before every batch; continual
  mode (the default) never resets. `Adapter.reset` does it on demand.
* Options: skipping the optimizer step when a filter empties the batch (EATA, DeYO; a zero
  gradient would still move momentum and Adam), a sharpness-aware step through
  ``optax.contrib.sam`` and model recovery (SAR), the shape-destroyed forward with
  normalization statistics of the first-filter rows (DeYO), a frozen original model (open-set
  filter, CoTTA's anchor), an EMA teacher with augmentation averaging and stochastic restore
  (CoTTA) and an augmented student view (RMT).

Randomness comes only from the ``key`` passed to `Adapter.step` / `Adapter.run`.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from entreg import _checks
from entreg.categorical import cross_entropy, entropy
from entreg.compose import ComposedLoss, compose
from entreg.terms import LossTerm

from . import tta

__all__ = [
    "AdaptState",
    "Adapter",
    "Method",
    "bn_adapt",
    "cotta",
    "deyo",
    "eata",
    "estimate_fisher",
    "norm_params",
    "open_set",
    "rmt",
    "sar",
    "sharpness_aware",
    "shot_im",
    "tent",
]

NORM_LAYERS = (nnx.BatchNorm, nnx.LayerNorm, nnx.GroupNorm, nnx.RMSNorm)
PREDICTIONS = ("student", "teacher", "ensemble")


def norm_params(model: nnx.Module, *, exclude: Callable[[tuple], bool] | None = None):
    """An nnx filter for the affine scale and bias of the model's normalization layers.

    Selects the `nnx.Param` leaves of every BatchNorm, LayerNorm, GroupNorm and RMSNorm module
    (Tent: BatchNorm only, as its models have no other; SAR and DeYO: all three kinds). Pass it as
    ``wrt`` to `nnx.Optimizer` and as ``nnx.DiffState(0, filter)`` to `nnx.value_and_grad` in a
    loop of your own.

    Args:
      model: an NNX module.
      exclude: optional predicate on a norm module's path (a tuple of attribute names and
        indices) that leaves it out; SAR skips ResNet-50's layer4 and ViT's blocks 9-11 and
        final norm, e.g. ``exclude=lambda path: path[:1] == ("layer4",)``.

    Returns:
      The filter ``nnx.All(nnx.Param, <path is a selected norm layer>)``.
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"`model` must be an nnx.Module, got {type(model).__name__}.")
    paths = {
        tuple(path)
        for path, module in nnx.iter_modules(model)
        if isinstance(module, NORM_LAYERS) and not (exclude is not None and exclude(tuple(path)))
    }
    if not paths:
        raise ValueError(
            "`model` has no BatchNorm, LayerNorm, GroupNorm or RMSNorm layer to adapt"
            + (" outside `exclude`." if exclude is not None else ".")
        )
    return nnx.All(nnx.Param, lambda path, _: tuple(path[:-1]) in paths)


def _safe_normalize(eps: float = 1e-12) -> optax.GradientTransformation:
    """g / (||g||_2 + eps) over the whole tree: 0 for a zero gradient (optax.contrib.normalize
    divides by the bare norm, so a fully filtered batch would give NaN)."""

    def update(updates, state, params=None):
        del params
        scale = 1.0 / (optax.tree.norm(updates) + eps)
        return jax.tree.map(lambda g: g * scale.astype(g.dtype), updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def sharpness_aware(
    optimizer: optax.GradientTransformation, rho: float = 0.05
) -> optax.GradientTransformationExtraArgs:
    r"""SAM as SAR uses it: ``optax.contrib.sam`` with a non-adaptive ascent of radius rho.

    In transparent mode each ``update`` call is half a step: the first, with g1 at theta,
    moves to theta + rho g1 / (||g1||_2 + 1e-12) (global norm over all adapted parameters);
    the second, with g2 taken there, returns to theta and applies ``optimizer`` to g2. Feed the
    same batch to both calls (`Adapter` does). The epsilon keeps a zero gradient (nothing
    selected) finite.

    Args:
      optimizer: the base optimizer (SAR: SGD with momentum 0.9).
      rho: the neighbourhood radius, >= 0 (0.05 in SAR).

    Returns:
      The SAM transformation (its state caches the outer parameters).
    """
    rho = _checks.real_scalar(rho, "rho", minimum=0.0)
    adversary = optax.chain(_safe_normalize(), optax.sgd(rho))
    return optax.contrib.sam(optimizer, adversary, sync_period=2, reset_state=True)


@dataclasses.dataclass(frozen=True)
class Method:
    """A test-time adaptation method: loss terms plus the machinery `Adapter` runs around them.

    The terms read the signals the loop provides: ``logits`` [B, C] (student, with gradient),
    ``params`` (the adapted parameters), ``where`` [B] (in SAR's second evaluation: the rows
    the first one selected), ``original_logits`` (frozen source model; ``original=True``),
    ``destroyed_logits`` (``destroy`` set), ``teacher_logits`` (``teacher_momentum`` set) and
    ``augmented_logits`` (``augment_student=True``). The presets (`tent`, `eata`, `sar`, `deyo`,
    `open_set`, `cotta`, `rmt`, `shot_im`, `bn_adapt`) fill these in from the papers.

    Attributes:
      terms: `entreg.losses` terms (`LossTerm`s), composed with `entreg.compose`.
      optimizer: the optax optimizer of the adapted parameters.
      wrt: nnx filter of the adapted parameters; None = `norm_params` of the model.
      selector: the term whose ``selected`` / ``num_selected`` / ``value`` drive ``skip_empty``,
        SAR's second evaluation and recovery; default the first term.
      skip_empty: no optimizer step (parameters and optimizer state kept) when the selector
        selected nothing (EATA, DeYO).
      episodic: reset to the source model before every batch.
      sam_rho: sharpness-aware step of radius rho (`sharpness_aware`); the second evaluation
        sees ``where`` = the first's selection.
      recovery_threshold: SAR's model recovery: reset when the EMA of the selector's value
        (after the SAM step) falls below it.
      destroy: ``(key, x) -> x'`` object-destroying transform (DeYO's `tta.patch_shuffle`).
      subset_statistics: forward x' with ``model(x', mask=rows)``, rows = H < ``tau_ent`` of the
        first forward, so BatchNorm takes its statistics from those rows (DeYO); the model must
        accept ``mask`` [B] and hand it, broadcast, to its BatchNorm layers.
      tau_ent: the entropy margin of those rows; None = 0.5 ln C. Keep it equal to the DeYO
        term's ``tau_ent`` (`deyo` does).
      original: provide the frozen source model's ``original_logits``.
      teacher_momentum: a in theta' <- a theta' + (1 - a) theta, an EMA teacher of the adapted
        parameters (CoTTA, RMT: 0.999).
      anchor_threshold: CoTTA's p_th: when the source model's batch-mean max-probability is
        below it, the teacher's logits are averaged over ``num_views`` augmented views.
      num_views: CoTTA's N (32).
      augment: ``(key, x) -> x`` augmentation for the teacher views and the student view.
      augment_student: provide ``augmented_logits`` (RMT).
      restore_prob: CoTTA's stochastic restore: after each step every adapted parameter element
        returns to its source value with this probability.
      predict: which logits `Adapter.step` returns: ``"student"`` (pre-update forward),
        ``"teacher"`` (CoTTA) or ``"ensemble"`` (student + teacher, RMT).
    """

    terms: tuple[LossTerm, ...]
    optimizer: optax.GradientTransformation
    wrt: Any = None
    selector: str | None = None
    skip_empty: bool = False
    episodic: bool = False
    sam_rho: float | None = None
    recovery_threshold: float | None = None
    destroy: Callable | None = None
    subset_statistics: bool = True
    tau_ent: float | None = None
    original: bool = False
    teacher_momentum: float | None = None
    anchor_threshold: float | None = None
    num_views: int = 32
    augment: Callable | None = None
    augment_student: bool = False
    restore_prob: float = 0.0
    predict: str = "student"

    def __post_init__(self):
        terms = tuple(self.terms)
        for t in terms:
            if not isinstance(t, LossTerm):
                raise TypeError(f"`terms` must hold entreg LossTerms, got {type(t).__name__}.")
        object.__setattr__(self, "terms", terms)
        if not (hasattr(self.optimizer, "init") and hasattr(self.optimizer, "update")):
            raise TypeError(
                f"`optimizer` must be an optax GradientTransformation, got {self.optimizer!r}."
            )
        names = [t.name for t in terms]
        if self.selector is None and names:
            object.__setattr__(self, "selector", names[0])
        elif self.selector is not None and self.selector not in names:
            raise ValueError(
                f"`selector` must name one of the terms {names}, got {self.selector!r}."
            )
        needs_selector = self.skip_empty or self.sam_rho is not None
        if (needs_selector or self.recovery_threshold is not None) and self.selector is None:
            raise ValueError("`selector` is needed by skip_empty, sam_rho and recovery_threshold.")
        if self.sam_rho is not None:
            _checks.real_scalar(self.sam_rho, "sam_rho", minimum=0.0)
        if self.recovery_threshold is not None:
            _checks.real_scalar(self.recovery_threshold, "recovery_threshold", minimum=0.0)
        if self.tau_ent is not None:
            tta._positive(self.tau_ent, "tau_ent")
        if self.teacher_momentum is not None:
            tta._unit_interval(self.teacher_momentum, "teacher_momentum")
        tta._unit_interval(self.restore_prob, "restore_prob")
        _checks.positive_int(self.num_views, "num_views")
        _checks.choice(self.predict, "predict", PREDICTIONS)
        if self.predict != "student" and self.teacher_momentum is None:
            raise ValueError(f"`predict`={self.predict!r} needs a teacher (`teacher_momentum`).")
        if self.anchor_threshold is not None:
            tta._unit_interval(self.anchor_threshold, "anchor_threshold")
            if self.teacher_momentum is None:
                raise ValueError(
                    "`anchor_threshold` averages teacher views: set `teacher_momentum`."
                )
        if (self.anchor_threshold is not None or self.augment_student) and self.augment is None:
            raise ValueError("`augment` is needed by anchor_threshold and augment_student.")
        for name in ("destroy", "augment"):
            fn = getattr(self, name)
            if fn is not None and not callable(fn):
                raise TypeError(f"`{name}` must be a callable (key, x) -> x, got {fn!r}.")

    @property
    def needs_key(self) -> bool:
        return (
            self.destroy is not None
            or self.anchor_threshold is not None
            or self.augment_student
            or self.restore_prob > 0.0
        )


class AdaptState(NamedTuple):
    """Everything `Adapter.step` carries from batch to batch (a pytree)."""

    params: Any  # the adapted parameters (nnx.State)
    rest: Any  # every other variable: frozen parameters, BatchNorm running statistics, ...
    opt_state: Any
    terms: dict  # the terms' states (entreg.compose), e.g. an EataState
    teacher: Any  # EMA teacher parameters (None without a teacher)
    recovery: tta.RecoveryState
    source: tuple[Any, Any]  # (params, rest) at setup: the reset target and the original model
    steps: jax.Array  # int32, batches seen


def _signals_base(signals):
    return jnp.zeros((), jnp.float32), signals


def _tree_where(cond, a, b):
    return jax.tree.map(lambda x, y: jnp.where(cond, x, y), a, b)


def _configured(model: nnx.Module) -> nnx.Module:
    """A copy of the model whose BatchNorm layers normalize with the batch statistics."""
    if not isinstance(model, nnx.Module):
        raise TypeError(f"`model` must be an nnx.Module, got {type(model).__name__}.")
    model = nnx.clone(model)
    for _, module in nnx.iter_modules(model):
        if isinstance(module, nnx.BatchNorm):
            module.use_running_average = False
    return model


def _split(model: nnx.Module, wrt):
    # Only parameters adapt: running statistics and other variables stay in `rest`.
    wrt = norm_params(model) if wrt is None else nnx.All(nnx.Param, wrt)
    graphdef, params, rest = nnx.split(model, wrt, ...)  # type: ignore[misc]  # 3 filters: 3 parts
    if not jax.tree.leaves(params):
        raise ValueError("`wrt` selects no parameter (nnx.Param) of `model`: nothing would adapt.")
    # Raw arrays, not Variables: merged inside a transform, a Variable from the outer trace
    # could not be updated (BatchNorm writes its running statistics).
    return wrt, graphdef, nnx.as_pure(params), nnx.as_pure(rest)


class Adapter:
    """Runs a `Method` on an NNX model: `init`, then `step` per test batch (or `run` on a stack).

    The model is copied and its BatchNorm layers set to batch statistics; the given model is
    left untouched. ``nnx.merge(adapter.graphdef, state.params, state.rest)`` rebuilds the
    adapted model.

    Args:
      model: the source-trained NNX classifier, ``model(x) -> logits [B, C]``.
      method: a `Method` (see the presets).
    """

    def __init__(self, model: nnx.Module, method: Method):
        if not isinstance(method, Method):
            raise TypeError(f"`method` must be an adaptation.Method, got {type(method).__name__}.")
        model = _configured(model)
        self.method = method
        self.wrt, self.graphdef, params, rest = _split(model, method.wrt)
        self._source = (params, rest)
        self.optimizer = (
            method.optimizer
            if method.sam_rho is None
            else sharpness_aware(method.optimizer, method.sam_rho)
        )
        self.loss: ComposedLoss = compose(_signals_base, *method.terms)
        self._step_jit = jax.jit(self._step)
        self._run_jit = jax.jit(self._run)
        self._predict_jit = jax.jit(lambda state, x: self._apply(state.params, state.rest, x)[0])

    # -- state ---------------------------------------------------------------------------

    def init(self) -> AdaptState:
        """The state at setup: source parameters, fresh optimizer and term states."""
        params, rest = self._source
        state = AdaptState(
            params,
            rest,
            None,
            {},
            None,
            tta.recovery_init(),
            (params, rest),
            jnp.zeros((), jnp.int32),
        )
        return self._fresh(state)

    def _fresh(self, state: AdaptState) -> AdaptState:
        params, rest = state.source
        teacher = None if self.method.teacher_momentum is None else params
        return state._replace(
            params=params,
            rest=rest,
            opt_state=self.optimizer.init(params),
            terms=self.loss.init(),
            teacher=teacher,
            recovery=tta.recovery_init(),
        )

    def reset(self, state: AdaptState) -> AdaptState:
        """Restores the model, optimizer, term states, teacher and recovery monitor from setup
        (Tent's reset: model AND optimizer); the step count is kept."""
        if not isinstance(state, AdaptState):
            raise TypeError(f"`state` must be an AdaptState, got {type(state).__name__}.")
        return self._fresh(state)

    # -- forwards ------------------------------------------------------------------------

    def _apply(self, params, rest, x, mask=None):
        model = nnx.merge(self.graphdef, params, rest)
        if mask is None:
            logits = model(x)
        else:
            try:
                logits = model(x, mask=mask)
            except TypeError as e:
                raise TypeError(
                    "DeYO's shape-destroyed forward calls `model(x, mask=rows)` so that BatchNorm "
                    "takes its statistics from the first-filter rows; make the model accept "
                    "`mask` [B] and pass it (broadcast) to its BatchNorm layers, or set "
                    f"`subset_statistics=False`. ({e})"
                ) from None
        return logits, nnx.as_pure(nnx.split(model, self.wrt, ...)[2])  # type: ignore[misc]

    def _teacher_logits(self, state: AdaptState, x, original, key):
        m = self.method

        def teacher(view):
            return self._apply(state.teacher, state.rest, view)[0]

        plain = teacher(x)
        if m.anchor_threshold is None:
            return jax.lax.stop_gradient(plain)
        confidence = jnp.mean(jnp.max(jax.nn.softmax(original, axis=-1), axis=-1))

        augment = m.augment
        assert augment is not None  # Method requires it with anchor_threshold

        def averaged():
            views = jax.vmap(lambda k: teacher(augment(k, x)))(jax.random.split(key, m.num_views))
            return jnp.mean(views, axis=0).astype(plain.dtype)

        out = jax.lax.cond(confidence < m.anchor_threshold, averaged, lambda: plain)
        return jax.lax.stop_gradient(out)

    def _destroyed_logits(self, params, rest, x, logits, key):
        m = self.method
        mask = None
        if m.subset_statistics:
            h = entropy(jax.lax.stop_gradient(logits))
            tau = m.tau_ent if m.tau_ent is not None else tta.entropy_margin(logits.shape[-1], 0.5)
            mask = h < tau
        params = jax.lax.stop_gradient(params)
        assert m.destroy is not None  # only called with a destroy transform
        destroyed = m.destroy(key, x)

        def forward(mask):
            return self._apply(params, rest, destroyed, mask)[0]

        if mask is None:
            return jax.lax.stop_gradient(forward(None))
        # Every row reliable: the plain forward (a mask of all True normalizes the same rows in
        # another summation order, so the identity transform would not give PLPD = 0 exactly).
        # No row reliable: DeYO stops before this forward; full-batch statistics keep the
        # unused output finite.
        some = jnp.any(mask) & ~jnp.all(mask)
        out = jax.lax.cond(some, lambda: forward(mask), lambda: forward(None))
        return jax.lax.stop_gradient(out)

    # -- the step --------------------------------------------------------------------------

    def _keys(self, key):
        if key is None:
            if self.method.needs_key:
                raise ValueError(
                    "`key` is required: this method draws random transforms, views or restores."
                )
            return (None,) * 4
        key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
        return tuple(jax.random.split(key, 4))

    def _step(self, state: AdaptState, x, key):
        m = self.method
        if m.episodic:
            state = self._fresh(state)
        k_destroy, k_augment, k_teacher, k_restore = self._keys(key)
        signals: dict[str, Any] = {}
        original = None
        if m.original or m.anchor_threshold is not None:
            original = jax.lax.stop_gradient(self._apply(*state.source, x)[0])
            if m.original:
                signals["original_logits"] = original
        teacher_logits = None
        if m.teacher_momentum is not None:
            teacher_logits = self._teacher_logits(state, x, original, k_teacher)
            signals["teacher_logits"] = teacher_logits

        def objective(params, where):
            logits, rest = self._apply(params, state.rest, x)
            s = {**signals, "logits": logits, "params": params}
            if where is not None:
                s["where"] = where
            if m.destroy is not None:
                s["destroyed_logits"] = self._destroyed_logits(
                    params, state.rest, x, logits, k_destroy
                )
            if m.augment_student:
                assert m.augment is not None  # Method requires it with augment_student
                s["augmented_logits"] = self._apply(params, state.rest, m.augment(k_augment, x))[0]
            loss, (terms, metrics) = self.loss(s, state=state.terms)
            return loss, (terms, metrics, logits, rest)

        grad_fn = jax.value_and_grad(objective, has_aux=True)
        (_, (terms, metrics, logits, rest)), grads = grad_fn(state.params, None)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        final = metrics
        if m.sam_rho is not None:
            where = _selected(metrics, m.selector)
            (_, (terms, final, _, _)), grads = grad_fn(params, where)
            updates, opt_state = self.optimizer.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            metrics = {**metrics, **{f"sharp/{k}": v for k, v in final.items()}}

        applied = jnp.ones((), jnp.bool_)
        if m.skip_empty:
            applied = _num_selected(final, m.selector) > 0
            params = _tree_where(applied, params, state.params)
            opt_state = _tree_where(applied, opt_state, state.opt_state)
        teacher = state.teacher
        if m.teacher_momentum is not None:
            a = m.teacher_momentum
            teacher = jax.tree.map(lambda t, p: a * t + (1.0 - a) * p, teacher, params)
        if m.restore_prob > 0.0:
            params = _restore(k_restore, params, state.source[0], m.restore_prob)
        recovery, fired = state.recovery, jnp.zeros((), jnp.bool_)
        if m.recovery_threshold is not None:
            recovery, fired = tta.recovery_update(
                state.recovery,
                final[f"{m.selector}/value"],
                _num_selected(final, m.selector) > 0,
                threshold=m.recovery_threshold,
            )
        new = AdaptState(
            params, rest, opt_state, terms, teacher, recovery, state.source, state.steps + 1
        )
        if m.recovery_threshold is not None:
            new = _tree_where(fired, self._fresh(new), new)
        metrics = {**metrics, "adapt/updated": applied, "adapt/reset": fired}
        if m.predict == "teacher":
            prediction = teacher_logits
        elif m.predict == "ensemble":
            prediction = logits + teacher_logits
        else:
            prediction = logits
        return new, prediction, metrics

    def step(self, state: AdaptState, x, key=None):
        """Predicts the batch ``x`` and adapts on it (one jitted call).

        Args:
          state: the `AdaptState` before this batch.
          x: the test batch, the model's input [B, ...].
          key: a PRNG key; required when the method draws randomness (DeYO, CoTTA, RMT).

        Returns:
          ``(new_state, logits, metrics)``: the prediction made with the PRE-update parameters
          (``Method.predict``), and the composed loss's metrics plus ``adapt/updated`` (the
          optimizer step was applied) and ``adapt/reset`` (SAR's recovery fired).
        """
        if not isinstance(state, AdaptState):
            raise TypeError(
                f"`state` must be an AdaptState (see Adapter.init), got {type(state).__name__}."
            )
        self._keys(key)
        return self._step_jit(state, x, key)

    def _run(self, state, xs, key):
        keys = None if key is None else jax.random.split(key, jax.tree.leaves(xs)[0].shape[0])

        def body(carry, inputs):
            x, k = inputs
            carry, logits, metrics = self._step(carry, x, k)
            return carry, (logits, metrics)

        state, (logits, metrics) = jax.lax.scan(body, state, (xs, keys))
        return state, logits, metrics

    def run(self, state: AdaptState, xs, key=None):
        """`step` over a stream of N batches stacked on a leading axis, in one compiled scan.

        Args:
          state: the starting `AdaptState`.
          xs: [N, B, ...] batches.
          key: a PRNG key, split into one per batch; required when the method draws randomness.

        Returns:
          ``(final_state, logits [N, B, C], metrics stacked on N)``.
        """
        if not isinstance(state, AdaptState):
            raise TypeError(
                f"`state` must be an AdaptState (see Adapter.init), got {type(state).__name__}."
            )
        if not jax.tree.leaves(xs) or jnp.ndim(jax.tree.leaves(xs)[0]) < 1:
            raise ValueError("`xs` must stack the batches on a leading axis [N, B, ...].")
        self._keys(key)
        return self._run_jit(state, xs, key)

    def predict(self, state: AdaptState, x) -> jax.Array:
        """The current model's logits on ``x`` without adapting (BatchNorm on the batch's
        statistics; the state is not changed), e.g. to measure forgetting on clean data."""
        if not isinstance(state, AdaptState):
            raise TypeError(
                f"`state` must be an AdaptState (see Adapter.init), got {type(state).__name__}."
            )
        return self._predict_jit(state, x)


def _selected(metrics: dict, selector: str | None) -> jax.Array:
    key = f"{selector}/selected"
    if key not in metrics:
        raise KeyError(f"The selector term {selector!r} reports no `selected` rows.")
    return metrics[key]


def _num_selected(metrics: dict, selector: str | None) -> jax.Array:
    key = f"{selector}/num_selected"
    if key not in metrics:
        raise KeyError(f"The selector term {selector!r} reports no `num_selected`.")
    return metrics[key]


def _restore(key, params, source, prob: float):
    """Each element of ``params`` back to its ``source`` value with probability ``prob``."""
    leaves, treedef = jax.tree.flatten(params)
    sizes = [leaf.size for leaf in leaves]
    # One draw for all leaves: a random-bits kernel per leaf would multiply the compile time.
    keep = jax.random.bernoulli(key, prob, (sum(sizes),))
    parts = jnp.split(keep, list(itertools.accumulate(sizes))[:-1])
    restored = [
        jnp.where(r.reshape(p.shape), s, p)
        for r, p, s in zip(parts, leaves, treedef.flatten_up_to(source), strict=True)  # type: ignore[attr-defined]
    ]
    return jax.tree.unflatten(treedef, restored)


def estimate_fisher(model: nnx.Module, batches, *, wrt=None) -> tta.FisherState:
    """EATA's Fisher diagonal of the adapted parameters on clean in-distribution batches.

    The model is configured as `Adapter` configures it (BatchNorm on batch statistics); each
    batch's loss is the batch-mean cross-entropy with the model's own argmax as the label; F is
    the mean over batches of the squared batch gradient (`tta.fisher_diagonal`). EATA uses 2000
    samples in batches of 64. Use the same ``wrt`` as the `Method`.

    Args:
      model: the source model.
      batches: [K, B, ...] clean inputs.
      wrt: nnx filter of the adapted parameters; None = `norm_params`.

    Returns:
      A `tta.FisherState` for `tta.fisher_term` / `eata`.
    """
    model = _configured(model)
    wrt, graphdef, params, rest = _split(model, wrt)

    def grad_fn(p, x):
        def loss(p):
            logits = nnx.merge(graphdef, p, rest)(x)
            labels = jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1])
            return jnp.mean(cross_entropy(logits, target_probs=jax.lax.stop_gradient(labels)))

        return jax.grad(loss)(p)

    return jax.jit(lambda p, b: tta.fisher_diagonal(grad_fn, p, b))(params, batches)


# ----------------------------------------------------------------------------------- presets


def tent(optimizer: optax.GradientTransformation, *, episodic: bool = False) -> Method:
    """Tent (Wang et al., ICLR 2021): minimize the batch-mean entropy, one step per batch.

    References: CIFAR Adam lr 1e-3 batch 128-200; ImageNet SGD lr 2.5e-4, momentum 0.9, batch 64.
    The authors' CIFAR-10-C example is episodic per corruption (reset per domain), not continual.
    """
    return Method(terms=(tta.tent_term(),), optimizer=optimizer, episodic=episodic)


def eata(
    optimizer: optax.GradientTransformation,
    num_classes: int,
    *,
    eps: float,
    e0: float | None = None,
    fisher: tta.FisherState | None = None,
    fisher_alpha: float | None = None,
    episodic: bool = False,
) -> Method:
    """EATA (Niu et al., ICML 2022); ETA without ``fisher``.

    Reliable (H < E0, default 0.4 ln C) and non-redundant (|cos(m, p)| < ``eps``) samples,
    weighted by exp(E0 - H), plus ``fisher_alpha`` * sum F (theta - theta0)^2 with a Fisher from
    `estimate_fisher`. No optimizer step when nothing is selected. References: SGD lr 2.5e-4,
    momentum 0.9, batch 64; eps 0.05 and alpha 2000 on ImageNet, eps 0.4 and alpha 1 in the
    test-time-adaptation benchmark's CIFAR configurations.
    """
    terms = [tta.eata_term(num_classes, eps=eps, e0=e0)]
    if fisher is not None:
        if fisher_alpha is None:
            raise ValueError(
                "`fisher_alpha` is needed with `fisher` (EATA: 2000 on ImageNet with 64-sample "
                "Fisher batches; the CIFAR benchmark configurations use 1)."
            )
        terms.append(tta.fisher_term(fisher, alpha=fisher_alpha))
    return Method(terms=tuple(terms), optimizer=optimizer, skip_empty=True, episodic=episodic)


def sar(
    optimizer: optax.GradientTransformation,
    *,
    e0: float | None = None,
    rho: float = 0.05,
    reset_threshold: float | None = 0.2,
    wrt: Any = None,
    episodic: bool = False,
) -> Method:
    """SAR (Niu et al., ICLR 2023): reliable entropy, sharpness-aware step, model recovery.

    Loss H < E0 (default 0.4 ln C) at theta; ascent to theta + rho g / ||g||; loss on the
    first-filter rows with H2 < E0 there; the base optimizer steps at theta with that gradient.
    Reset when the EMA of the second loss falls below ``reset_threshold`` (None: never). As in
    SAR the step is taken even when nothing is selected (a zero gradient still moves momentum).
    References: SGD momentum 0.9, lr 2.5e-4 (ResNet-50, batch >= 32; else 2 * 2.5e-4 * B / 64),
    1e-3 * B / 64 for ViT-B, doubled again at batch size 1; parameters: norm layers except the
    last stage (`norm_params`' ``exclude``).
    """
    return Method(
        terms=(tta.sar_term(e0=e0),),
        optimizer=optimizer,
        sam_rho=rho,
        recovery_threshold=reset_threshold,
        wrt=wrt,
        episodic=episodic,
    )


def deyo(
    optimizer: optax.GradientTransformation,
    *,
    tau_plpd: float = 0.2,
    tau_ent: float | None = None,
    e0: float | None = None,
    grid: int = 4,
    reweight_ent: bool = True,
    reweight_plpd: bool = True,
    subset_statistics: bool = True,
    episodic: bool = False,
) -> Method:
    """DeYO (Lee et al., ICLR 2024): entropy and PLPD filters, weight exp(E0 - H) + exp(PLPD).

    x' = `tta.patch_shuffle` (``grid`` x ``grid`` patches, a permutation per image), forwarded
    without gradient, with BatchNorm statistics of the rows H < ``tau_ent`` (default 0.5 ln C)
    when ``subset_statistics`` (the model must accept ``mask=``; see `Method`). No optimizer step
    when a filter empties the batch. ``tau_plpd``: 0.2 (DeYO's config), 0.3 (ImageNet-C), 0.5
    (Waterbirds, ColoredMNIST). References: SGD momentum 0.9, SAR's learning-rate rule times
    lr_mul (5 on Waterbirds and ColoredMNIST).
    """
    grid = _checks.positive_int(grid, "grid")
    term = tta.deyo_term(
        tau_plpd=tau_plpd,
        tau_ent=tau_ent,
        e0=e0,
        reweight_ent=reweight_ent,
        reweight_plpd=reweight_plpd,
    )
    return Method(
        terms=(term,),
        optimizer=optimizer,
        skip_empty=True,
        destroy=lambda key, x: tta.patch_shuffle(key, x, grid=grid),
        subset_statistics=subset_statistics,
        tau_ent=tau_ent,
        episodic=episodic,
    )


def open_set(
    optimizer: optax.GradientTransformation, *, diversity: float = 0.5, episodic: bool = False
) -> Method:
    """Entropy minimization with the confidence-drop filter (Lee et al., ICCV 2023).

    Keeps the samples whose probability of the original model's class did not fall in the
    adapting model; the original model is the frozen source (normalizing with the test batch's
    statistics too). ``diversity`` = lambda of the batch-level -H(mean p) term (0.5 in the UniEnt
    re-implementation, Adam 1e-3; 0 gives filtered Tent).
    """
    return Method(
        terms=(tta.open_set_term(diversity=diversity),),
        optimizer=optimizer,
        original=True,
        episodic=episodic,
    )


def cotta(
    optimizer: optax.GradientTransformation,
    *,
    augment: Callable,
    anchor_threshold: float,
    momentum: float = 0.999,
    restore_prob: float = 0.01,
    num_views: int = 32,
    alpha: float = 0.0,
    wrt: Any = nnx.Param,
    episodic: bool = False,
) -> Method:
    """CoTTA (Wang et al., CVPR 2022): continual TTA with a mean teacher and stochastic restore.

    All parameters train (``wrt``); the loss is the cross-entropy of the student to the
    teacher's soft prediction (``alpha`` = 0.5: the symmetric ImageNet variant), the teacher's
    logits averaged over ``num_views`` augmented views when the source model's batch-mean
    confidence is below ``anchor_threshold`` (p_th: 0.92 CIFAR-10, 0.72 CIFAR-100); the teacher
    is an EMA (0.999) of the student; after each step every student weight returns to its source
    value with probability ``restore_prob`` (0.01 CIFAR, 0.001 ImageNet). Predictions are the
    teacher's. References: Adam 1e-3 batch 200 (CIFAR), SGD 0.01 batch 64 (ImageNet).
    """
    return Method(
        terms=(tta.mean_teacher_term(alpha=alpha),),
        optimizer=optimizer,
        wrt=wrt,
        teacher_momentum=momentum,
        anchor_threshold=anchor_threshold,
        num_views=num_views,
        augment=augment,
        restore_prob=restore_prob,
        predict="teacher",
        episodic=episodic,
    )


def rmt(
    optimizer: optax.GradientTransformation,
    *,
    augment: Callable,
    momentum: float = 0.999,
    alpha: float = 0.5,
    wrt: Any = nnx.Param,
    episodic: bool = False,
) -> Method:
    """RMT's self-training (Doebler et al., CVPR 2023): symmetric cross-entropy to a mean teacher.

    Loss 1/2 SCE(s(x), t(x)) + 1/2 SCE(s(aug x), t(x)), teacher EMA 0.999, all parameters
    trained, prediction = student + teacher logits. RMT's contrastive term, source replay and
    source warm-up need source data and are not part of this preset (add a source term to
    ``terms`` of your own `Method` if you have the data).
    """
    return Method(
        terms=(tta.mean_teacher_term(alpha=alpha, augmented=True),),
        optimizer=optimizer,
        wrt=wrt,
        teacher_momentum=momentum,
        augment=augment,
        augment_student=True,
        predict="ensemble",
        episodic=episodic,
    )


def shot_im(
    optimizer: optax.GradientTransformation, *, prior=None, episodic: bool = False
) -> Method:
    """SHOT's information maximization online on the normalization parameters: Tent plus a
    diversity term (SHOT itself trains the feature extractor offline over many epochs)."""
    return Method(terms=(tta.im_term(prior=prior),), optimizer=optimizer, episodic=episodic)


def bn_adapt() -> Method:
    """BatchNorm adaptation ("norm"): test-batch statistics, no parameter update."""
    return Method(terms=(), optimizer=optax.set_to_zero())
