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
    "best",
    "learning_rate",
    "tuned",
    "test_accuracy",
    "test_accuracy_std",
    "val_accuracy",
    "final_loss",
    "epoch_time_s",
    "state_bytes_per_param",
    "torch_step_dev",
    "torch_free_run_dev",
)
# Every file ``write_outputs`` may write.
OUTPUT_NAMES = (
    "accuracy.png",
    "curves.png",
    "lr_sensitivity.png",
    "results.csv",
    "results.json",
    "torch_overlay.png",
)
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
    """A fixed-width text table of the records (the terminal output); ``*`` marks the best
    test accuracy."""
    header = (
        f"{'optimizer':<21} {'family':<11} {'lr':>8} {'test acc':>15} {'val acc':>7} "
        f"{'final loss':>10} {'epoch s':>8} {'state B/param':>13} "
        f"{'torch step dev':>14} {'free-run loss dev':>17}"
    )
    lines = [header, "-" * len(header)]
    for r in records:
        accuracy = f"{100 * r['test_accuracy']:.2f} ± {100 * r['test_accuracy_std']:.2f}"
        name = ("* " if r.get("best") else "  ") + r["optimizer"]
        lines.append(
            f"{name:<21} {r['family']:<11} {r['learning_rate']:>8.2g} {accuracy:>15} "
            f"{100 * r['val_accuracy']:>7.2f} {r['final_loss']:>10.4f} "
            f"{r['epoch_time_s']:>8.3f} {r['state_bytes_per_param']:>13.2f} "
            f"{_deviation(r['torch_step_dev']):>14} {_deviation(r['torch_free_run_dev']):>17}"
        )
    return "\n".join(lines)


def _deviation(value: float | None) -> str:
    return "—" if value is None else f"{value:.1e}"


def line_styles(count: int) -> list[dict[str, Any]]:
    """``count`` distinct (colour, line style, marker) combinations: the 20 colours of
    matplotlib's ``tab20`` cycle, then again with another line style and marker."""
    from matplotlib import colormaps

    colours = colormaps["tab20"].colors
    dashes = ("-", "--", ":", "-.")
    markers = ("o", "s", "^", "D")
    return [
        {
            "color": colours[i % len(colours)],
            "linestyle": dashes[(i // len(colours) + i % 2) % len(dashes)],
            "marker": markers[(i // len(colours)) % len(markers)],
        }
        for i in range(count)
    ]


def _figures(records: list[dict[str, Any]], pairs: dict[str, dict[str, np.ndarray]], title: str):
    """(file name, drawing function) for every figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = dict(zip((r["optimizer"] for r in records), line_styles(len(records)), strict=True))

    def legend_outside(fig, ax) -> None:
        handles, labels = ax.get_legend_handles_labels()
        columns = 1 + (len(labels) - 1) // 18  # 18 entries fit the figures' height
        fig.legend(handles, labels, loc="outside right upper", fontsize=8, ncols=columns)

    def curves(path: Path) -> None:
        fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(13, 4.5), layout="constrained")
        for r in records:
            epochs = np.arange(1, len(r["curves"]["train_loss"]) + 1)
            style = {**styles[r["optimizer"]], "markersize": 4, "label": r["optimizer"]}
            loss_ax.plot(epochs, r["curves"]["train_loss"], **style)
            acc_ax.plot(epochs, 100 * np.asarray(r["curves"]["test_accuracy"]), **style)
        loss_ax.set(xlabel="epoch", ylabel="train loss (epoch mean)", yscale="log")
        acc_ax.set(xlabel="epoch", ylabel="test accuracy (%)")
        legend_outside(fig, acc_ax)
        fig.suptitle(title)
        fig.savefig(path, dpi=110)
        plt.close(fig)

    def accuracy(path: Path) -> None:
        fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(records)), 4.5), layout="constrained")
        names = [r["optimizer"] for r in records]
        ax.bar(
            names,
            [100 * r["test_accuracy"] for r in records],
            yerr=[100 * r["test_accuracy_std"] for r in records],
            color=[styles[n]["color"] for n in names],
            capsize=3,
        )
        low = min(100 * r["test_accuracy"] for r in records)
        ax.set(ylabel="test accuracy (%)", ylim=(max(0, low - 10), 100), title=title)
        ax.tick_params(axis="x", rotation=60)
        fig.savefig(path, dpi=110)
        plt.close(fig)

    def sensitivity(path: Path) -> None:
        fig, ax = plt.subplots(figsize=(10, 5), layout="constrained")
        for r in (r for r in records if "lr_grid" in r):
            loss = [np.nan if v is None else v for v in r["grid_val_loss"]]
            ax.plot(
                r["lr_grid"], loss, **styles[r["optimizer"]], markersize=4, label=r["optimizer"]
            )
        ax.set(
            xlabel="learning rate",
            ylabel="validation loss (after the last epoch)",
            xscale="log",
            yscale="log",
            title=f"learning-rate sensitivity: {title}",
        )
        legend_outside(fig, ax)
        fig.savefig(path, dpi=110)
        plt.close(fig)

    def overlay(path: Path) -> None:
        columns = min(4, len(pairs))
        rows = -(-len(pairs) // columns)
        fig, axes = plt.subplots(
            rows, columns, figsize=(4 * columns, 3.2 * rows), squeeze=False, layout="constrained"
        )
        for ax, (name, pair) in zip(axes.flat, pairs.items(), strict=False):
            ax.plot(pair["torch"], lw=3, alpha=0.4, label="torch")
            ax.plot(pair["jax"], lw=1, label="jaxopt_adv")
            ax.set(title=name, xlabel="step", ylabel="train loss", yscale="log")
            ax.legend(fontsize=8)
        for ax in axes.flat[len(pairs) :]:
            ax.set_visible(False)
        fig.suptitle("free-running training, JAX and torch from the same weights")
        fig.savefig(path, dpi=100)
        plt.close(fig)

    figures: list[tuple[str, Callable[[Path], None]]] = [
        ("curves.png", curves),
        ("accuracy.png", accuracy),
    ]
    if any("lr_grid" in r for r in records):
        figures.append(("lr_sensitivity.png", sensitivity))
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
