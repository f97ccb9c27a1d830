"""The ``jaxopt-adv`` command (also ``python -m jaxopt_adv``).

* ``jaxopt-adv compare``: train a model on bundled real data with several optimizers,
  each at its tuned learning rate (``--tune``: tune it now on a validation split);
  accuracy, loss, epoch time, state size, and how closely the torch-exact ones track
  torch. Writes ``results.json``, ``results.csv`` and PNG figures.
* ``jaxopt-adv list [PATTERN]``: the registered optimizers with family, paper, the
  torch reference their parity is tested against, whether :func:`jaxopt_adv.fast.fused`
  has a kernel step for them, and what they need beyond ``update(grads, state, params)``.
* ``jaxopt-adv bench``: step time against optax and torch, and the memory floor.

Errors a person can act on (a bad argument, unknown names, torch missing, an unwritable
``--out``) exit with status 2 and a one-line message, before any training starts.
Ctrl-C ends ``compare`` and ``bench`` at once with status 130 and a one-line message,
leaving the results of an earlier run in ``--out`` as they were.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import importlib.util
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from jaxopt_adv.datasets import DATASETS
from jaxopt_adv.registry import close_matches, describe, list_optimizers

__all__ = ["main"]

TORCH_INSTALL = (
    "torch is not installed; install the CPU wheel with `pip install torch==2.13.0` "
    "(a newer or unpinned torch pulls a multi-GB CUDA build), or pass --no-torch"
)


# Upper bounds of the counts (a typo such as --epochs 50000 would run for days).
MAX_EPOCHS = 1000
MAX_SEEDS = 100
MAX_STEPS = 100_000
MAX_ROUNDS = 100
MAX_BENCH_ELEMENTS = 10**9  # 4 GB per float32 tree; Adam holds several
MAX_BENCH_LEAVES = 100_000
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


class UsageError(Exception):
    """A problem with the command line or the environment; exit status 2."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``prog: error: message``)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def resolve_optimizers(spec: str, model: str = "mlp") -> list[str]:
    """``"all"``, comma-separated names, or shell patterns such as ``"torch.*"``.

    Names are the registry's and compare's extra rows (``localized_learning``). A name
    that cannot train ``model`` is an error when named alone; a pattern leaves it out
    with a note on stderr that says why.
    """
    from jaxopt_adv.app.recipes import all_names, cannot_run

    known = all_names()
    names: list[str] = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        matched = fnmatch.filter(known, "*" if item == "all" else item)
        if not matched:
            close = close_matches(item)
            hint = f"; did you mean: {', '.join(close)}?" if close else ""
            raise UsageError(f"unknown optimizer {item!r}{hint} (see `jaxopt-adv list`)")
        for name in matched:
            reason = cannot_run(name, model)
            if reason is not None and matched == [item]:
                raise UsageError(f"compare cannot train {name}: {reason}")
            if reason is not None:
                print(f"not comparing {name}: {reason}", file=sys.stderr)
            elif name not in names:
                names.append(name)
    if not names:
        raise UsageError(f"no optimizer to compare in {spec!r}")
    return names


def _number(item: str) -> float:
    """``item`` as a float; NaN where it is not a number (the callers reject NaN)."""
    try:
        return float(item)
    except ValueError:
        return math.nan


def _learning_rates(text: str) -> list[float]:
    """``--lr-grid``: comma-separated positive finite learning rates."""
    values = []
    for item in text.split(","):
        value = _number(item)
        if not (math.isfinite(value) and value > 0):
            raise UsageError(f"--lr-grid: {item.strip()!r} is not a positive learning rate")
        values.append(value)
    return values


def _parser() -> argparse.ArgumentParser:
    from jaxopt_adv.app.bench import OPTIMIZERS as bench_optimizers
    from jaxopt_adv.app.compare import DEFAULT_OPTIMIZERS

    parser = _Parser(prog="jaxopt-adv", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    compare = commands.add_parser("compare", help="compare optimizers on bundled real data")
    compare.add_argument(
        "--optimizers",
        default=",".join(DEFAULT_OPTIMIZERS),
        help="comma-separated names or patterns, or 'all' (default: one optimizer of every family)",
    )
    compare.add_argument("--data", default="mnist5k", choices=DATASETS)
    compare.add_argument("--model", default="mlp", choices=("mlp", "cnn"))
    compare.add_argument("--epochs", type=int, default=5)
    compare.add_argument("--seeds", type=int, default=2)
    compare.add_argument("--batch-size", type=int, default=128)
    compare.add_argument(
        "--torch",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="compare torch-exact optimizers with torch (default: if installed)",
    )
    compare.add_argument(
        "--tune",
        action="store_true",
        help="tune each optimizer's learning rate on a validation split (vmapped grid)",
    )
    compare.add_argument(
        "--lr-grid",
        help="comma-separated learning rates to tune over (default: 7 around each default)",
    )
    compare.add_argument("--out", type=Path, default=Path("jaxopt_adv_results"))
    compare.add_argument("--no-progress", action="store_true", help="no progress bars")

    listing = commands.add_parser("list", help="list the registered optimizers")
    listing.add_argument("pattern", nargs="?", default="*")

    bench = commands.add_parser("bench", help="step time against optax and torch")
    bench.add_argument("--sizes", default="1e6,1e7,5e7", help="elements per tree")
    bench.add_argument("--leaves", default="1,200", help="leaf counts")
    bench.add_argument(
        "--optimizers",
        default="all",
        help="comma-separated names, or 'all' (default): " + ", ".join(bench_optimizers),
    )
    bench.add_argument("--steps", type=int, default=30)
    bench.add_argument("--rounds", type=int, default=1)
    bench.add_argument("--torch", action=argparse.BooleanOptionalAction, default=None)
    bench.add_argument("--out", type=Path, default=Path("jaxopt_adv_results"))
    return parser


def _in_range(value: int, flag: str, high: int | None) -> None:
    """Raise UsageError unless ``1 <= value <= high`` (``high=None``: no upper bound)."""
    if high is None and value < 1:
        raise UsageError(f"{flag} must be >= 1, got {value}")
    if high is not None and not 1 <= value <= high:
        raise UsageError(f"{flag} must be from 1 to {high:,}, got {value}")


def _counts(text: str, flag: str, high: int) -> list[int]:
    """Comma-separated whole numbers from 1 to ``high`` (``"1e6"`` is one)."""
    values = []
    for item in text.split(","):
        value = _number(item)
        if not (math.isfinite(value) and value == int(value) and 1 <= value <= high):
            raise UsageError(f"{flag}: {item.strip()!r} is not a whole number from 1 to {high:,}")
        values.append(int(value))
    return values


def _bench_names(text: str) -> list[str]:
    """``bench --optimizers``: ``all`` or comma-separated names of ``bench.OPTIMIZERS``,
    returned in its order."""
    from jaxopt_adv.app.bench import OPTIMIZERS

    if text.strip() == "all":
        return list(OPTIMIZERS)
    chosen = {item.strip() for item in text.split(",")}
    unknown = sorted(chosen - set(OPTIMIZERS))
    if unknown:
        raise UsageError(
            f"bench --optimizers: unknown {', '.join(map(repr, unknown))} "
            f"(choose from {', '.join(OPTIMIZERS)}, or all)"
        )
    return [name for name in OPTIMIZERS if name in chosen]


def _want_torch(requested: bool | None) -> bool:
    available = importlib.util.find_spec("torch") is not None
    if requested and not available:
        raise UsageError(TORCH_INSTALL)
    return available if requested is None else requested


def run_list(pattern: str) -> int:
    names = list_optimizers(pattern)
    if not names:
        raise UsageError(f"no registered optimizer matches {pattern!r}")
    header = ("name", "family", "paper", "torch reference", "fused", "needs")
    rows = [header]
    for name in names:
        info = describe(name)
        fused = "yes" if info.fused else "-"
        rows.append((name, info.family, info.paper, info.torch_reference, fused, info.needs))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from jaxopt_adv.app import compare, report
    from jaxopt_adv.datasets import load_dataset

    names = resolve_optimizers(args.optimizers, args.model)
    grid = None if args.lr_grid is None else _learning_rates(args.lr_grid)
    if grid is not None and not args.tune:
        raise UsageError("--lr-grid needs --tune")
    for value, flag, high in (
        (args.epochs, "--epochs", MAX_EPOCHS),
        (args.seeds, "--seeds", MAX_SEEDS),
        (args.batch_size, "--batch-size", None),  # bounded by the data set below
    ):
        _in_range(value, flag, high)
    use_torch = _want_torch(args.torch)
    data = load_dataset(args.data)
    if args.batch_size > len(data.x_train):
        raise UsageError(
            f"--batch-size {args.batch_size} is larger than the {len(data.x_train)} "
            f"training images of {args.data}"
        )
    try:
        report.check_writable(args.out)
    except OSError as error:
        raise UsageError(str(error)) from None
    report.remove_stale_staging(args.out)
    config = compare.CompareConfig(
        tuple(names),
        args.data,
        args.model,
        args.epochs,
        args.seeds,
        args.batch_size,
        use_torch,
        progress=not args.no_progress,
        tune=args.tune,
        lr_grid=grid,
    )
    start = time.perf_counter()
    print(
        f"{args.data}: {len(data.x_train)} train / {len(data.x_test)} test images; "
        f"model {args.model}; {args.epochs} epochs x {args.seeds} seeds; "
        f"learning rates {'tuned on a validation split' if args.tune else 'from the table'}; "
        f"torch comparison {'on' if use_torch else 'off'}",
        flush=True,
    )
    records, pairs = compare.run_compare(config, data, torch_available=use_torch)
    print(report.format_table(records))
    title = f"{args.data}, {args.model}, {args.epochs} epochs, {args.seeds} seeds"
    written = report.write_outputs(args.out, records, pairs, title)
    print(f"wrote {', '.join(str(p) for p in written)} in {time.perf_counter() - start:.0f} s")
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from jaxopt_adv.app import bench, report

    _in_range(args.steps, "--steps", MAX_STEPS)
    _in_range(args.rounds, "--rounds", MAX_ROUNDS)
    sizes = _counts(args.sizes, "--sizes", MAX_BENCH_ELEMENTS)
    leaves = _counts(args.leaves, "--leaves", MAX_BENCH_LEAVES)
    if max(leaves) > min(sizes):
        raise UsageError(f"--leaves {max(leaves)} is more than --sizes {min(sizes)} elements")
    names = _bench_names(args.optimizers)
    use_torch = _want_torch(args.torch)
    try:
        report.check_writable(args.out)
    except OSError as error:
        raise UsageError(str(error)) from None
    table = bench.run(sizes, leaves, args.steps, args.rounds, use_torch, names)
    print(bench.markdown(table))
    written = bench.write_outputs(args.out, table)
    print(f"wrote {', '.join(str(p) for p in written)}")
    return 0


@contextlib.contextmanager
def _exit_on_interrupt(command: str) -> Iterator[None]:
    """While the block runs, Ctrl-C removes the staging folder of results being written,
    says so in one line and ends the process with status 130 at once.

    Not by raising ``KeyboardInterrupt``: XLA's (and torch's) threads may still be running
    work when it unwinds the main thread, and the interpreter's shutdown then frees what
    they use (the crash this avoids); and a ``KeyboardInterrupt`` raised inside a garbage
    collection callback is ignored, so training went on.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupted(signum: int, frame: object) -> None:
        from jaxopt_adv.app import bench, report

        report.discard_staging()
        bench.stop_workers()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        if sys.stdout.isatty():  # the progress bar hides the cursor
            os.write(sys.stdout.fileno(), b"\x1b[?25h\n")
        os.write(sys.stderr.fileno(), f"jaxopt-adv {command}: interrupted\n".encode())
        os._exit(EXIT_INTERRUPTED)

    previous = signal.signal(signal.SIGINT, interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            return run_list(args.pattern)
        with _exit_on_interrupt(args.command):
            if args.command == "compare":
                return run_compare(args)
            return run_bench(args)
    except UsageError as error:
        print(f"jaxopt-adv {args.command}: error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:  # a benchmark worker failed
        if args.command != "bench":
            raise
        print(f"jaxopt-adv bench: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
