"""examples/mup_transfer.py runs end to end at tiny settings (the full sweep is the note's)."""

from __future__ import annotations

import re

from tests.helpers.examples import load_example, run_example

mup_transfer = load_example("mup_transfer.py", "mup_transfer")


def test_parse_lrs():
    assert mup_transfer.parse_lrs("-3:-1") == [-3, -2, -1]
    assert mup_transfer.parse_lrs("-9,-7") == [-9, -7]


def test_tiny_sweep(tmp_path):
    out = tmp_path / "sweep.png"
    result = run_example(
        "mup_transfer.py", "--widths", "16,32", "--lrs=-9,-5", "--steps", "5", "--out", str(out)
    )
    rows = {
        (m.group(1), int(m.group(2))): [float(v) for v in m.group(3).split()]
        for m in re.finditer(r"^\s*(SP|muP)\s+(\d+)\s+([0-9. ]+?)\s+\(", result.stdout, re.M)
    }
    assert set(rows) == {("SP", 16), ("SP", 32), ("muP", 16), ("muP", 32)}, result.stdout
    # at the base width muP is the standard parametrization: the same losses
    assert rows["SP", 16] == rows["muP", 16]
    assert rows["SP", 32] != rows["muP", 32]
    table = re.search(r"width\s+SP\s+muP\n((?:\s*\d+\s+-?\d+\s+-?\d+\n)+)", result.stdout)
    assert table is not None, result.stdout
    assert len(table.group(1).splitlines()) == 2
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
