"""Once per kernel library and host: do the kernels reproduce XLA here, bit for bit?

The kernels mirror the arithmetic XLA:CPU generates for the same step on the hosts they
were written against (which products LLVM fuses into FMAs, which divisions XLA turns
into reciprocals, per tree and leaf size). :func:`outcome` runs a set of probe steps
through both paths on this host (a few seconds, on a fresh thread so that it also works
while a ``jax.jit`` is tracing) and remembers the result for the process and in a marker
file next to the compiled library, keyed by the Python side's source, the number of
CPUs the process may use, ``XLA_FLAGS`` and the x64 mode too (the mode changes the dtype
of counts and scalars, and so XLA's arithmetic: each mode is checked on its own, with the
mode of the thread that asks).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

import jax

from jaxopt_adv.fast import build

__all__ = ["outcome", "reset"]

# The probe families: KERNELS gates every kernel; a failed TRACED_MOMENTUM only sends
# RMSprop with a traced momentum (inject_hyperparams) to the XLA path, a failed ADAGRAD
# (ADAMAX, NADAM, RADAM, RPROP, ADADELTA, ASGD) only that optimizer.
KERNELS = "kernels"
TRACED_MOMENTUM = "rmsprop_traced_momentum"
ADAGRAD = "adagrad"
ADAMAX = "adamax"
NADAM = "nadam"
RADAM = "radam"
RPROP = "rprop"
ASGD = "asgd"
ADADELTA = "adadelta"
FAMILIES = (KERNELS, TRACED_MOMENTUM, ADAGRAD, ADAMAX, NADAM, RADAM, RPROP, ADADELTA, ASGD)

_LOCK = threading.Lock()
# x64 mode -> family -> None or why the family's kernels are not used
_RESULT: dict[bool, dict[str, str | None]] = {}


def _marker(library: build.Library, x64: bool) -> Path:
    key = hashlib.sha256()
    for name in ("step.py", "selfcheck.py"):
        key.update(Path(__file__).with_name(name).read_bytes())
    # XLA splits loops by the number of CPUs this process may use
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    key.update(str(cpus).encode())
    # and XLA_FLAGS can change its fusion and code generation
    key.update(os.environ.get("XLA_FLAGS", "").encode())
    key.update(b"x64" if x64 else b"x32")
    return library.path.with_suffix(f".check-{key.hexdigest()[:16]}.json")


def _run(check: Callable[[], dict[str, str | None]], x64: bool) -> dict[str, str | None]:
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            with jax.enable_x64(x64):  # a thread starts in the global mode
                outcome["mismatches"] = check()
        except Exception as error:  # noqa: BLE001 - a crashing check means "do not use"
            outcome["error"] = f"the self-check failed: {type(error).__name__}: {error}"

    thread = threading.Thread(target=target, name="jaxopt_adv-fast-selfcheck")
    thread.start()
    thread.join()
    if "error" in outcome:
        return dict.fromkeys(FAMILIES, outcome["error"])  # type: ignore[arg-type]
    return outcome["mismatches"]  # type: ignore[return-value]


def outcome(check: Callable[[], dict[str, str | None]], family: str) -> str | None:
    """``None`` when the kernels of ``family`` match XLA on this host, else why not.

    ``check()`` returns, per family, ``None`` or a description of the first mismatch;
    it runs once per process and x64 mode (and once per library, Python source and mode,
    through the marker file).
    """
    x64 = bool(jax.config.jax_enable_x64)
    with _LOCK:
        if x64 not in _RESULT:
            library = build.load()
            if library is None:
                return build.failure()
            marker = _marker(library, x64)
            try:
                mismatches = json.loads(marker.read_text())
            except (OSError, ValueError):
                mismatches = _run(check, x64)
                tmp = marker.with_name(f"{marker.name}.{os.getpid()}.tmp")
                try:
                    tmp.write_text(json.dumps(mismatches))
                    os.replace(tmp, marker)
                except OSError:
                    pass  # a read-only cache: the check runs again in the next process
            _RESULT[x64] = {
                name: None
                if mismatch is None
                else f"the kernels differ from XLA on this host ({mismatch})"
                for name, mismatch in mismatches.items()
            }
        return _RESULT[x64].get(family)


def reset() -> None:
    """Forget this process's outcome (tests)."""
    with _LOCK:
        _RESULT.clear()
