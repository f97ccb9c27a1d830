"""The README's Python snippets run as written."""

import re
from pathlib import Path

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
SNIPPETS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_readme_has_snippets():
    assert SNIPPETS


def test_readme_snippets_run():
    for snippet in SNIPPETS:
        exec(compile(snippet, "README.md", "exec"), {})
