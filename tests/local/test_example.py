"""examples/local_rules.py runs end to end with tiny settings and prints its table."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^\| (.+?) \| ([0-9.]+) \+- ([0-9.]+) \| ([+-][0-9.]+|-) \| ([0-9.]+) \|$", re.M)


def test_local_rules_example_runs():
    result = subprocess.run(
        [
            sys.executable,
            "examples/local_rules.py",
            "--epochs",
            "2",
            "--seeds",
            "1",
            "--train-size",
            "512",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    rows = {m.group(1): m for m in ROW.finditer(result.stdout)}
    expected = {"Backprop Adam", "SigProp (Adam)", "Backprop SGD-m", "Localized k=1 (SGD-m)"}
    assert set(rows) == expected, result.stdout
    for name in expected:
        assert 10.0 < float(rows[name].group(2)) <= 100.0, result.stdout  # above chance
        assert float(rows[name].group(5)) > 0, result.stdout
    assert rows["SigProp (Adam)"].group(4) != "-"
