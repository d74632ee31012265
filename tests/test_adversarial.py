"""Every public callable through adversarial inputs (see tests/adversarial.py)."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
from pathlib import Path

import jax
import numpy as np
import pytest
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
BADS = [(name, c) for name, items in CASES.items() for c in items if isinstance(c, Bad)]


def test_every_public_callable_has_a_case():
    public = set(public_callables())
    missing = sorted(public - set(CASES))
    assert not missing, f"public callables without adversarial cases: {missing}"
    stale = sorted(set(CASES) - public)
    assert not stale, f"cases for names that are not public callables: {stale}"
    no_edge = sorted(n for n, items in CASES.items() if not any(isinstance(c, Edge) for c in items))
    assert not no_edge, f"public callables without an Edge case: {no_edge}"


@pytest.mark.parametrize(("name", "case"), EDGES, ids=[f"{n}:{c.label}" for n, c in EDGES])
def test_edge(name, case: Edge):
    where = f"{name} [{case.label}]"
    argnums = tuple(case.grad_argnums)
    both = value_and_grads(case.fn, argnums) if argnums else lambda *a: (case.fn(*a), ())
    out, grads = (jax.jit(both) if case.jit else both)(*case.args)
    assert_no_nan(out, case.infinite_ok, where)
    assert_no_nan(grads, False, f"{where} gradient")
    if case.dtype is not None:
        for x in jax.tree.leaves(out):
            if hasattr(x, "dtype") and np.issubdtype(x.dtype, np.inexact):
                assert x.dtype == case.dtype, f"{where}: dtype {x.dtype}, expected {case.dtype}"
    if case.expect is not None:
        case.expect(out)
    if case.jit and case.eager:
        eager, g_eager = both(*case.args)
        assert_trees_close(out, eager, f"{where} (jit vs eager)")
        assert_trees_close(grads, g_eager, f"{where} gradient (jit vs eager)")


@pytest.mark.parametrize(("name", "case"), BADS, ids=[f"{n}:{c.label}" for n, c in BADS])
def test_bad_input(name, case: Bad):
    with pytest.raises(case.error, match=re.escape(f"`{case.argument}`")):
        case.fn()
