"""Sharded parameters on an 8-device CPU mesh (in a subprocess: the device count is
fixed when jax starts): same numbers as one device, state follows the params' sharding."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cases import CASES

ROOT = Path(__file__).resolve().parent.parent


# every registered optimizer, in three subprocesses that parallel workers can share
GROUPS = [[case.name for case in CASES[k::3]] for k in range(3)]


@pytest.mark.slow
@pytest.mark.parametrize("names", GROUPS, ids=["group0", "group1", "group2"])
def test_every_optimizer_on_an_8_device_mesh(names):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-m", "tests.helpers.sharding_check", *names],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"checked {len(names)} optimizers" in result.stdout
    assert "0 failures" in result.stdout
