"""The ``jaxopt-adv`` command: compare, list, bench, and its errors.

The ``compare`` and ``bench`` runs compile quickly in their subprocesses
(``tests/helpers/quick.py``): the checks are on what they write, the torch step deviation
within float32 rounding included (below 1e-6 with either settings). The Ctrl-C runs keep
XLA's default settings, whose compilation runs on XLA's threads as the interrupt
arrives."""

import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from jaxopt_adv.app.cli import main
from jaxopt_adv.registry import list_optimizers
from tests.helpers.quick import quick_environment

ROOT = Path(__file__).resolve().parent.parent
FIELDS = {
    "optimizer",
    "test_accuracy",
    "test_accuracy_std",
    "final_loss",
    "epoch_time_s",
    "state_bytes_per_param",
    "learning_rate",
    "val_accuracy",
    "best",
    "torch_step_dev",
    "torch_free_run_dev",
}


def run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jaxopt_adv", *args],
        cwd=ROOT,
        env=quick_environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "jaxopt-adv"
    result = subprocess.run([script, "list", "torch.ada*"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "torch.optim.Adadelta" in result.stdout


def test_list_shows_every_optimizer_with_family_paper_and_reference(capsys):
    # in this process: ``python -m jaxopt_adv`` is run by the compare and bench tests
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "family", "paper", "torch", "reference", "fused", "needs"]
    assert [line.split()[0] for line in lines[1:]] == list_optimizers()
    adamw = next(line for line in lines if line.startswith("torch.adamw "))
    assert "Loshchilov & Hutter 2019" in adamw and "torch.optim.AdamW" in adamw
    assert adamw.rstrip().endswith("yes")  # a fused kernel step, needs nothing more
    lbfgs = next(line for line in lines if line.startswith("torch.lbfgs "))
    assert " - " in lbfgs and lbfgs.rstrip().endswith("update(value_fn=) (the loss closure)")


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
    assert sorted(r["optimizer"] for r in records) == ["came", "torch.adamw"]
    assert records[0]["test_accuracy"] >= records[1]["test_accuracy"]  # best first, marked
    assert [r["best"] for r in records] == [
        True,
        records[1]["test_accuracy"] == records[0]["test_accuracy"],
    ]
    for record in records:
        assert FIELDS <= set(record)
        assert 0.5 < record["test_accuracy"] <= 1.0  # digits: far above the 0.1 of chance
        assert record["test_accuracy_std"] >= 0.0 and record["epoch_time_s"] > 0.0
    adamw, came = sorted(records, key=lambda r: r["optimizer"] != "torch.adamw")
    assert adamw["state_bytes_per_param"] == pytest.approx(8.0, abs=1e-3)  # exp_avg, exp_avg_sq
    assert came["state_bytes_per_param"] < 8.0  # factored second moment and confidence
    # on torch's gradients from torch's weights every step lands within float32 rounding
    assert 0.0 <= adamw["torch_step_dev"] < 1e-6
    # free-running training drifts by machine-dependent rounding: only reported
    assert np.isfinite(adamw["torch_free_run_dev"]) and adamw["torch_free_run_dev"] >= 0.0
    assert came["torch_step_dev"] is None and came["torch_free_run_dev"] is None
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["optimizer"] for row in rows] == [r["optimizer"] for r in records]
    assert {"learning_rate", "val_accuracy", "best", "torch_step_dev"} <= set(rows[0])
    for figure in ("curves.png", "accuracy.png", "torch_overlay.png"):
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["results.json", "results.csv", "curves.png", "accuracy.png", "torch_overlay.png"]
    )  # no staging directory left behind


@pytest.mark.slow
def test_bench_tiny_run_writes_json_and_png(tmp_path):
    result = run(
        "bench", "--sizes", "2e4", "--leaves", "1,4", "--steps", "3", "--out", str(tmp_path),
        "--optimizers", "came,adam",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    table = json.loads((tmp_path / "bench.json").read_text())
    assert set(table) == {"20000x1", "20000x4"}
    assert [name for name in table["20000x4"] if name != "copy_bandwidth_GBps"] == ["adam", "came"]
    row = table["20000x4"]["adam"]
    assert row["ours_ms"] > 0 and row["optax_ms"] > 0 and row["floor_ms"] > 0
    assert "torch_fused_ms" in row and "torch_foreach_ms" in row
    assert "optax_ms" not in table["20000x1"]["came"]  # no optax counterpart
    assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"
    assert "| 20,000 | 4 | adam |" in result.stdout


def test_bench_refuses_unknown_optimizers(capsys):
    status, error = exit_status(["bench", "--optimizers", "adam,lion"], capsys)
    assert status == 2
    assert "bench --optimizers: unknown 'lion'" in error and "radam, came, or all" in error


def test_every_bench_optimizer_builds_ours_optax_and_torch():
    """What ``bench`` times (each entry of ``bench.OPTIMIZERS``, whose timed run above
    covers two of them) exists: our registered factory and optax's counterpart take
    their settings and step a leaf, and torch.optim has the class."""
    import optax
    import torch

    from jaxopt_adv.app import bench
    from jaxopt_adv.registry import get_optimizer

    params = [jnp.ones(6)]
    for name, (_, (ours, kwargs), optax_twin, torch_twin) in bench.OPTIMIZERS.items():
        txs = [get_optimizer(ours)(bench.LR, **kwargs)]
        if optax_twin is not None:
            txs.append(getattr(optax, optax_twin[0])(bench.LR, **optax_twin[1]))
        for tx in txs:
            updates, _ = tx.update(params, tx.init(params), params)
            assert jnp.all(jnp.isfinite(updates[0])) and jnp.any(updates[0] != 0), name
        if torch_twin is not None:
            p = torch.ones(6, requires_grad=True)
            getattr(torch.optim, torch_twin[0])([p], lr=bench.LR, **torch_twin[1])


def test_unknown_optimizer_names_close_matches(capsys):
    assert main(["compare", "--optimizers", "torch.adamww"]) == 2
    error = capsys.readouterr().err
    assert "unknown optimizer 'torch.adamww'" in error and "torch.adamw" in error


def test_unknown_data_set_exits_2(capsys):
    status, error = exit_status(["compare", "--data", "cifar10"], capsys)
    assert status == 2
    assert "mnist5k" in error and "digits" in error


def test_optimizers_that_cannot_train_the_model_say_why(capsys, tmp_path):
    args = ["compare", "--model", "cnn", "--out", str(tmp_path), "--optimizers"]
    assert main([*args, "mu_adam"]) == 2
    error = capsys.readouterr().err
    assert "cannot train mu_adam: it trains an MLP of its own (run it with --model mlp" in error
    assert main([*args, "mu_*"]) == 2
    error = capsys.readouterr().err
    assert "not comparing mu_sgd: it trains an MLP" in error and "no optimizer to compare" in error


def test_lr_grid_needs_tune_and_positive_rates(capsys, tmp_path):
    out = ["--out", str(tmp_path)]
    assert main(["compare", "--lr-grid", "1e-3", *out]) == 2
    assert "--lr-grid needs --tune" in capsys.readouterr().err
    assert main(["compare", "--tune", "--lr-grid", "1e-3,-1", *out]) == 2
    assert "--lr-grid: '-1' is not a positive learning rate" in capsys.readouterr().err


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
    assert "--epochs must be from 1 to 1,000, got 0" in capsys.readouterr().err


def exit_status(argv: list[str], capsys) -> tuple[int, str]:
    """``main``'s exit status (argparse's too) and what it wrote on stderr."""
    try:
        status = main(argv)
    except SystemExit as exit:
        status = exit.code
    return status, capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["compare", "--data", "digits", "--batch-size", "5000"], "larger than the 1438 training"),
        (["compare", "--epochs", "1001"], "--epochs must be from 1 to 1,000, got 1001"),
        (["compare", "--epochs", "ten"], "argument --epochs: invalid int value: 'ten'"),
        (["compare", "--seeds", "-1"], "--seeds must be from 1 to 100"),
        (["compare", "--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        (["bench", "--sizes", "0"], "--sizes: '0' is not a whole number"),
        (["bench", "--sizes", "1e6,-5"], "--sizes: '-5' is not a whole number"),
        (["bench", "--sizes", "inf"], "--sizes: 'inf' is not a whole number"),
        (["bench", "--sizes", "nan"], "--sizes: 'nan' is not a whole number"),
        (["bench", "--sizes", "1.5"], "--sizes: '1.5' is not a whole number"),
        (["bench", "--sizes", "1e10"], "from 1 to 1,000,000,000"),
        (["bench", "--leaves", "0"], "--leaves: '0' is not a whole number"),
        (["bench", "--leaves", "1,"], "--leaves: '' is not a whole number"),
        (["bench", "--sizes", "100", "--leaves", "200"], "--leaves 200 is more than --sizes 100"),
        (["bench", "--steps", "0"], "--steps must be from 1"),
        (["bench", "--rounds", "1000"], "--rounds must be from 1 to 100"),
        (["bench", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_every_bad_argument_exits_2_with_one_line(argv, message, capsys, tmp_path):
    status, error = exit_status([*argv, "--out", str(tmp_path / "out")], capsys)
    assert status == 2
    assert error.endswith("\n") and error.count("\n") == 1, error
    prefix = "jaxopt-adv: error: " if "--bogus" in argv else f"jaxopt-adv {argv[0]}: error: "
    assert error.startswith(prefix) and message in error
    assert not (tmp_path / "out").exists()  # nothing created before the arguments are checked


@pytest.mark.slow
def test_no_torch_run_replaces_an_earlier_runs_outputs_and_clears_stale_staging(tmp_path, capsys):
    """``--no-torch`` draws no overlay: the earlier run's ``torch_overlay.png`` must not
    stay beside the new results; a staging folder of a killed run is removed, one of a
    process that still runs is not."""
    out = tmp_path / "results"
    out.mkdir()
    (out / "torch_overlay.png").write_bytes(b"an earlier run's figure")
    stale = out / ".jaxopt-adv-999999999-abcd"  # no such process
    stale.mkdir()
    (stale / "results.json").write_text("half written")
    legacy = out / ".jaxopt-adv-k2j4h1x9"  # an earlier version's name
    legacy.mkdir()
    alive = out / f".jaxopt-adv-{os.getpid()}-abcd"
    alive.mkdir()
    status, error = exit_status(
        ["compare", "--data", "digits", "--epochs", "1", "--seeds", "1",
         "--optimizers", "torch.sgd", "--no-torch", "--no-progress", "--out", str(out)],
        capsys,
    )  # fmt: skip
    assert status == 0, error
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["results.json", "results.csv", "curves.png", "accuracy.png", alive.name]
    )


def start_compare(out: Path, prefix: list[str], epochs: int = 1000) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *prefix, "compare", "--data", "digits", "--epochs", str(epochs),
         "--seeds", "1", "--optimizers", "torch.adamw", "--no-progress", "--out", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def finish(process: subprocess.Popen) -> tuple[str, str]:
    try:
        return process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.0, 3.0])
def test_ctrl_c_during_training_exits_130_with_one_line(tmp_path, delay):
    """Ctrl-C while compiling or training ended in SIGSEGV after the KeyboardInterrupt
    traceback (XLA still compiling on its threads while the interpreter shut down), or
    was ignored (raised inside a garbage-collection callback): now status 130, one line,
    the earlier results untouched and no staging folder."""
    out = tmp_path / "results"
    out.mkdir()
    (out / "results.json").write_text("an earlier run")
    process = start_compare(out, ["-m", "jaxopt_adv"])
    try:
        assert process.stdout.readline().startswith("digits: 1438 train")  # training starts
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
    finally:
        stdout, stderr = finish(process)
    assert process.returncode == 130, stderr[-2000:]
    assert stderr.splitlines() == ["jaxopt-adv compare: interrupted"]
    assert [p.name for p in out.iterdir()] == ["results.json"]
    assert (out / "results.json").read_text() == "an earlier run"


INTERRUPTED_WHILE_WRITING = """
import os, signal, sys, time
from jaxopt_adv.app import cli, report

def figures(*args):
    def draw(path):
        path.write_bytes(b"half a figure")
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(60)
    return [("curves.png", draw)]

report._figures = figures
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_ctrl_c_while_writing_results_removes_the_staging_folder(tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "results.json").write_text("an earlier run")
    process = start_compare(out, ["-c", INTERRUPTED_WHILE_WRITING], epochs=1)
    stdout, stderr = finish(process)
    assert process.returncode == 130, stderr[-2000:]
    assert stderr.splitlines() == ["jaxopt-adv compare: interrupted"]
    assert [p.name for p in out.iterdir()] == ["results.json"]
    assert (out / "results.json").read_text() == "an earlier run"
