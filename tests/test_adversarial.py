"""Every public callable through adversarial inputs (see tests/adversarial.py)."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
from pathlib import Path

import chex
import jax
import numpy as np
import pytest
from absl.testing import parameterized
from adversarial import (
    PUBLIC_MODULES,
    Bad,
    Edge,
    assert_no_nan,
    assert_trees_close,
    value_and_grads,
)

HERE = Path(__file__).resolve().parent


def _registry() -> dict[str, list]:
    cases: dict[str, list] = {}
    for path in sorted(HERE.glob("adversarial_*.py")):
        module = importlib.import_module(path.stem)
        for name, items in module.CASES.items():
            assert name not in cases, f"{name} has cases in two modules"
            cases[name] = list(items)
    return cases


# Operators are part of the API (``term * 2``, ``loss_fn + term``, ``loss_fn(...)``).
_PUBLIC_DUNDERS = ("__call__", "__add__", "__mul__")


def _own_methods(cls) -> list[str]:
    """Public methods and operators defined by the class or by an entreg base class."""
    names = []
    for klass in cls.__mro__:
        if not klass.__module__.startswith("entreg"):
            continue
        for name, attr in vars(klass).items():
            public = not name.startswith("_") or name in _PUBLIC_DUNDERS
            if public and (inspect.isfunction(attr) or isinstance(attr, classmethod)):
                if name not in names:
                    names.append(name)
    return names


def public_callables() -> list[str]:
    """Qualified names of every public callable; a re-export counts once, under the first
    module of `PUBLIC_MODULES` that exports it."""
    found, seen = [], set()
    for mod_name in PUBLIC_MODULES:
        module = importlib.import_module(mod_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.ismodule(obj) or not callable(obj) or id(obj) in seen:
                continue
            seen.add(id(obj))
            found.append(f"{mod_name}.{name}")
            if inspect.isclass(obj):
                found += [f"{mod_name}.{name}.{m}" for m in _own_methods(obj)]
    return found


CASES = _registry()
EDGES = [
    (name, dataclasses.replace(c, eager=i == 0 if c.eager is None else c.eager))
    for name, items in CASES.items()
    for i, c in enumerate(c for c in items if isinstance(c, Edge))
]
# Cases checked under chex's variants (jit; eager with the arguments placed on the device), the
# others under jit alone (or eagerly alone, for what cannot be traced as a whole). A plain eager
# variant would repeat the device one: on one device they differ only by placement.
VARIANT_EDGES = [(n, c) for n, c in EDGES if c.jit and c.eager]
JIT_EDGES = [(n, c) for n, c in EDGES if not (c.jit and c.eager)]
BADS = [(name, c) for name, items in CASES.items() for c in items if isinstance(c, Bad)]


def test_every_public_callable_has_a_case():
    public = set(public_callables())
    missing = sorted(public - set(CASES))
    assert not missing, f"public callables without adversarial cases: {missing}"
    stale = sorted(set(CASES) - public)
    assert not stale, f"cases for names that are not public callables: {stale}"
    no_edge = sorted(n for n, items in CASES.items() if not any(isinstance(c, Edge) for c in items))
    assert not no_edge, f"public callables without an Edge case: {no_edge}"
    unvaried = {n for n, c in EDGES if c.jit} - {n for n, _ in VARIANT_EDGES}
    assert not unvaried, f"callables with no case run both eagerly and under jit: {unvaried}"


def check_edge(case: Edge, out, grads, where: str) -> None:
    assert_no_nan(out, case.infinite_ok, where)
    assert_no_nan(grads, False, f"{where} gradient")
    if case.dtype is not None:
        for x in jax.tree.leaves(out):
            if hasattr(x, "dtype") and np.issubdtype(x.dtype, np.inexact):
                assert x.dtype == case.dtype, f"{where}: dtype {x.dtype}, expected {case.dtype}"
    if case.expect is not None:
        case.expect(out)


@pytest.mark.parametrize(("name", "case"), JIT_EDGES, ids=[f"{n}:{c.label}" for n, c in JIT_EDGES])
def test_edge(name, case: Edge):
    both = value_and_grads(case.fn, tuple(case.grad_argnums))
    out, grads = (jax.jit(both) if case.jit else both)(*case.args)
    check_edge(case, out, grads, f"{name} [{case.label}]")


class EdgeVariantsTest(chex.TestCase):
    """Each callable's first case (and any marked ``eager``) under chex's variants: both pass
    the Edge checks, and the eager call agrees with jit."""

    @chex.variants(with_jit=True, with_device=True)
    @parameterized.named_parameters(*((f"{n}:{c.label}", n, c) for n, c in VARIANT_EDGES))
    def test_edge(self, name, case: Edge):
        where = f"{name} [{case.label}] ({self.variant.type.name})"
        both = value_and_grads(case.fn, tuple(case.grad_argnums))
        # Arguments made of arrays (pytrees of them included) are placed on the device; one
        # holding a Python scalar or an object stays as it is (a scalar would become an array).
        static = tuple(
            i
            for i, a in enumerate(case.args)
            if not all(isinstance(x, (np.ndarray, jax.Array)) for x in jax.tree.leaves(a))
        )
        out, grads = self.variant(both, ignore_argnums=static)(*case.args)
        check_edge(case, out, grads, where)
        if self.variant.type is chex.ChexVariantType.WITH_DEVICE:
            jitted, g_jitted = jax.jit(both)(*case.args)
            assert_trees_close(out, jitted, f"{where} vs jit")
            assert_trees_close(grads, g_jitted, f"{where} gradient vs jit")


@pytest.mark.parametrize(("name", "case"), BADS, ids=[f"{n}:{c.label}" for n, c in BADS])
def test_bad_input(name, case: Bad):
    with pytest.raises(case.error, match=re.escape(f"`{case.argument}`")):
        case.fn()
