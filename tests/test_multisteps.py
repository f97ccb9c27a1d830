"""Every registered optimizer under ``optax.MultiSteps`` with mixed precision, all in one
process (a subprocess: the sequence once crashed the interpreter inside XLA:CPU)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cases import CASES

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_every_optimizer_under_multisteps_mixed_precision_in_one_process():
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-m", "tests.helpers.multisteps_check", "--small"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, (result.returncode, result.stdout[-3000:], result.stderr[-3000:])
    assert f"checked {len(CASES)} optimizers, 0 failures" in result.stdout
