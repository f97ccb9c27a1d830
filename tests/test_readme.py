"""The Python snippets of the README and of the guides in docs/ run as written."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def snippets(page: Path) -> list[str]:
    """The page's fenced ```python blocks, in order."""
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


def test_readme_has_snippets():
    assert snippets(ROOT / "README.md")


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_snippets_run(page):
    for snippet in snippets(page):
        exec(compile(snippet, str(page.relative_to(ROOT)), "exec"), {})
