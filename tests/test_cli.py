"""The ``jaxopt-adv`` command: compare, list, bench, and its errors."""

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from jaxopt_adv.app.cli import main
from jaxopt_adv.app.compare import NEEDS_MORE
from jaxopt_adv.registry import list_optimizers

ROOT = Path(__file__).resolve().parent.parent
FIELDS = {
    "optimizer",
    "test_accuracy",
    "test_accuracy_std",
    "final_loss",
    "epoch_time_s",
    "state_bytes_per_param",
    "torch_max_rel_dev",
}


def run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jaxopt_adv", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "jaxopt-adv"
    result = subprocess.run([script, "list", "torch.ada*"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "torch.optim.Adadelta" in result.stdout


def test_list_shows_every_optimizer_with_family_paper_and_reference():
    result = run("list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["name", "family", "paper", "torch", "reference"]
    assert [line.split()[0] for line in lines[1:]] == list_optimizers()
    assert any("Loshchilov & Hutter 2019" in line and "torch.optim.AdamW" in line for line in lines)


@pytest.mark.slow
def test_compare_tiny_run_writes_every_output(tmp_path):
    out = tmp_path / "results"
    result = run(
        "compare", "--data", "digits", "--epochs", "2", "--seeds", "2",
        "--optimizers", "torch.adamw,came", "--out", str(out), "--no-progress",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "torch.adamw" in result.stdout and "came" in result.stdout  # the table
    records = json.loads((out / "results.json").read_text())
    assert [r["optimizer"] for r in records] == ["torch.adamw", "came"]
    for record in records:
        assert FIELDS <= set(record)
        assert 0.5 < record["test_accuracy"] <= 1.0  # digits: far above the 0.1 of chance
        assert record["test_accuracy_std"] >= 0.0 and record["epoch_time_s"] > 0.0
    adamw, came = records
    assert adamw["state_bytes_per_param"] == pytest.approx(8.0, abs=1e-3)  # exp_avg, exp_avg_sq
    assert came["state_bytes_per_param"] < 8.0  # factored second moment and confidence
    assert adamw["torch_max_rel_dev"] < 1e-4  # tracks torch.optim.AdamW
    assert came["torch_max_rel_dev"] is None  # not a torch.optim optimizer
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["optimizer"] for row in rows] == ["torch.adamw", "came"]
    for figure in ("curves.png", "accuracy.png", "torch_overlay.png"):
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["results.json", "results.csv", "curves.png", "accuracy.png", "torch_overlay.png"]
    )  # no staging directory left behind


@pytest.mark.slow
def test_bench_tiny_run_writes_json_and_png(tmp_path):
    result = run(
        "bench", "--sizes", "2e4", "--leaves", "1,4", "--steps", "3", "--out", str(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    table = json.loads((tmp_path / "bench.json").read_text())
    assert set(table) == {"20000x1", "20000x4"}
    row = table["20000x4"]["adam"]
    assert row["ours_ms"] > 0 and row["optax_ms"] > 0 and row["floor_ms"] > 0
    assert "torch_fused_ms" in row and "torch_foreach_ms" in row
    assert "optax_ms" not in table["20000x1"]["came"]  # no optax counterpart
    assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"
    assert "| 20,000 | 4 | adam |" in result.stdout


def test_unknown_optimizer_names_close_matches(capsys):
    assert main(["compare", "--optimizers", "torch.adamww"]) == 2
    error = capsys.readouterr().err
    assert "unknown optimizer 'torch.adamww'" in error and "torch.adamw" in error


def test_unknown_data_set_exits_2():
    result = run("compare", "--data", "cifar10")
    assert result.returncode == 2
    assert "mnist5k" in result.stderr and "digits" in result.stderr


def test_optimizers_that_need_more_than_gradients(capsys, tmp_path):
    assert main(["compare", "--optimizers", "fer", "--out", str(tmp_path)]) == 2
    assert "examples/mnist_advanced.py" in capsys.readouterr().err
    assert main(["compare", "--optimizers", "mu_*", "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "skipping mu_adam" in error and "no optimizer to compare" in error
    assert set(NEEDS_MORE) <= set(list_optimizers())


def test_unwritable_out_fails_before_training(capsys, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    assert main(["compare", "--out", str(blocker / "results"), "--optimizers", "came"]) == 2
    assert f"cannot write results to {blocker / 'results'}" in capsys.readouterr().err
    assert blocker.read_text() == "not a directory"


def test_missing_torch_says_how_to_install(monkeypatch, capsys, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    assert main(["compare", "--torch", "--out", str(tmp_path)]) == 2
    assert "pip install torch==2.13.0" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_bad_counts_exit_2(capsys, tmp_path):
    assert main(["compare", "--epochs", "0", "--out", str(tmp_path)]) == 2
    assert "--epochs must be >= 1" in capsys.readouterr().err
