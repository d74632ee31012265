"""The adversarial suite's vocabulary: one `Edge` or `Bad` case per (public callable, input).

Every public callable of entreg, entreg.losses, entreg.kernels, entreg.nnx (and the other public
modules listed in `PUBLIC_MODULES`), public methods of public classes included, must have cases
in a ``CASES`` dict of some ``tests/adversarial_*.py`` module: ``{"entreg.entropy": [Edge(...),
Bad(...)], "entreg.losses.AbsorbingGraph.transition": [...], ...}``. `tests/test_adversarial.py`
collects them, fails for a public name without a case (or a case for a name that is gone), and
runs each:

* `Edge`: the call on adversarial but valid input (one-hot, -inf, +-1e4, NaN / -inf in masked
  slots, fully masked rows, empty batches, size-1 axes, bf16 / f16 / f64, degenerate spectra,
  extreme sigma / temperature / order). Checks: no NaN in any floating output (and no inf unless
  ``infinite_ok``: a documented +inf), finite gradients of the sum of the finite floating outputs
  with respect to ``grad_argnums``, the output dtype when ``dtype`` is given, ``expect(outputs)``
  when given. Each callable's first case (and any case with ``eager=True``) runs under chex's
  variants, jit and eager with device-placed arguments, and the eager outputs and gradients must
  match jit's; the others run under jit only.
* `Bad`: a call with bad input must raise ``error`` (TypeError for a wrong kind, ValueError for a
  wrong value) whose message names ``argument`` in backticks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np

# Modules whose public names (``__all__``) must all have cases.
PUBLIC_MODULES = (
    "entreg",
    "entreg.losses",
    "entreg.losses.adaptation",
    "entreg.kernels",
    "entreg.nnx",
    "entreg.decoding",
)


@dataclasses.dataclass(frozen=True)
class Edge:
    """``fn(*args)`` on adversarial but valid input; see the module docstring for the checks."""

    label: str
    fn: Callable[..., Any]
    args: tuple = ()
    grad_argnums: tuple[int, ...] = (0,)  # floating args to differentiate; () for none
    infinite_ok: bool = False  # a documented +-inf value (its gradient must still be finite)
    dtype: Any = None  # expected dtype of every floating output
    expect: Callable[[Any], None] | None = None  # extra assertions on the outputs
    jit: bool = True  # False for callables that cannot be traced as a whole (NNX modules)
    # Also run eagerly and compare with jit. Eager runs compile every primitive for every new
    # shape and dtype, so by default only a callable's first case does (see test_adversarial).
    eager: bool | None = None


@dataclasses.dataclass(frozen=True)
class Bad:
    """``fn()`` raises ``error`` with ``argument`` named in backticks in its message."""

    label: str
    fn: Callable[[], Any]
    error: type[Exception]
    argument: str


def floating_leaves(tree) -> list[jax.Array]:
    leaves = jax.tree.leaves(tree)
    return [x for x in leaves if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)]


def value_and_grads(fn: Callable, argnums: tuple[int, ...]) -> Callable:
    """args -> (outputs, gradients of the sum of the finite floating outputs w.r.t. argnums).

    Infinite outputs get a zero cotangent, so a documented +inf must still pass a finite
    gradient back (0 * inf would be NaN). One function, so that jit compiles value and
    gradient together. No argnums: the outputs and no gradients."""
    if not argnums:
        return lambda *args: (fn(*args), ())

    def both(*args):
        def of_selected(*selected):
            full = list(args)
            for i, x in zip(argnums, selected, strict=True):
                full[i] = x
            return fn(*full)

        out, vjp = jax.vjp(of_selected, *(args[i] for i in argnums))
        cot = jax.tree.map(
            lambda x: (
                jnp.where(jnp.isfinite(x), 1.0, 0.0).astype(x.dtype)
                if jnp.issubdtype(x.dtype, jnp.inexact)
                else np.zeros(x.shape, jax.dtypes.float0)
            ),
            out,
        )
        return out, vjp(cot)

    return both


def assert_no_nan(tree, infinite_ok: bool, where: str) -> None:
    leaves = [np.asarray(x, np.float64) for x in floating_leaves(tree)]
    if not infinite_ok:
        chex.assert_tree_all_finite(leaves, custom_message=where)
        return
    for x in leaves:
        assert not np.isnan(x).any(), f"{where}: NaN in an output of shape {x.shape}"


def assert_trees_close(a, b, where: str) -> None:
    la, lb = floating_leaves(a), floating_leaves(b)
    assert len(la) == len(lb), where
    for x, y in zip(la, lb, strict=True):
        x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
        # Eager and jit may fuse and accumulate differently: some hundred ulps of the output
        # dtype, relative to the largest output (a sum of many terms rounds at its scale).
        eps = float(jnp.finfo(x.dtype).eps)
        finite = np.isfinite(y64)
        scale = max(1.0, float(np.abs(y64[finite]).max(initial=0.0)))
        chex.assert_trees_all_close(
            x64, y64, rtol=256 * eps, atol=256 * eps * scale, custom_message=where
        )
