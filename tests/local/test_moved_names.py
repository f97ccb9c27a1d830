"""``jaxopt_adv.sigprop`` and ``jaxopt_adv.localized`` are deprecated aliases: their names
resolve to ``jaxopt_adv.local``'s objects with a DeprecationWarning, and nothing in the
package, its examples or benchmarks imports them."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import jaxopt_adv.local

ROOT = Path(__file__).resolve().parent.parent.parent
# the aliases themselves and the files that say they are deprecated
DEPRECATION_FILES = {
    "jaxopt_adv/sigprop.py",
    "jaxopt_adv/localized.py",
    "jaxopt_adv/_moved.py",
    "jaxopt_adv/__init__.py",
    "docs/algorithms.md",  # its Naming section
}
SIGPROP = [n for n in jaxopt_adv.local.__all__ if "sigprop" in n.lower()]
LOCALIZED = [n for n in jaxopt_adv.local.__all__ if n not in SIGPROP]
OLD = [("jaxopt_adv.sigprop", n) for n in SIGPROP] + [
    ("jaxopt_adv.localized", n) for n in LOCALIZED
]


@pytest.mark.parametrize(("module", "name"), OLD, ids=[f"{m}.{n}" for m, n in OLD])
def test_an_old_name_resolves_to_jaxopt_adv_local_with_a_warning(module, name):
    old = importlib.import_module(module)
    with pytest.warns(
        DeprecationWarning, match=rf"{module}.{name} is deprecated.*jaxopt_adv\.local"
    ):
        value = getattr(old, name)
    assert value is getattr(jaxopt_adv.local, name)


def test_from_import_warns_at_the_callers_line():
    with pytest.warns(DeprecationWarning) as record:
        from jaxopt_adv.sigprop import SigPropNet  # noqa: F401
    assert record[0].filename == __file__


@pytest.mark.parametrize("module", ["jaxopt_adv.sigprop", "jaxopt_adv.localized"])
def test_an_unknown_name_is_an_attribute_error(module):
    with pytest.raises(AttributeError, match="no_such_thing"):
        importlib.import_module(module).no_such_thing  # noqa: B018


def test_the_package_attribute_still_reaches_the_old_modules():
    code = (
        "import warnings, jaxopt_adv; warnings.simplefilter('error');"
        "import sys; assert 'jaxopt_adv.sigprop' not in sys.modules;"  # not imported eagerly
        "m = jaxopt_adv.sigprop; assert m.__name__ == 'jaxopt_adv.sigprop';"
        "print(jaxopt_adv.localized.__name__)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "jaxopt_adv.localized"


def test_nothing_shipped_imports_the_old_modules():
    pattern = re.compile(r"\bjaxopt_adv\.(sigprop|localized)\b(?!\.py)")
    hits = [
        f"{path.relative_to(ROOT)}:{number}"
        for folder in ("jaxopt_adv", "examples", "benchmarks", "docs")
        for path in (ROOT / folder).rglob("*.*")
        if path.suffix in (".py", ".md", ".rst")
        and path.relative_to(ROOT).as_posix() not in DEPRECATION_FILES
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not hits, hits
