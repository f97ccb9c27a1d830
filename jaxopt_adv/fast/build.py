"""Build, cache and register the one-pass CPU kernels (the C++ sources in ``csrc/``: one
file per kernel family, ``adam.cc``, ``sgd.cc``, ..., ``came.cc``, ``lr_mask.cc``,
``tam.cc``, and their headers) with XLA.

The kernels are compiled on first use with the system C++ compiler into a cache
directory, keyed by a hash of the sources, the jaxlib version, the compiler (its command
and ``--version``) and its flags, the host CPU and whether XLA contracts multiply-adds
into FMAs on it. The sources compile in two translation units in parallel (one compiler
process each) and link into a shared library, written under a temporary name and renamed
into place (atomic) while a lock file is held, so that parallel test workers build it
once; its size and SHA-256 are recorded beside it (``kernels-<key>.json``) and checked
before every load, so that a truncated or altered library is rebuilt instead of loaded.
It is loaded with ``ctypes`` and registered with
``jax.ffi.register_ffi_target(..., platform="cpu")``.

Environment variables:

- ``JAXOPT_ADV_FAST_CACHE``: cache directory (default ``$XDG_CACHE_HOME/jaxopt_adv/fast``,
  else ``~/.cache/jaxopt_adv/fast``).
- ``JAXOPT_ADV_FAST_DISABLE=1``: never build or use the kernels (every step takes the
  pure-JAX path).
- ``CXX``: the compiler (default ``g++``, else ``c++``, else ``clang++``).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None

__all__ = [
    "TARGETS",
    "Library",
    "cache_dir",
    "compiler_identity",
    "failure",
    "host_reason",
    "library_path",
    "load",
    "manifest_path",
    "reset",
    "source_path",
    "verified",
    "xla_contracts_fma",
]

# FFI target name -> the handler symbol its family's source in csrc/ exports. A new family
# is one source file there and one line here.
TARGETS = {
    "jaxopt_adv_adam": "JaxoptAdvAdam",
    "jaxopt_adv_sgd": "JaxoptAdvSgd",
    "jaxopt_adv_rmsprop": "JaxoptAdvRmsprop",
    "jaxopt_adv_adagrad": "JaxoptAdvAdagrad",
    "jaxopt_adv_adamax": "JaxoptAdvAdamax",
    "jaxopt_adv_nadam": "JaxoptAdvNadam",
    "jaxopt_adv_rprop": "JaxoptAdvRprop",
    "jaxopt_adv_radam": "JaxoptAdvRadam",
    "jaxopt_adv_adadelta": "JaxoptAdvAdadelta",
    "jaxopt_adv_asgd": "JaxoptAdvAsgd",
    "jaxopt_adv_sparse_adam": "JaxoptAdvSparseAdam",
    "jaxopt_adv_came": "JaxoptAdvCame",
    "jaxopt_adv_lr_mask": "JaxoptAdvLrMask",
    "jaxopt_adv_tam": "JaxoptAdvTam",
    "jaxopt_adv_automagic": "JaxoptAdvAutomagic",
    "jaxopt_adv_automagic_direction": "JaxoptAdvAutomagicDirection",
    "jaxopt_adv_automagic_spd": "JaxoptAdvAutomagicSpd",
    "jaxopt_adv_automagic_body": "JaxoptAdvAutomagicBody",
}
# -ffp-contract=off: no multiply-add contraction beyond the explicit std::fma calls that
# mirror XLA's; -fno-math-errno lets sqrt vectorize (it only skips setting errno).
CXXFLAGS = (
    "-O3",
    "-std=c++17",
    "-shared",
    "-fPIC",
    "-march=native",
    "-ffp-contract=off",
    "-fno-math-errno",
    "-fopenmp-simd",
    "-w",
)


_CSRC = Path(__file__).with_name("csrc")


def source_path() -> Path:
    """The elementwise kernels' shared FFI plumbing, ``csrc/elementwise.h``."""
    return _CSRC / "elementwise.h"


def source_paths() -> list[Path]:
    """Every source of the library: :func:`source_path`, then the other headers and the
    C++ files in ``csrc/`` (one per kernel family) in name order."""
    others = (p for p in _CSRC.iterdir() if p.suffix in (".cc", ".h"))
    return [source_path(), *sorted(p for p in others if p.name != "elementwise.h")]


def cache_dir() -> Path:
    """Where compiled kernels are kept (see the module docstring)."""
    override = os.environ.get("JAXOPT_ADV_FAST_CACHE")
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "jaxopt_adv" / "fast"


def _compiler() -> str | None:
    configured = os.environ.get("CXX")
    if configured:
        return shutil.which(shlex.split(configured)[0]) and configured
    for name in ("g++", "c++", "clang++"):
        if shutil.which(name):
            return name
    return None


@functools.lru_cache(maxsize=8)
def compiler_identity(compiler: str) -> str:
    """The compiler's resolved command and its ``--version`` output (a cache-key part: a
    different compiler or version may generate different arithmetic)."""
    argv = shlex.split(compiler)
    try:
        result = subprocess.run(
            [*argv, "--version"], capture_output=True, text=True, timeout=120, check=False
        )
        version = result.stdout
    except (OSError, subprocess.SubprocessError):
        version = ""
    return "\n".join([shutil.which(argv[0]) or argv[0], *argv[1:], version])


def xla_contracts_fma() -> bool:
    """Whether XLA:CPU fuses ``a * b + c`` into one FMA on this host.

    ``(1 + 2^-23)(1 - 2^-23) - 1`` is ``-2^-46`` with one rounding and ``0`` with two.
    """
    a = np.float32(1 + 2.0**-23)
    b = np.float32(1 - 2.0**-23)
    cpu = jax.devices("cpu")[0]
    args = [jax.device_put(jnp.full((8,), x, jnp.float32), cpu) for x in (a, b, -1.0)]
    out = jax.jit(lambda x, y, z: x * y + z)(*args)
    return bool(np.asarray(out)[0] != 0)


def _cpu_fingerprint() -> str:
    """The host CPU's model and feature flags (``-march=native`` depends on them)."""
    text = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "model name", "Features", "CPU part")):
                    text += line
                if line.strip() == "":
                    break  # the first processor is enough
    except OSError:
        pass
    return text


@dataclass(frozen=True)
class Library:
    """A compiled and registered kernel library."""

    path: Path
    fma: bool
    handle: ctypes.CDLL


_LOCK = threading.Lock()
_STATE: dict[str, object] = {}
_REGISTERED: set[str] = set()  # XLA keeps a registration for the whole process
_HANDLES: list[ctypes.CDLL] = []


# The C++ files compile in this many translation units, each #including a share of them:
# every file alone repeats ~2 s of parsing and instantiating the FFI headers; one unit for
# all of them would leave a second core idle.
UNITS = 2


def _units(sources: list[Path], directory: Path) -> list[Path]:
    """Write :data:`UNITS` C++ files into ``directory`` that ``#include`` the ``.cc``
    files of ``sources`` between them, the largest first to the unit with the fewest
    bytes so far, and return their paths."""
    shares: list[list[Path]] = [[] for _ in range(UNITS)]
    sizes = [0] * UNITS
    files = (s for s in sources if s.suffix == ".cc")
    for source in sorted(files, key=lambda s: (-s.stat().st_size, s.name)):
        k = sizes.index(min(sizes))
        shares[k].append(source)
        sizes[k] += source.stat().st_size
    units = []
    for k, share in enumerate(shares):
        unit = directory / f"unit{k}.cc"
        unit.write_text("".join(f'#include "{source}"\n' for source in sorted(share)))
        units.append(unit)
    return units


def _compile_commands(
    compiler: str, fma: bool, sources: list[Path], directory: Path
) -> list[list[str]]:
    """One command per translation unit (:func:`_units`), compiling it to an object file
    in ``directory``."""
    flags = [flag for flag in CXXFLAGS if flag != "-shared"]
    return [
        [
            *shlex.split(compiler),
            *flags,
            f"-DJAXOPT_ADV_FMA={int(fma)}",
            "-I",
            jax.ffi.include_dir(),
            "-c",
            str(unit),
            "-o",
            str(unit.with_suffix(".o")),
        ]
        for unit in _units(sources, directory)
    ]


def _compile(compiler: str, fma: bool, output: Path) -> None:
    """Compile the translation units in parallel (one process each), then link them into
    ``output``; raise with the compiler's message on failure."""
    with tempfile.TemporaryDirectory(dir=output.parent) as scratch:
        commands = _compile_commands(compiler, fma, source_paths(), Path(scratch))
        running = [
            subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for c in commands
        ]
        errors = []
        for process in running:
            _, stderr = process.communicate(timeout=600)
            if process.returncode != 0:
                errors.append(stderr[-2000:])
        if not errors:
            objects = [c[-1] for c in commands]
            link = [*shlex.split(compiler), "-shared", *objects, "-o", str(output)]
            result = subprocess.run(link, capture_output=True, text=True, timeout=600)
            if result.returncode != 0:
                errors.append(result.stderr[-2000:])
        if errors:
            raise RuntimeError(f"compiling the kernels failed ({compiler}):\n{errors[0]}")


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` across processes (POSIX), so that parallel test
    workers or jobs compile the library (or run a self-check) once and the others wait
    for it. Where there is no ``fcntl`` (not POSIX) or the lock file cannot be opened (a
    read-only cache), no lock: the processes then do the same work side by side, and
    write identical bytes."""
    try:
        lock = None if fcntl is None else open(path, "a")  # noqa: SIM115 - closed below
    except OSError:
        lock = None
    if lock is None:
        yield
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def library_path(fma: bool, compiler: str) -> Path:
    """Where the library for this source, jaxlib, compiler and flags, host CPU and FMA
    mode is cached."""
    sources = source_paths()
    for source in sources:
        if not source.is_file():
            raise RuntimeError(f"kernel source missing: {source}")
    key = hashlib.sha256()
    for part in (
        *(source.read_bytes() for source in sources),
        jaxlib.__version__.encode(),
        compiler_identity(compiler).encode(),
        " ".join((*CXXFLAGS, f"-DJAXOPT_ADV_FMA={int(fma)}")).encode(),
        platform.machine().encode(),
        _cpu_fingerprint().encode(),
    ):
        key.update(part)
        key.update(b"\0")
    return cache_dir() / f"kernels-{key.hexdigest()[:24]}.so"


def manifest_path(library: Path) -> Path:
    """Where the size and SHA-256 of ``library`` are recorded."""
    return library.with_suffix(".json")


def _fingerprint(path: Path) -> dict[str, object]:
    data = path.read_bytes()
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def verified(library: Path) -> bool:
    """Whether ``library`` exists with the size and SHA-256 recorded when it was built
    (a truncated or altered file would crash the process that loads it)."""
    try:
        recorded = json.loads(manifest_path(library).read_text())
        if not isinstance(recorded, dict) or recorded.get("size") != library.stat().st_size:
            return False
        return recorded == _fingerprint(library)
    except (OSError, ValueError):
        return False


def _replace_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """``write`` a temporary file beside ``path``, then rename it to ``path``."""
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.stem}-", suffix=f"{path.suffix}.tmp", dir=path.parent
    )
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)  # atomic: readers never see a partial file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _compile_into_cache(compiler: str, fma: bool, path: Path) -> None:
    """Compile the library to ``path`` and record its size and digest beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.with_suffix(".lock")):
        if verified(path):  # built by another process while we waited
            return
        for stale in path.parent.glob(f".{path.stem}-*.tmp"):  # of a killed build
            stale.unlink(missing_ok=True)
        fingerprint: dict[str, object] = {}

        def compile_to(tmp: Path) -> None:
            _compile(compiler, fma, tmp)
            fingerprint.update(_fingerprint(tmp))

        _replace_atomically(path, compile_to)
        _replace_atomically(
            manifest_path(path), lambda tmp: tmp.write_text(json.dumps(fingerprint))
        )


def _build() -> Library:
    """Find in the cache (or compile), load and register the kernels; raise on failure."""
    compiler = _compiler()
    if compiler is None:
        raise RuntimeError("no C++ compiler found (set CXX, or install g++)")
    fma = xla_contracts_fma()
    path = library_path(fma, compiler)
    if not verified(path):  # missing, half-written by a killed build, truncated, altered
        _compile_into_cache(compiler, fma, path)
    handle = ctypes.CDLL(str(path))
    _HANDLES.append(handle)  # XLA keeps the handlers' addresses: never unload
    for target, symbol in TARGETS.items():
        if target not in _REGISTERED:
            capsule = jax.ffi.pycapsule(getattr(handle, symbol))
            jax.ffi.register_ffi_target(target, capsule, platform="cpu")
            _REGISTERED.add(target)
    return Library(path, fma, handle)


def _build_outside_traces() -> Library:
    """:func:`_build` on a fresh thread: JAX's trace state is per thread, so the FMA
    probe runs eagerly even when the first use is inside ``jax.jit`` tracing."""
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["library"] = _build()
        except BaseException as error:  # noqa: BLE001 - re-raised on the caller's thread
            outcome["error"] = error

    thread = threading.Thread(target=target, name="jaxopt_adv-fast-build")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["library"]  # type: ignore[return-value]


def load() -> Library | None:
    """The registered kernel library, building it on the first call; ``None`` if it
    cannot be had (the reason is then given by :func:`failure`)."""
    with _LOCK:
        if "library" in _STATE or "error" in _STATE:
            return _STATE.get("library")  # type: ignore[return-value]
        if os.environ.get("JAXOPT_ADV_FAST_DISABLE", "") not in ("", "0"):
            _STATE["error"] = "disabled by JAXOPT_ADV_FAST_DISABLE"
            return None
        try:
            _STATE["library"] = _build_outside_traces()
        except Exception as error:  # noqa: BLE001 - any failure means "use the fallback"
            _STATE["error"] = f"{type(error).__name__}: {error}"
            return None
        return _STATE["library"]  # type: ignore[return-value]


def host_reason() -> str | None:
    """Why the kernels cannot run in this process at all (backend, devices, build), or
    ``None``; builds the library on the first call."""
    if jax.default_backend() != "cpu":
        return f"the default backend is {jax.default_backend()!r}, the kernels are CPU-only"
    if jax.device_count() > 1:
        return f"{jax.device_count()} devices: arrays may be sharded, the kernels are not"
    if load() is None:
        return failure()
    return None


def failure() -> str | None:
    """Why :func:`load` returned ``None`` (``None`` before the first call or on success)."""
    return _STATE.get("error")  # type: ignore[return-value]


def reset() -> None:
    """Forget the outcome of :func:`load` (tests; a loaded library stays registered)."""
    with _LOCK:
        _STATE.clear()
