"""The ``jaxopt-adv`` command (also ``python -m jaxopt_adv``).

* ``jaxopt-adv compare``: train a model on bundled real data with several optimizers;
  accuracy, loss, epoch time, state size, and how closely the torch-exact ones track
  torch. Writes ``results.json``, ``results.csv`` and PNG figures.
* ``jaxopt-adv list [PATTERN]``: the registered optimizers with family, paper and the
  torch reference their parity is tested against.
* ``jaxopt-adv bench``: step time against optax and torch, and the memory floor.

Errors a person can act on (unknown names, torch missing, an unwritable ``--out``) exit
with status 2 and a message, before any training starts.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from jaxopt_adv.datasets import DATASETS
from jaxopt_adv.registry import close_matches, describe, list_optimizers

__all__ = ["main"]

TORCH_INSTALL = (
    "torch is not installed; install the CPU wheel with `pip install torch==2.13.0` "
    "(a newer or unpinned torch pulls a multi-GB CUDA build), or pass --no-torch"
)


class UsageError(Exception):
    """A problem with the command line or the environment; exit status 2."""


def resolve_optimizers(spec: str, needs_more: dict[str, str]) -> list[str]:
    """``"all"``, comma-separated names, or shell patterns such as ``"torch.*"``.

    Patterns skip the optimizers in ``needs_more`` (with a note on stderr); naming one
    of them is an error that says where to see it trained.
    """
    names: list[str] = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        matched = list_optimizers("*" if item == "all" else item)
        if not matched:
            close = close_matches(item)
            hint = f"; did you mean: {', '.join(close)}?" if close else ""
            raise UsageError(f"unknown optimizer {item!r}{hint} (see `jaxopt-adv list`)")
        if matched == [item] and item in needs_more:
            raise UsageError(f"compare cannot train {item!r}: it {needs_more[item]}")
        for name in matched:
            if name in needs_more:
                print(f"skipping {name}: it {needs_more[name]}", file=sys.stderr)
            elif name not in names:
                names.append(name)
    if not names:
        raise UsageError(f"no optimizer to compare in {spec!r}")
    return names


def _parser() -> argparse.ArgumentParser:
    from jaxopt_adv.app.compare import DEFAULT_OPTIMIZERS

    parser = argparse.ArgumentParser(prog="jaxopt-adv", description=__doc__.splitlines()[0])
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
    compare.add_argument("--out", type=Path, default=Path("jaxopt_adv_results"))
    compare.add_argument("--no-progress", action="store_true", help="no progress bars")

    listing = commands.add_parser("list", help="list the registered optimizers")
    listing.add_argument("pattern", nargs="?", default="*")

    bench = commands.add_parser("bench", help="step time against optax and torch")
    bench.add_argument("--sizes", default="1e6,1e7,5e7", help="elements per tree")
    bench.add_argument("--leaves", default="1,200", help="leaf counts")
    bench.add_argument("--steps", type=int, default=30)
    bench.add_argument("--rounds", type=int, default=1)
    bench.add_argument("--torch", action=argparse.BooleanOptionalAction, default=None)
    bench.add_argument("--out", type=Path, default=Path("jaxopt_adv_results"))
    return parser


def _positive(value: int, flag: str) -> None:
    if value < 1:
        raise UsageError(f"{flag} must be >= 1, got {value}")


def _want_torch(requested: bool | None) -> bool:
    available = importlib.util.find_spec("torch") is not None
    if requested and not available:
        raise UsageError(TORCH_INSTALL)
    return available if requested is None else requested


def run_list(pattern: str) -> int:
    names = list_optimizers(pattern)
    if not names:
        raise UsageError(f"no registered optimizer matches {pattern!r}")
    rows = [(n, *describe(n)) for n in names]
    widths = [
        max(len(str(row[i])) for row in rows + [("name", "family", "paper", "torch")])
        for i in range(4)
    ]
    header = ("name", "family", "paper", "torch reference")
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from jaxopt_adv.app import compare, report
    from jaxopt_adv.datasets import load_dataset

    names = resolve_optimizers(args.optimizers, compare.NEEDS_MORE)
    for value, flag in (
        (args.epochs, "--epochs"),
        (args.seeds, "--seeds"),
        (args.batch_size, "--batch-size"),
    ):
        _positive(value, flag)
    use_torch = _want_torch(args.torch)
    try:
        report.check_writable(args.out)
    except OSError as error:
        raise UsageError(str(error)) from None
    config = compare.CompareConfig(
        tuple(names),
        args.data,
        args.model,
        args.epochs,
        args.seeds,
        args.batch_size,
        use_torch,
        progress=not args.no_progress,
    )
    data = load_dataset(args.data)
    start = time.perf_counter()
    print(
        f"{args.data}: {len(data.x_train)} train / {len(data.x_test)} test images; "
        f"model {args.model}; {args.epochs} epochs x {args.seeds} seeds; "
        f"torch comparison {'on' if use_torch else 'off'}"
    )
    records, pairs = compare.run_compare(config, data, torch_available=use_torch)
    print(report.format_table(records))
    title = f"{args.data}, {args.model}, {args.epochs} epochs, {args.seeds} seeds"
    written = report.write_outputs(args.out, records, pairs, title)
    print(f"wrote {', '.join(str(p) for p in written)} in {time.perf_counter() - start:.0f} s")
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from jaxopt_adv.app import bench, report

    _positive(args.steps, "--steps")
    _positive(args.rounds, "--rounds")
    use_torch = _want_torch(args.torch)
    try:
        sizes = [int(float(s)) for s in args.sizes.split(",")]
        leaves = [int(s) for s in args.leaves.split(",")]
    except ValueError:
        raise UsageError(f"bad --sizes {args.sizes!r} or --leaves {args.leaves!r}") from None
    try:
        report.check_writable(args.out)
    except OSError as error:
        raise UsageError(str(error)) from None
    table = bench.run(sizes, leaves, args.steps, args.rounds, use_torch)
    print(bench.markdown(table))
    written = bench.write_outputs(args.out, table)
    print(f"wrote {', '.join(str(p) for p in written)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            return run_list(args.pattern)
        if args.command == "compare":
            return run_compare(args)
        return run_bench(args)
    except UsageError as error:
        print(f"jaxopt-adv {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
