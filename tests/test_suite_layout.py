"""The test suite's own layout: test modules share code through ``tests/helpers`` (and the
harness, the case table and each family's non-test modules), never by importing another
test module (a test file is free to change without breaking another file's imports)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def imported_modules(path: Path) -> list[str]:
    """Every module an ``import`` or ``from ... import`` statement of ``path`` names (for
    ``from package import name``, also ``package.name``: ``name`` may be a module)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            found += [f"{node.module}.{alias.name}" for alias in node.names]
    return found


def is_test_module(name: str) -> bool:
    return name.startswith("tests.") and name.rsplit(".", 1)[-1].startswith("test_")


def test_no_module_under_tests_imports_a_test_module():
    offenders = [
        f"{path.relative_to(TESTS.parent)}: {name}"
        for path in sorted(TESTS.rglob("*.py"))
        for name in imported_modules(path)
        if is_test_module(name)
    ]
    assert not offenders, offenders


def test_a_test_module_import_is_found(tmp_path):
    """The check sees both spellings."""
    source = tmp_path / "a.py"
    source.write_text(
        "from tests.torch_exact.test_functional import run_parity\n"
        "from tests.torch_exact import test_functional\n"
        "from tests.helpers import trees\n"
    )
    names = [name for name in imported_modules(source) if is_test_module(name)]
    assert names == ["tests.torch_exact.test_functional", "tests.torch_exact.test_functional"]
