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


@pytest.mark.slow
def test_lora_finetune_automagic_matches_or_beats_adamw():
    """The example's own claim, at its default settings: Automagic-CameAMP's final
    training loss on the rotated task is at most AdamW's, and its state stays within the
    LoRA preset's budget (<= 17 bytes per trainable element; AdamW keeps 8, CAME ~5)."""
    result = subprocess.run(
        [sys.executable, "examples/lora_finetune.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    rows = dict(
        (m.group(1).strip(), (float(m.group(2)), float(m.group(3)), float(m.group(4))))
        for m in re.finditer(
            r"^(AdamW|CAME|Automagic-CameAMP)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)$",
            result.stdout,
            re.MULTILINE,
        )
    )
    assert set(rows) == {"AdamW", "CAME", "Automagic-CameAMP"}, result.stdout
    assert rows["Automagic-CameAMP"][0] <= rows["AdamW"][0], result.stdout
    assert rows["Automagic-CameAMP"][1] > 0.5, result.stdout  # far above the 0.1 of chance
    assert rows["AdamW"][2] == 8.0, result.stdout
    assert rows["CAME"][2] < 8.0, result.stdout
    assert rows["Automagic-CameAMP"][2] <= 17.0, result.stdout
