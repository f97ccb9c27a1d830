"""The Sphinx site in docs/ covers the package: every module in the API reference, every
guide in the table of contents. (CI builds the site with ``sphinx -W``; these checks run
with the tests, without Sphinx.)"""

import re
from pathlib import Path

import jaxopt_adv

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SHIMS = {"jaxopt_adv.sigprop", "jaxopt_adv.localized"}  # re-exports of jaxopt_adv.local.*


def public_modules() -> set[str]:
    """Dotted names of the package's modules, private ones and ``__main__`` left out."""
    package = Path(jaxopt_adv.__file__).parent
    names = set()
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if not any(p.startswith("_") for p in parts):
            names.add(".".join(parts))
    return names - SHIMS


def test_api_reference_lists_every_module():
    listed = set(re.findall(r"^   (jaxopt_adv[\w.]*)$", (DOCS / "api.rst").read_text(), re.M))
    assert listed == public_modules()


def test_every_guide_is_in_the_table_of_contents():
    index = (DOCS / "index.md").read_text()
    entries = set(re.findall(r"^(\w+)$", index, re.M))
    guides = {p.stem for p in DOCS.glob("*.md")} - {"index"}
    assert guides <= entries, guides - entries


# Documents a user does not have: the source documents the library was written from
# ("seed 002") and the project's internal specification ("spec §5.4").
INTERNAL = re.compile(
    r"\b[Ss]eed[ -]?0\d\d\b|\b[Tt]he seed's|\b[Tt]he seeds?\b(?= (?:document|file|code|text))"
    r"|\bseed (?:MLP|options)\b"  # the source documents (not a random seed)
    r"|§|\bspec/|\b[Tt]he spec\b|(?<!\.)\bspec(?: section)? ?\d|(?<!\.)\bspec,"  # the specification
)


def user_facing_files() -> list[Path]:
    pages = [ROOT / "README.md", *DOCS.glob("*.md"), ROOT / "benchmarks" / "RESULTS.md"]
    code = [
        p
        for folder in ("jaxopt_adv", "examples", "benchmarks")
        for p in (ROOT / folder).rglob("*.py")
    ]
    return pages + code


def test_user_facing_text_cites_no_internal_documents():
    hits = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in user_facing_files()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if INTERNAL.search(line)
    ]
    assert not hits, "\n".join(hits)
