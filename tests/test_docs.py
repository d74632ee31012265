"""Examples that cannot rot: every ```python block of README.md and docs/ runs, and every
docstring example of the public packages runs as a doctest.

The blocks of one file run in order in one namespace (a block may continue the previous one),
under the test configuration (x64, 8 virtual CPU devices: tests/conftest.py), so an example must
not depend on either. Other fences (```bash, ```text, ```{code-block}) are not run.
"""

from __future__ import annotations

import contextlib
import doctest
import importlib
import io
import json
import pkgutil
import re
import sys
import traceback
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path[:0] = [str(DOCS / "_ext"), str(ROOT)]

import apigen  # noqa: E402
from apigen import public_modules  # noqa: E402

from docs import gallery  # noqa: E402

# Build outputs and generated pages are not sources.
GENERATED = ("_build", "_generated")
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>[^\n`]*)$")


def markdown_files() -> list[Path]:
    docs = [
        p for p in sorted(DOCS.rglob("*.md")) if not set(p.relative_to(DOCS).parts) & set(GENERATED)
    ]
    return [ROOT / "README.md", *docs]


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(first line number, source) of every fenced block whose info string is ``python``."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, indent = m["fence"], len(m["indent"])
        close = re.compile(rf"^ {{0,{indent + 3}}}{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        j = i + 1
        while j < len(lines) and not close.match(lines[j]):
            j += 1
        if m["info"].strip().split(maxsplit=1)[:1] == ["python"]:
            body = "\n".join(line[indent:] for line in lines[i + 1 : j])
            blocks.append((i + 2, body))
        i = j + 1
    return blocks


def test_block_extraction():
    text = "\n".join(
        [
            "```python",
            "a = 1",
            "```",
            "```bash",
            "echo no",
            "```",
            "````markdown",
            "```python",
            "nested = 'not run'",
            "```",
            "````",
            "  ```python",
            "  b = a + 1",
            "  ```",
            "```{code-block} python",
            "c = 'not run'",
            "```",
        ]
    )
    assert python_blocks(text) == [(2, "a = 1"), (13, "b = a + 1")]


FILES = markdown_files()


def test_docs_found():
    names = {p.relative_to(ROOT).as_posix() for p in FILES}
    assert {"README.md", "docs/index.md", "docs/conventions.md"} <= names
    assert sum(n.startswith("docs/guides/") for n in names) >= 7


@pytest.mark.parametrize("path", FILES, ids=[p.relative_to(ROOT).as_posix() for p in FILES])
def test_markdown_examples_run(path: Path):
    blocks = python_blocks(path.read_text())
    namespace = {"__name__": f"docs_example_{path.stem}"}
    for line, source in blocks:
        where = f"{path.relative_to(ROOT)}:{line}"
        try:
            code = compile(source, where, "exec")
            with contextlib.redirect_stdout(io.StringIO()):
                exec(code, namespace)
        except Exception:
            pytest.fail(f"example at {where} failed:\n{traceback.format_exc(limit=-3)}")


def _all_modules() -> list[str]:
    """The public modules and, for packages, every module inside them (private ones too)."""
    names = set(public_modules())
    for name in public_modules():
        package = importlib.import_module(name)
        if hasattr(package, "__path__"):
            names |= {m.name for m in pkgutil.walk_packages(package.__path__, f"{name}.")}
    return sorted(names)


MODULES = _all_modules()


def test_modules_found():
    assert {"entreg.categorical", "entreg.losses.ppo", "entreg.kernels.attention"} <= set(MODULES)
    assert set(public_modules()) <= set(MODULES)


def _doctests() -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = []
    for name in MODULES:
        module = importlib.import_module(name)
        tests += [t for t in finder.find(module, name) if t.examples]
    return sorted(tests, key=lambda t: t.name)


DOCTESTS = _doctests()


def test_docstring_examples_exist():
    # Entry points carry examples (style guide); an empty collection would make the next test
    # vacuous.
    assert len(DOCTESTS) >= 12, [t.name for t in DOCTESTS]


@pytest.mark.parametrize("test", DOCTESTS, ids=[t.name for t in DOCTESTS])
def test_docstring_examples_run(test: doctest.DocTest):
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    runner = doctest.DocTestRunner(optionflags=flags)
    out = io.StringIO()
    # Arrays print with 4 decimals, so that float32 and float64 (x64) results read the same;
    # scalars are formatted in the examples themselves.
    with np.printoptions(precision=4, suppress=True):
        result = runner.run(test, out=out.write, clear_globs=True)
    assert result.failed == 0, out.getvalue()


def test_api_pages_follow_all(tmp_path):
    """One page per public module, naming every name its ``__all__`` exports (a new function or
    module appears without editing the docs)."""
    assert set(apigen.write_pages(tmp_path)) == set(public_modules())
    for name in public_modules():
        page = (tmp_path / f"{name}.rst").read_text()
        for member in importlib.import_module(name).__all__:
            assert member in page, (name, member)


def test_gallery_builds_without_artifacts(tmp_path, monkeypatch):
    """A clean checkout without experiment artifacts still gets a page per experiment, saying
    how to make them, instead of a failing build."""
    monkeypatch.setattr(gallery, "ARTIFACTS", tmp_path / "none")
    names = gallery.write_pages(tmp_path / "pages")
    assert "quickstart" in names
    for name in names:
        page = (tmp_path / "pages" / f"{name}.md").read_text()
        assert f"python -m experiments.{name}" in page and "No artifacts yet" in page
    assert "no artifacts yet" in (tmp_path / "pages" / "index.md").read_text()


def test_gallery_names_papers_and_has_full_run_artifacts():
    """Every experiment's page names the papers it checks and shows a full run's claims (the
    CI smoke runs decide only part of them), recorded with the environment it ran in."""
    for name in gallery.experiments():
        assert gallery.PAPERS.get(name), f"{name}: no papers in docs/gallery.py"
        results = gallery.load(name)
        assert results is not None, f"{name}: no artifacts under docs/gallery/"
        assert not results["quick"], f"{name}: the gallery holds a --quick run"
        env = results["environment"]
        assert env["git_commit"] and env["backend"] and env["jax"], name
        for plot in results["plots"]:
            assert (gallery.ARTIFACTS / name / plot).stat().st_size > 0, (name, plot)


def test_gallery_marks_quick_artifacts(tmp_path, monkeypatch):
    """Artifacts of a --quick run (what `--refresh` copies from a smoke run) get a warning, and
    a claim not decided at that size shows no verdict, on the page and in the index count."""
    (tmp_path / "art" / "quickstart").mkdir(parents=True)
    claims = [
        {"name": "decided", "value": 1.0, "threshold": 2.0, "passed": True, "quick": True},
        {"name": "undecided", "value": 5.0, "threshold": 2.0, "passed": False, "quick": False},
    ]
    results = {"quick": True, "seed": 3, "wall_time_s": 1.0, "claims": claims, "plots": []}
    (tmp_path / "art" / "quickstart" / "results.json").write_text(json.dumps(results))
    monkeypatch.setattr(gallery, "ARTIFACTS", tmp_path / "art")
    gallery.write_pages(tmp_path / "pages")
    page = (tmp_path / "pages" / "quickstart.md").read_text().splitlines()
    assert "Quick-run artifacts" in "\n".join(page) and "--quick --seed 3" in "\n".join(page)
    row = {line.split(" | ")[0]: line for line in page if line.startswith("| ")}
    assert "| PASS |" in row["| decided"]
    assert "not decided at --quick size" in row["| undecided"] and "FAIL" not in row["| undecided"]
    index = (tmp_path / "pages" / "index.md").read_text()
    assert "1 / 1 decided at --quick size" in index
