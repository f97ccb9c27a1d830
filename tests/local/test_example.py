"""examples/local_rules.py runs end to end with tiny settings and prints its table.

It runs in this process (``runpy``), on scikit-learn's digits: a subprocess would pay
for Python, JAX and the data loader again, several seconds of the tight CI budget (and
``conftest.py`` turns XLA's optimisations mostly off: compilation is most of its run time).
"""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^\| (.+?) \| ([0-9.]+) \+- ([0-9.]+) \| ([+-][0-9.]+|-) \| ([0-9.]+) \|$", re.M)


def test_local_rules_example_runs(monkeypatch, capsys):
    arguments = ["--epochs", "2", "--seeds", "1", "--dataset", "digits"]
    monkeypatch.setattr(sys, "argv", ["local_rules.py", *arguments])
    runpy.run_path(str(ROOT / "examples" / "local_rules.py"), run_name="__main__")
    output = capsys.readouterr().out
    rows = {m.group(1): m for m in ROW.finditer(output)}
    expected = {"Backprop Adam", "SigProp (Adam)", "Backprop SGD-m", "Localized k=1 (SGD-m)"}
    assert set(rows) == expected, output
    for name in expected:
        assert 10.0 < float(rows[name].group(2)) <= 100.0, output  # above chance
        assert float(rows[name].group(5)) > 0, output
    assert rows["SigProp (Adam)"].group(4) != "-"
    assert output.startswith("digits, 2 epochs"), output
