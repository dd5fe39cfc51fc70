"""Sphinx configuration of the hetflow documentation site, built by ``make docs``.

The guides (``docs/*.md``) are pages through MyST; the C++ reference comes from the public
headers through Doxygen's XML (``docs/Doxyfile``) and breathe; the Python reference from the
package's docstrings through autodoc.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from pygments.lexers import JsonLexer
from sphinx.application import Sphinx
from sphinx.highlighting import lexers

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent

# The package is documented from the source tree, whether or not it is installed; its compiled
# extension is replaced by a stand-in, so the site builds without compiling anything.
sys.path.insert(0, str(ROOT / "python"))
autodoc_mock_imports = ["hetflow._hetflow"]

project = "hetflow"
author = "the hetflow authors"
copyright = "the hetflow authors"


def _project_version() -> str:
    """The version declared in CMakeLists.txt, so the site and the library never disagree."""
    for line in (ROOT / "CMakeLists.txt").read_text(encoding="utf-8").splitlines():
        if line.startswith("project(hetflow VERSION "):
            return line.split()[2]
    return ""


release = version = _project_version()

extensions = [
    "myst_parser",
    "breathe",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# Headings of the guides become link targets ("architecture.md#a-tasks-life").
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence", "deflist"]

breathe_projects = {
    "hetflow": os.environ.get("HETFLOW_DOXYGEN_XML", str(ROOT / "build" / "docs" / "doxygen" / "xml")),
}
breathe_default_project = "hetflow"
primary_domain = "cpp"
# Blocks without a language in the guides are mostly shell sessions and program output.
highlight_language = "none"

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"


def setup(app: Sphinx) -> None:
    """The guides' JSON-with-comments blocks (machine descriptions), coloured as JSON."""
    lexers["jsonc"] = JsonLexer()


html_theme = "furo"
html_title = f"hetflow {release}"
