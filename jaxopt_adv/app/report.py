"""The outputs of ``jaxopt-adv compare``: terminal table, JSON, CSV and PNG figures.

Files are written into a staging folder inside ``--out`` (``.jaxopt-adv-<pid>-*``) and
moved into place only when all of them exist, with Ctrl-C held off while they move, so
an interrupted or failing run leaves no half-written results; a figure this run does not
draw (``torch_overlay.png`` without torch) is removed rather than left from an earlier
run. A staging folder whose process is gone (killed) is removed by the next run.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CSV_FIELDS",
    "OUTPUT_NAMES",
    "STAGING_PREFIX",
    "check_writable",
    "discard_staging",
    "format_table",
    "remove_stale_staging",
    "write_outputs",
]

CSV_FIELDS = (
    "optimizer",
    "family",
    "test_accuracy",
    "test_accuracy_std",
    "final_loss",
    "epoch_time_s",
    "state_bytes_per_param",
    "torch_max_rel_dev",
)
# Every file ``write_outputs`` may write.
OUTPUT_NAMES = ("accuracy.png", "curves.png", "results.csv", "results.json", "torch_overlay.png")
STAGING_PREFIX = ".jaxopt-adv-"
# staging folders of this process that exist now
_STAGING: set[Path] = set()


def discard_staging() -> None:
    """Remove this process's staging folders (on Ctrl-C, before the process ends)."""
    for staging in list(_STAGING):
        shutil.rmtree(staging, ignore_errors=True)
        _STAGING.discard(staging)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def remove_stale_staging(out: Path) -> list[Path]:
    """Remove the staging folders in ``out`` left by processes that no longer run (a
    killed run); return them."""
    removed = []
    for path in out.glob(f"{STAGING_PREFIX}*"):
        pid = path.name[len(STAGING_PREFIX) :].split("-", 1)[0]
        if path.is_dir() and not (pid.isdigit() and _alive(int(pid))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


@contextlib.contextmanager
def _no_interrupt() -> Iterator[None]:
    """Hold off SIGINT (Ctrl-C) in the block; it is delivered when the block ends."""
    if not hasattr(signal, "pthread_sigmask"):  # not POSIX
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def check_writable(out: Path) -> None:
    """Create ``out`` if needed and make sure files can be written there.

    Raises:
      OSError: with a message naming the directory.
    """
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        raise OSError(f"cannot write results to {out}: {error.strerror or error}") from error


def format_table(records: list[dict[str, Any]]) -> str:
    """A fixed-width text table of the records (the terminal output)."""
    header = (
        f"{'optimizer':<20} {'family':<12} {'test acc':>15} {'final loss':>10} "
        f"{'epoch s':>8} {'state B/param':>13} {'torch dev':>10}"
    )
    lines = [header, "-" * len(header)]
    for r in records:
        accuracy = f"{100 * r['test_accuracy']:.2f} ± {100 * r['test_accuracy_std']:.2f}"
        dev = r["torch_max_rel_dev"]
        lines.append(
            f"{r['optimizer']:<20} {r['family']:<12} {accuracy:>15} {r['final_loss']:>10.4f} "
            f"{r['epoch_time_s']:>8.3f} {r['state_bytes_per_param']:>13.2f} "
            f"{'—' if dev is None else f'{dev:.1e}':>10}"
        )
    return "\n".join(lines)


def _figures(records: list[dict[str, Any]], pairs: dict[str, dict[str, np.ndarray]], title: str):
    """(file name, drawing function) for every figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def curves(path: Path) -> None:
        fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
        for r in records:
            epochs = np.arange(1, len(r["curves"]["train_loss"]) + 1)
            loss_ax.plot(epochs, r["curves"]["train_loss"], marker="o", label=r["optimizer"])
            acc_ax.plot(
                epochs,
                100 * np.asarray(r["curves"]["test_accuracy"]),
                marker="o",
                label=r["optimizer"],
            )
        loss_ax.set(xlabel="epoch", ylabel="train loss (epoch mean)", yscale="log")
        acc_ax.set(xlabel="epoch", ylabel="test accuracy (%)")
        acc_ax.legend(fontsize=8)
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)

    def accuracy(path: Path) -> None:
        fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(records)), 4))
        names = [r["optimizer"] for r in records]
        ax.bar(
            names,
            [100 * r["test_accuracy"] for r in records],
            yerr=[100 * r["test_accuracy_std"] for r in records],
            capsize=4,
        )
        low = min(100 * r["test_accuracy"] for r in records)
        ax.set(ylabel="test accuracy (%)", ylim=(max(0, low - 10), 100), title=title)
        ax.tick_params(axis="x", rotation=30)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)

    def overlay(path: Path) -> None:
        fig, axes = plt.subplots(1, len(pairs), figsize=(5 * len(pairs), 3.8), squeeze=False)
        for ax, (name, pair) in zip(axes[0], pairs.items(), strict=True):
            ax.plot(pair["torch"], lw=3, alpha=0.4, label="torch")
            ax.plot(pair["jax"], lw=1, label="jaxopt_adv")
            ax.set(title=name, xlabel="step", ylabel="train loss (dropout off)", yscale="log")
            ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)

    figures: list[tuple[str, Callable[[Path], None]]] = [
        ("curves.png", curves),
        ("accuracy.png", accuracy),
    ]
    if pairs:
        figures.append(("torch_overlay.png", overlay))
    return figures


def write_outputs(
    out: Path,
    records: list[dict[str, Any]],
    pairs: dict[str, dict[str, np.ndarray]],
    title: str,
) -> list[Path]:
    """Write results.json, results.csv and the figures into ``out``; return the paths."""
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=out))
    _STAGING.add(staging)
    try:
        (staging / "results.json").write_text(json.dumps(records, indent=2, default=repr) + "\n")
        with open(staging / "results.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, CSV_FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(records)
        for name, draw in _figures(records, pairs, title):
            draw(staging / name)
        written = []
        with _no_interrupt():
            for path in sorted(staging.iterdir()):
                os.replace(path, out / path.name)
                written.append(out / path.name)
            for name in OUTPUT_NAMES:  # an earlier run's figure this run does not draw
                if out / name not in written:
                    (out / name).unlink(missing_ok=True)
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        _STAGING.discard(staging)
