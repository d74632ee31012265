"""The default role of the docs: `name` links to a Python object when one exists, else is code.

entreg's docstrings put both object names (`entreg.aggregate`, `LossTerm`) and argument names
(`axis`, `where`) in single backticks. This role resolves the name like ``:py:obj:`` (in the
current module first), then under each public package, and renders anything unresolved as
inline code without a warning, so that ``nitpicky`` still reports every broken explicit
reference (``:func:``, ``:class:``, ``{py:func}``) while argument names stay plain code.
"""

from __future__ import annotations

from apigen import public_modules
from docutils import nodes
from sphinx.domains.python import PyXRefRole


class SoftRef(PyXRefRole):
    def run(self):
        self.refdomain, self.reftype = "py", "obj"
        self.classes = ["xref", "py", "py-obj"]
        return self.create_xref_node()

    def process_link(self, env, refnode, has_explicit_title, title, target):
        refnode["entreg_soft"] = True
        return super().process_link(env, refnode, has_explicit_title, title, target)


def resolve_soft(app, env, node, contnode):
    """Unresolved soft references: try the public modules, else plain code (no warning)."""
    if not node.get("entreg_soft"):
        return None
    domain = env.get_domain("py")
    target = node["reftarget"]
    for package in public_modules():
        found = domain.resolve_xref(
            env, node["refdoc"], app.builder, "obj", f"{package}.{target}", node, contnode
        )
        if found is not None:
            return found
    return nodes.literal(contnode.astext(), contnode.astext())


def setup(app):
    app.add_role("entreg-obj", SoftRef())
    app.connect("missing-reference", resolve_soft)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
