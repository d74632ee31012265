"""API reference pages generated from the code: one page per public module, driven by `__all__`.

The public modules are those the adversarial suite holds to its contract (``PUBLIC_MODULES`` in
tests/adversarial.py, read without importing the tests), so a new public module gets its page
from the same line that puts it under test. Each page shows the module docstring, then one
section per defining submodule (titled by that submodule's first docstring line) with an
autosummary table and the autodoc entries. A name that an earlier public module already exports
(``entreg.losses.token_log_probs``) is listed as a link to that entry, not documented twice.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Operators that are part of the API (as in tests/test_adversarial.py).
SPECIAL_MEMBERS = "__call__, __add__, __mul__"


@functools.cache
def public_modules() -> tuple[str, ...]:
    """``PUBLIC_MODULES`` from tests/adversarial.py (a literal tuple of module names)."""
    tree = ast.parse((ROOT / "tests" / "adversarial.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "PUBLIC_MODULES" for t in node.targets
        ):
            return tuple(ast.literal_eval(node.value))
    raise RuntimeError("tests/adversarial.py defines no PUBLIC_MODULES")


def _title(text: str, char: str) -> list[str]:
    return [text, char * len(text), ""]


def _summary(module) -> str:
    doc = inspect.getdoc(module) or module.__name__
    return doc.strip().splitlines()[0].rstrip(".")


def _directive(obj) -> str:
    if inspect.isclass(obj):
        return "autoclass"
    if callable(obj):
        return "autofunction"
    return "autodata"


def module_page(name: str, exported_before: dict[int, str]) -> str:
    """reST for the public module ``name``; records what it exports in ``exported_before``."""
    module = importlib.import_module(name)
    lines = _title(f"``{name}``", "=") + [
        f".. automodule:: {name}",
        "   :no-members:",
        "",
    ]
    groups: dict[str, list[str]] = {}
    submodules, aliases = [], []
    for member in module.__all__:
        obj = getattr(module, member)
        if inspect.ismodule(obj):
            submodules.append(obj.__name__)
        elif callable(obj) and id(obj) in exported_before:
            aliases.append(exported_before[id(obj)])
        else:
            if callable(obj):
                exported_before[id(obj)] = f"{name}.{member}"
            home = getattr(obj, "__module__", None) if callable(obj) else None
            groups.setdefault(home or name, []).append(member)
    if submodules:
        links = ", ".join(f":doc:`{m}`" for m in submodules)
        lines += [f"Submodules: {links}.", ""]
    if aliases:
        links = ", ".join(f":py:obj:`{a}`" for a in aliases)
        lines += [f"Also exported here: {links}.", ""]
    for home in sorted(groups):
        members = sorted(groups[home], key=lambda m: (not inspect.isclass(getattr(module, m)), m))
        if len(groups) > 1:
            lines += _title(_summary(importlib.import_module(home)), "-")
        lines += [".. autosummary::", "   :nosignatures:", ""]
        lines += [f"   {m}" for m in members] + [""]
        for m in members:
            obj = getattr(module, m)
            lines.append(f".. {_directive(obj)}:: {m}")
            if inspect.isclass(obj):
                lines += ["   :members:", f"   :special-members: {SPECIAL_MEMBERS}"]
            lines.append("")
    return "\n".join(lines)


def write_pages(outdir: Path) -> list[str]:
    """Writes ``outdir/<module>.rst`` for every public module (only files whose text changed,
    so that incremental builds stay incremental) and removes pages of modules that are gone."""
    outdir.mkdir(parents=True, exist_ok=True)
    names = public_modules()
    exported: dict[int, str] = {}
    for name in names:
        _write_if_changed(outdir / f"{name}.rst", module_page(name, exported))
    for stale in set(outdir.glob("*.rst")) - {outdir / f"{n}.rst" for n in names}:
        stale.unlink()
    return names


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
