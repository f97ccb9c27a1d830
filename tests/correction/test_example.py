"""examples/mnist_advanced.py runs end to end with tiny settings and prints its table."""

from __future__ import annotations

import re

import pytest

from tests.helpers.examples import run_example

ROW = re.compile(
    r"^(Adam|FER\(Adam\)|GC\(Adam\)|SGD-momentum|FER\(SGD\)|GC\(SGD\))\s+"
    r"([0-9.]+) \+- ([0-9.]+)\s+([+-][0-9.]+)?\s*([0-9.]+)$",
    re.MULTILINE,
)
BASE_OF = {
    "FER(Adam)": "Adam",
    "GC(Adam)": "Adam",
    "FER(SGD)": "SGD-momentum",
    "GC(SGD)": "SGD-momentum",
}


@pytest.mark.slow
def test_mnist_advanced_runs(tmp_path):
    out = tmp_path / "curves.png"
    result = run_example("mnist_advanced.py", "--epochs", "2", "--seeds", "1", "--out", str(out))
    rows = {m.group(1): m.groups()[1:] for m in ROW.finditer(result.stdout)}
    assert len(rows) == 6, result.stdout
    accuracy = {name: float(row[0]) for name, row in rows.items()}
    for name, row in rows.items():
        assert float(row[1]) == 0.0  # one seed: no spread
        assert float(row[3]) > 0.0  # seconds per epoch
        base = BASE_OF.get(name)
        if base is None:
            assert row[2] is None
        else:
            assert float(row[2]) == pytest.approx(accuracy[name] - accuracy[base], abs=0.011)
    # two epochs (62 steps) are far above chance (10%) for every optimizer
    assert min(accuracy[n] for n in ("Adam", "FER(Adam)", "GC(Adam)")) > 80.0, result.stdout
    assert min(accuracy[n] for n in ("SGD-momentum", "FER(SGD)", "GC(SGD)")) > 50.0, result.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
