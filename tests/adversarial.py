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
  ``infinite_ok``: a documented +inf), the same outputs under ``jax.jit``, finite gradients of
  the sum of the finite floating outputs with respect to ``grad_argnums`` (equal under jit and
  eagerly), the output dtype when ``dtype`` is given, and ``expect(outputs)`` when given.
* `Bad`: a call with bad input must raise ``error`` (TypeError for a wrong kind, ValueError for a
  wrong value) whose message names ``argument`` in backticks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

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
    expect: Callable[[Any], None] | None = None  # extra assertions on the eager outputs
    jit: bool = True  # False for callables that cannot be traced as a whole (NNX modules)


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


def finite_total(fn: Callable) -> Callable:
    """The sum of the finite entries of every floating output (infinite ones are selected out,
    so a +inf value must still pass a finite cotangent back)."""

    def total(*args):
        out = floating_leaves(fn(*args))
        parts = [jnp.sum(jnp.where(jnp.isfinite(x), x, 0.0).astype(jnp.float32)) for x in out]
        return sum(parts, jnp.zeros((), jnp.float32))

    return total


def assert_no_nan(tree, infinite_ok: bool, where: str) -> None:
    for x in floating_leaves(tree):
        x = np.asarray(x, np.float64)
        assert not np.isnan(x).any(), f"{where}: NaN in an output of shape {x.shape}"
        if not infinite_ok:
            assert np.isfinite(x).all(), f"{where}: inf in an output of shape {x.shape}"


def assert_trees_close(a, b, where: str) -> None:
    la, lb = floating_leaves(a), floating_leaves(b)
    assert len(la) == len(lb), where
    for x, y in zip(la, lb, strict=True):
        x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
        # Eager and jit may fuse differently: a few ulps of the output dtype.
        eps = float(jnp.finfo(x.dtype).eps)
        np.testing.assert_allclose(x64, y64, rtol=64 * eps, atol=64 * eps, err_msg=where)
