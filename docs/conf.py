"""Sphinx configuration: MyST pages, API reference from the docstrings, experiments gallery.

Build (warnings are errors, as in CI)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The API pages (one per public module) and the gallery pages are generated into
``docs/_generated/`` when the build starts; nothing there is edited by hand.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path[:0] = [str(DOCS / "_ext"), str(DOCS.parent)]

import apigen  # noqa: E402

import entreg  # noqa: E402
from docs import gallery  # noqa: E402

project = "entreg"
author = "the entreg authors"
copyright = "the entreg authors"  # noqa: A001
release = version = entreg.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "softref",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "README.md", "gallery/*/*.json"]
templates_path = []

# Broken cross-references are errors; only names of other projects (no intersphinx: the build
# runs offline) are exempt.
nitpicky = True
_EXTERNAL = r"(builtins|collections|typing|types|numpy|np|jax|jaxlib|jnp|flax|nnx|optax|jaxtyping)"
nitpick_ignore_regex = [
    (r"py:.*", rf"{_EXTERNAL}(\..*)?"),
    (r"py:.*", r"(int|float|bool|str|bytes|dict|list|tuple|set|object|type|None|Ellipsis)"),
    (r"py:.*", r"(Any|Callable|Sequence|Mapping|Iterable|Literal|NamedTuple|ArrayLike|Array)"),
    (r"py:.*", r"ndarray"),  # numpy's, through jaxtyping's ArrayLike
]
default_role = "entreg-obj"

# MyST: $math$, ::: fences, heading anchors for [](#...) links within and across pages.
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# API reference: Google-style docstrings, signatures as written, members in source order.
autosummary_generate = False
autodoc_member_order = "bysource"
autodoc_preserve_defaults = True
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True

html_theme = "sphinx_book_theme"
html_title = f"entreg {version}"
html_theme_options = {
    "show_toc_level": 2,
    "navigation_with_keys": False,
}
html_static_path = []


def _strip_field_aliases(app, what, name, obj, options, lines):
    """NamedTuple fields carry the generated docstring "Alias for field number N": drop it."""
    if len(lines) == 1 and lines[0].startswith("Alias for field number"):
        lines.clear()


_INLINE_CODE = re.compile(r"(``.+?``|`[^`]+`)")


def _plain_bars(app, what, name, obj, options, lines):
    """Docstrings write formulas as plain text, where ``|x|`` is an absolute value: escape the
    bars (outside code, literal blocks and doctests) so reST does not read a substitution."""
    literal_indent = None
    for i, line in enumerate(lines):
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if literal_indent is not None:
            if stripped and indent <= literal_indent:
                literal_indent = None
            else:
                continue
        if line.rstrip().endswith("::"):
            literal_indent = indent
        # Skip doctests and reST tables / line blocks ("| a | b |", "+---+"), not "|q - 1| < 1".
        if "|" in line and not stripped.startswith((">>>", "...", "| ", "+-", "+=")):
            parts = _INLINE_CODE.split(line)
            lines[i] = "".join(p if j % 2 else p.replace("|", r"\|") for j, p in enumerate(parts))


def _generate(app):
    apigen.write_pages(DOCS / "_generated" / "api")
    gallery.write_pages(DOCS / "_generated" / "gallery")


def setup(app):
    app.connect("builder-inited", _generate)
    app.connect("autodoc-process-docstring", _strip_field_aliases)
    app.connect("autodoc-process-docstring", _plain_bars)
