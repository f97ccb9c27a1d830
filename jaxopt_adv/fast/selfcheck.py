"""Once per kernel library and host: do the kernels reproduce XLA here, bit for bit?

The kernels mirror the arithmetic XLA:CPU generates for the same step on the hosts they
were written against (which products LLVM fuses into FMAs, which divisions XLA turns
into reciprocals, per tree and leaf size). :func:`outcome` runs a set of probe steps
through both paths on this host (a few seconds, on a fresh thread so that it also works
while a ``jax.jit`` is tracing) and remembers the result for the process and in a marker
file next to the compiled library, keyed by the Python sources of the check's package
(:mod:`jaxopt_adv.fast`: its probes, plans and plumbing), the number of CPUs the process
may use, ``XLA_FLAGS``, JAX's ``jax_disable_most_optimizations`` and the x64 mode too
(the mode changes the dtype of counts and scalars, and so XLA's arithmetic: each mode is
checked on its own, with the mode of the thread that asks). A marker that is not a JSON
object of family names to ``null`` or a reason (truncated, edited, written by another
version) is ignored: the check runs again and rewrites it. Each check function (the
fused kernels' in :mod:`jaxopt_adv.fast.step` with its probes in
:mod:`jaxopt_adv.fast.probes`, TAM's in :mod:`jaxopt_adv.fast.tam`, CAME's in
:mod:`jaxopt_adv.fast.came`, the Automagic mask's in :mod:`jaxopt_adv.fast.lr_mask`,
Automagic-CameAMP's scaling's in :mod:`jaxopt_adv.fast.automagic`) has a marker of its
own; :func:`steps_differ` compares their probe steps. :func:`unavailable` adds the
host's own reasons (:mod:`.build`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxopt_adv.fast import build

__all__ = [
    "outcome",
    "parse_marker",
    "probe_stream",
    "reset",
    "steps_differ",
    "unavailable",
]

# The probe families: KERNELS gates every kernel; a failed TRACED_MOMENTUM only sends
# RMSprop with a traced momentum (inject_hyperparams) to the XLA path, a failed ADAGRAD
# (ADAMAX, NADAM, RADAM, RPROP, ADADELTA, ASGD, SPARSE_ADAM) only that optimizer. TAM (TAM and AdaTAM's
# kernel), CAME, LR_MASK (Automagic's learning-rate mask), AUTOMAGIC (Automagic-CameAMP's
# scaling), AUTOMAGIC_DIRECTION (its direction control), AUTOMAGIC_SPD (its selective
# projection decay) and AUTOMAGIC_BODY (its scaling and direction in one kernel) are
# checked by their own probes (:mod:`.tam`, :mod:`.came`, :mod:`.lr_mask`,
# :mod:`.automagic`, :mod:`.automagic_body`).
KERNELS = "kernels"
TRACED_MOMENTUM = "rmsprop_traced_momentum"
ADAGRAD = "adagrad"
ADAMAX = "adamax"
NADAM = "nadam"
RADAM = "radam"
RPROP = "rprop"
ASGD = "asgd"
ADADELTA = "adadelta"
SPARSE_ADAM = "sparse_adam"
FAMILIES = (
    KERNELS,
    TRACED_MOMENTUM,
    ADAGRAD,
    ADAMAX,
    NADAM,
    RADAM,
    RPROP,
    ADADELTA,
    ASGD,
    SPARSE_ADAM,
)
TAM = "tam"
CAME = "came"
LR_MASK = "lr_mask"
AUTOMAGIC = "automagic"
AUTOMAGIC_DIRECTION = "automagic_direction"
AUTOMAGIC_SPD = "automagic_spd"
AUTOMAGIC_BODY = "automagic_body"

_LOCK = threading.Lock()
# x64 mode -> family -> None or why the family's kernels are not used
_RESULT: dict[bool, dict[str, str | None]] = {}
# (x64 mode, check) pairs whose outcome is in _RESULT
_DONE: set[tuple[bool, str]] = set()
# set on the thread that runs a check: the kernels it probes are used there
_CHECKING = threading.local()


def _check_name(check: Callable[..., Any]) -> str:
    return f"{check.__module__}.{check.__qualname__}"


def _check_source(check: Callable[..., Any]) -> bytes:
    """The sources of the package that defines ``check``: its probes, its kernels' Python
    side (plans, scalars) and the plumbing they share, wherever in the package they are."""
    filename = getattr(sys.modules.get(check.__module__), "__file__", None)
    if not filename:
        return b""
    try:
        return b"".join(path.read_bytes() for path in sorted(Path(filename).parent.glob("*.py")))
    except OSError:
        return b""


def _marker(library: build.Library, x64: bool, check: Callable[..., Any]) -> Path:
    key = hashlib.sha256()
    key.update(_check_name(check).encode())
    key.update(_check_source(check))
    key.update(Path(__file__).read_bytes())
    # XLA splits loops by the number of CPUs this process may use
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    key.update(str(cpus).encode())
    # and XLA_FLAGS can change its fusion and code generation, as can JAX's switch for most
    # of XLA's optimisations (LLVM at -O0: a check run so does not decide for the defaults)
    key.update(os.environ.get("XLA_FLAGS", "").encode())
    key.update(b"O0" if jax.config.read("jax_disable_most_optimizations") else b"")
    key.update(b"x64" if x64 else b"x32")
    return library.path.with_suffix(f".check-{key.hexdigest()[:16]}.json")


def _run(
    check: Callable[[], dict[str, str | None]], x64: bool, families: tuple[str, ...]
) -> dict[str, str | None]:
    """``check()``'s outcome, or (it raised) the error for each of ``families``."""
    outcome: dict[str, object] = {}

    def target() -> None:
        _CHECKING.active = True
        try:
            with jax.enable_x64(x64):  # a thread starts in the global mode
                outcome["mismatches"] = check()
        except Exception as error:  # noqa: BLE001 - a crashing check means "do not use"
            outcome["error"] = f"the self-check failed: {type(error).__name__}: {error}"

    thread = threading.Thread(target=target, name="jaxopt_adv-fast-selfcheck")
    thread.start()
    thread.join()
    if "error" in outcome:
        return dict.fromkeys(families, outcome["error"])  # type: ignore[arg-type]
    return outcome["mismatches"]  # type: ignore[return-value]


def parse_marker(text: str) -> dict[str, str | None] | None:
    """A marker file's per-family outcome, or ``None`` if ``text`` is not one (not JSON,
    not an object, a value neither ``null`` nor a string)."""
    try:
        mismatches = json.loads(text)
    except ValueError:
        return None
    if not isinstance(mismatches, dict) or not all(
        value is None or isinstance(value, str) for value in mismatches.values()
    ):
        return None
    return mismatches


def _load_or_run(
    check: Callable[[], dict[str, str | None]],
    marker: Path,
    x64: bool,
    families: tuple[str, ...],
) -> dict[str, str | None]:
    """The marker's outcome, or (none or an unreadable one) the check's, recorded there.
    Processes that ask at the same time (parallel test workers, the jobs of one host)
    wait for the first: the check runs once."""
    with build.file_lock(marker.with_suffix(".lock")):
        try:
            mismatches = parse_marker(marker.read_text())
        except (OSError, UnicodeDecodeError):
            mismatches = None
        if mismatches is None:
            mismatches = _run(check, x64, families)
            _write_marker(marker, mismatches)
    return mismatches


def _write_marker(marker: Path, mismatches: dict[str, str | None]) -> None:
    """``mismatches`` in ``marker``, replaced in one step (readers see all or nothing)."""
    tmp = marker.with_name(f"{marker.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(mismatches))
        os.replace(tmp, marker)
    except OSError:
        pass  # a read-only cache: the check runs again in the next process


def outcome(check: Callable[[], dict[str, str | None]], family: str) -> str | None:
    """``None`` when the kernels of ``family`` match XLA on this host, else why not.

    ``check()`` returns, per family, ``None`` or a description of the first mismatch;
    it runs once per process and x64 mode (and once per library, check source and mode,
    through the marker file). A family the check does not report is not used. On the
    thread that runs a check this is ``None``: the check exercises the kernels.
    """
    if getattr(_CHECKING, "active", False):
        return None
    x64 = bool(jax.config.jax_enable_x64)
    with _LOCK:
        if (x64, _check_name(check)) not in _DONE:
            library = build.load()
            if library is None:
                return build.failure()
            # a crashing check fails the fused families, or the one family asked for
            families = FAMILIES if family in FAMILIES else (family,)
            mismatches = _load_or_run(check, _marker(library, x64, check), x64, families)
            _RESULT.setdefault(x64, {}).update(
                (
                    name,
                    None
                    if mismatch is None
                    else f"the kernels differ from XLA on this host ({mismatch})",
                )
                for name, mismatch in mismatches.items()
            )
            _DONE.add((x64, _check_name(check)))
        results = _RESULT[x64]
        if family not in results:
            return f"the self-check does not cover the {family!r} kernels"
        return results[family]


def unavailable(check: Callable[[], dict[str, str | None]], family: str) -> str | None:
    """Why the kernels of ``family`` are not used in this process: the host's reason
    (:func:`jaxopt_adv.fast.build.host_reason`) or the self-check's (:func:`outcome`),
    ``None`` when they are used."""
    return build.host_reason() or outcome(check, family)


def probe_stream(
    shapes: dict[str, tuple[int, ...]],
    steps: int,
    nonfinite: dict[tuple[str, tuple[int, ...]], float],
) -> list[dict[str, np.ndarray]]:
    """``steps`` seeded float32 gradients of ``shapes`` for a kernel family's probe; the
    last step has each ``(leaf, index) -> value`` of ``nonfinite`` written in."""
    rng = np.random.default_rng(0)
    stream = [
        {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
        for _ in range(steps)
    ]
    for (leaf, index), value in nonfinite.items():
        stream[-1][leaf][index] = value
    return stream


def steps_differ(
    ours: Any,
    theirs: Any,
    stream: list[dict[str, np.ndarray]],
    rtol: float,
    extra_args: Callable[[dict[str, np.ndarray]], dict[str, Any]] | None = None,
) -> bool:
    """Whether two gradient transformations' jitted steps over ``stream`` differ: in the
    places or values of a non-finite element of an update or state leaf, or by more than
    ``rtol`` times the largest finite magnitude of ``theirs``' leaf. Both start from
    ``theirs.init``; ``extra_args(grads)`` gives the keyword arguments of each update."""
    a = b = (None, theirs.init(stream[0]))
    step_ours, step_theirs = jax.jit(ours.update), jax.jit(theirs.update)
    for grads in stream:
        extra = {} if extra_args is None else extra_args(grads)
        a, b = step_ours(grads, a[1], **extra), step_theirs(grads, b[1], **extra)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
            finite = np.isfinite(y)
            scale = max(float(np.max(np.abs(y[finite]), initial=0.0)), 1e-30)
            if (
                not np.array_equal(np.isfinite(x), finite)
                or not np.array_equal(x[~finite], y[~finite], equal_nan=True)
                or np.max(np.abs(x[finite] - y[finite]), initial=0.0) > rtol * scale
            ):
                return True
    return False


def reset() -> None:
    """Forget this process's outcome (tests)."""
    with _LOCK:
        _RESULT.clear()
        _DONE.clear()
