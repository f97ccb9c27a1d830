"""Sphinx configuration of the jaxopt_adv documentation.

Build (warning-free, as CI runs it): ``python -m sphinx -W -b html docs docs/_build/html``.
The API pages are generated from the docstrings (autosummary + autodoc, napoleon reads
the Google-style sections); the guides are Markdown (MyST).
"""

import importlib.util
import os
import sys

sys.path.insert(0, os.path.abspath(".."))  # the checkout's jaxopt_adv, not an installed one

import jaxopt_adv  # noqa: E402

project = "jaxopt_adv"
author = "the jaxopt_adv developers"
copyright = "the jaxopt_adv developers"  # noqa: A001 -- Sphinx's setting name
release = jaxopt_adv.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
templates_path = ["_templates"]

myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3

autosummary_generate = True
autodoc_member_order = "bysource"
# jaxopt_adv.models.torch_twins subclasses torch.nn.Module: without torch (the docs extra
# alone) it is documented from a stand-in
autodoc_mock_imports = [] if importlib.util.find_spec("torch") else ["torch"]
autodoc_typehints = "none"  # the signatures and the Args: sections say it once
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

html_theme = "furo"
html_title = f"jaxopt_adv {release}"
