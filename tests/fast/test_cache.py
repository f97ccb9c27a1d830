"""The kernel library's cache and the self-check's markers: a damaged library is rebuilt
instead of loaded, the compiler is part of the key, a marker that is not an outcome is
checked again, and TAM's kernel has a self-check of its own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxopt_adv import fast
from jaxopt_adv.fast import build, selfcheck
from jaxopt_adv.tam import adatam, tam

ROOT = Path(__file__).resolve().parents[2]
TAM_MODULE = sys.modules["jaxopt_adv.fast.tam"]  # ``fast.tam`` is the function


def cached_library() -> Path:
    """The process's verified library (its self-check marker written too)."""
    assert fast.available(), fast.unavailable_reason()  # as on this project's machines
    return build.load().path


def copy_cache_entry(library: Path, directory: Path) -> Path:
    """Copy the library, its manifest and its self-check markers into ``directory``."""
    for path in library.parent.glob(f"{library.stem}.*"):
        if not path.name.endswith((".lock", ".tmp")):
            shutil.copyfile(path, directory / path.name)
    return directory / library.name


def test_a_truncated_library_is_rebuilt_not_loaded(tmp_path):
    """A cached library cut short (a full disk, a killed copy) crashed the interpreter
    with SIGBUS on ``fast.available()``; now its digest differs from the one recorded at
    build time and it is rebuilt (here by copying the good library, in a subprocess)."""
    good = cached_library()
    damaged = copy_cache_entry(good, tmp_path)
    damaged.write_bytes(good.read_bytes()[: good.stat().st_size // 4])
    killed_build = tmp_path / f".{good.stem}-x1y2z3.so.tmp"  # left by a killed build
    killed_build.write_bytes(b"\x7fELF")
    code = (
        "import shutil\n"
        "from jaxopt_adv.fast import build\n"
        "calls = []\n"
        "def compile_copy(compiler, fma, output):\n"
        "    calls.append(output)\n"
        f"    shutil.copyfile({str(good)!r}, output)\n"
        "build._compile = compile_copy\n"
        "from jaxopt_adv import fast\n"
        "print(fast.available(), len(calls))\n"
    )
    env = {**os.environ, "JAXOPT_ADV_FAST_CACHE": str(tmp_path)}
    env.pop("JAXOPT_ADV_FAST_DISABLE", None)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["True", "1"]
    assert damaged.read_bytes() == good.read_bytes()
    assert build.verified(damaged)
    assert not killed_build.exists()


@pytest.mark.parametrize(
    "damage",
    ["truncated", "byte_changed", "no_manifest", "manifest_list", "manifest_null", "manifest_text"],
)
def test_verification_rejects_a_damaged_library_or_manifest(tmp_path, damage):
    library = copy_cache_entry(cached_library(), tmp_path)
    assert build.verified(library)
    data = bytearray(library.read_bytes())
    manifest = build.manifest_path(library)
    if damage == "truncated":
        library.write_bytes(data[:-1])
    elif damage == "byte_changed":
        data[len(data) // 2] ^= 0xFF
        library.write_bytes(bytes(data))
    elif damage == "no_manifest":
        manifest.unlink()
    else:
        manifest.write_text({"manifest_list": "[]", "manifest_null": "null"}.get(damage, '"ok"'))
    assert not build.verified(library)


def test_the_cache_key_includes_the_compiler_and_its_flags(tmp_path, monkeypatch):
    """Another compiler (or version of it) may generate other arithmetic: it gets its own
    library, as other flags do."""
    fake = tmp_path / "c++-9.9"
    fake.write_text("#!/bin/sh\necho 'fake c++ 9.9'\n")
    fake.chmod(0o755)
    compilers = ["g++", str(fake), "g++ -DJAXOPT_ADV_UNUSED=1"]
    paths = {build.library_path(True, compiler) for compiler in compilers}
    assert len(paths) == len(compilers)
    monkeypatch.setattr(build, "CXXFLAGS", (*build.CXXFLAGS, "-fno-inline"))
    assert build.library_path(True, "g++") not in paths


def test_the_cache_key_covers_every_source(tmp_path, monkeypatch):
    """The kernels are one C++ file per family plus shared headers (csrc/): a change to any
    one of them, or a new family's file, gives another library."""
    sources = build.source_paths()
    names = {path.name for path in sources}
    assert {"elementwise.h", "common.h", "adam.cc", "sparse_adam.cc", "came.cc"} <= names
    assert sources == build.source_paths()  # a stable order
    original = build.library_path(True, "g++")
    keys = {original}
    for index, source in enumerate(sources):
        changed = tmp_path / source.name
        changed.write_bytes(source.read_bytes() + b"\n// changed\n")
        edited = [changed if i == index else path for i, path in enumerate(sources)]
        monkeypatch.setattr(build, "source_paths", lambda edited=edited: edited)
        keys.add(build.library_path(True, "g++"))
    monkeypatch.setattr(build, "source_paths", lambda: [*sources, tmp_path / "adam.cc"])
    keys.add(build.library_path(True, "g++"))
    assert len(keys) == len(sources) + 2


@pytest.mark.parametrize("text", ["[]", '"ok"', "null", '{"k": 1}', "{", "", "\udcff"])
def test_a_marker_that_is_not_an_outcome_is_checked_again(tmp_path, monkeypatch, text):
    """A marker written by another version, edited or cut short is ignored: the check
    runs again and rewrites it (``[]``, ``"ok"`` and ``null`` raised AttributeError)."""
    marker = tmp_path / "marker.json"
    if text == "\udcff":
        marker.write_bytes(b"\xff\xfe")  # not UTF-8
    else:
        marker.write_text(text)
    monkeypatch.setattr(selfcheck, "_marker", lambda library, x64, check: marker)
    runs = []

    def check():
        runs.append(1)
        return {"k": None, "j": "a probe"}

    try:
        selfcheck.reset()
        assert selfcheck.outcome(check, "k") is None
        assert selfcheck.outcome(check, "j") == "the kernels differ from XLA on this host (a probe)"
    finally:
        selfcheck.reset()
    assert runs == [1]
    assert json.loads(marker.read_text()) == {"k": None, "j": "a probe"}


def test_processes_asking_at_once_run_the_check_once(tmp_path):
    """Two askers of one marker (two test workers, two jobs on one host; here two threads,
    each with a lock file of its own open, as two processes would have) wait for the
    first: the check runs once and both read its outcome."""
    marker = tmp_path / "marker.json"
    started, runs, outcomes = threading.Event(), [], []

    def check():
        runs.append(1)
        started.set()
        time.sleep(0.5)  # the other asker arrives while this check runs
        return {"k": None, "j": "a probe"}

    def ask():
        outcomes.append(selfcheck._load_or_run(check, marker, False, ("k",)))

    first = threading.Thread(target=ask)
    first.start()
    assert started.wait(30)
    second = threading.Thread(target=ask)
    second.start()
    first.join(30)
    second.join(30)
    assert runs == [1]
    assert outcomes == [{"k": None, "j": "a probe"}] * 2


def test_a_read_only_cache_runs_the_check_without_a_lock(tmp_path):
    """No lock file can be made (a read-only cache): the check runs and is not recorded."""
    marker = tmp_path / "missing-directory" / "marker.json"
    assert selfcheck._load_or_run(lambda: {"k": None}, marker, False, ("k",)) == {"k": None}
    assert not marker.parent.exists()


def test_a_family_the_check_does_not_report_is_not_used(tmp_path, monkeypatch):
    monkeypatch.setattr(selfcheck, "_marker", lambda library, x64, check: tmp_path / "m.json")
    try:
        selfcheck.reset()
        reason = selfcheck.outcome(lambda: {"k": None}, "other")
    finally:
        selfcheck.reset()
    assert reason == "the self-check does not cover the 'other' kernels"


def test_a_crashing_check_fails_only_its_own_family(tmp_path, monkeypatch):
    """A check that raises (CAME's, say) reports its error for the family asked for and
    leaves the fused kernels' outcome alone."""
    markers = {"ok": tmp_path / "ok.json", "crash": tmp_path / "crash.json"}
    monkeypatch.setattr(selfcheck, "_marker", lambda library, x64, check: markers[check.__name__])

    def ok():
        return dict.fromkeys(selfcheck.FAMILIES)

    def crash():
        raise RuntimeError("a probe")

    try:
        selfcheck.reset()
        assert selfcheck.outcome(ok, selfcheck.KERNELS) is None
        reason = selfcheck.outcome(crash, selfcheck.CAME)
        assert selfcheck.outcome(ok, selfcheck.KERNELS) is None
    finally:
        selfcheck.reset()
    assert reason is not None and "RuntimeError: a probe" in reason
    assert list(json.loads(markers["crash"].read_text())) == [selfcheck.CAME]


# ------------------------------------------------------------------------------ TAM


def uses_tam_kernel(tx, params) -> bool:
    text = jax.jit(tx.update).lower(params, tx.init(params), params).as_text()
    return "jaxopt_adv_tam" in text


def test_tam_kernel_is_self_checked_and_a_failure_takes_the_jax_path(monkeypatch):
    params = {"w": jnp.ones((6, 4))}
    assert uses_tam_kernel(fast.tam(1e-2), params)
    assert selfcheck._RESULT[False][selfcheck.TAM] is None  # checked on this host
    reason = "the kernels differ from XLA on this host (a probe)"
    monkeypatch.setitem(selfcheck._RESULT[False], selfcheck.TAM, reason)
    assert not uses_tam_kernel(fast.tam(1e-2), params)
    assert not uses_tam_kernel(fast.adatam(1e-2), params)
    assert uses_kernel_of_adam()


def uses_kernel_of_adam() -> bool:
    opt = fast.fused("torch.adam")
    params = {"w": jnp.ones(3)}
    return "jaxopt_adv_" in jax.jit(opt.step).lower(params, params, opt.init(params)).as_text()


def test_tam_probes_pass_here_and_catch_a_difference():
    assert TAM_MODULE._probe_mismatches() == {selfcheck.TAM: None}
    stream = [{"w": np.ones((4, 3), np.float32)}] * 2
    ours = fast.scale_by_tam(b1=0.9)
    assert not TAM_MODULE._probe_differs(ours, fast.scale_by_tam(b1=0.9, kernel=False), stream)
    assert TAM_MODULE._probe_differs(ours, fast.scale_by_tam(b1=0.8, kernel=False), stream)
    nan = [{"w": np.full((4, 3), np.nan, np.float32)}]
    assert TAM_MODULE._probe_differs(ours, fast.scale_by_tam(kernel=False), nan) is False
    # NaN where the other path has a finite value is a difference
    reference = fast.scale_by_tam(kernel=False)

    def nan_update(updates, state, params=None):
        updates, state = reference.update(updates, state, params)
        return jax.tree.map(lambda u: u * np.nan, updates), state

    nan_out = optax.GradientTransformation(reference.init, nan_update)
    assert TAM_MODULE._probe_differs(ours, nan_out, stream)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan], ids=["inf", "-inf", "nan"])
@pytest.mark.parametrize("factory, reference", [(fast.tam, tam), (fast.adatam, adatam)])
def test_nonfinite_gradients_match_the_jax_path_exactly(factory, reference, bad):
    """The kernel puts the same non-finite values (NaN, +Inf, -Inf) in the same places as
    the JAX transform, under every correlation rule, and agrees elsewhere to rounding."""
    shapes = {"w": (40, 30), "v": (6, 5), "c": (7,)}
    rules = [("dim0", 1000), ("cosine", 1000), ("row_cosine", 1000), ("auto", 100)]
    for rule, threshold in rules:
        rng = np.random.default_rng(0)
        params = {k: jnp.asarray(rng.standard_normal(s), jnp.float32) for k, s in shapes.items()}
        ours = factory(1e-2, correlation=rule, auto_threshold=threshold)
        theirs = reference(1e-2, correlation=rule, auto_threshold=threshold)
        a = b = (None, theirs.init(params))
        for t in range(3):
            grads = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
            if t == 1:
                grads["w"][7, 9] = grads["c"][2] = bad
            a = jax.jit(ours.update)(grads, a[1], params)
            b = jax.jit(theirs.update)(grads, b[1], params)
            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
                x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
                finite = np.isfinite(y)
                where = f"{rule} step {t}"
                np.testing.assert_array_equal(np.isfinite(x), finite, err_msg=where)
                np.testing.assert_array_equal(x[~finite], y[~finite], err_msg=where)
                np.testing.assert_allclose(x[finite], y[finite], rtol=1e-5, atol=1e-6)
        assert not np.all(np.isfinite(np.asarray(a[0]["w"])))  # the bad element spread
