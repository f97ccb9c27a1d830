"""The examples run, and the torch-port example tracks torch on real data."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_port_from_torch(optimizer):
    result = subprocess.run(
        [sys.executable, "examples/port_from_torch.py", "--optimizer", optimizer, "--epochs", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    deviation = float(re.search(r"loss curves: ([0-9.e+-]+)", result.stdout).group(1))
    assert deviation < 1e-4, result.stdout
