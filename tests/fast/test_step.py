"""The fused step's API: fallback, donation, injected hyperparameters, no recompiles,
interchangeable states, and the kernel library's build cache."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxopt_adv
from jaxopt_adv import fast
from jaxopt_adv.fast import build, selfcheck
from tests.fast.common import assert_bit_identical
from tests.harness import find_state_field
from tests.helpers.x64 import x64

SHAPES = {"w": (1001,), "k": (2, 3, 4, 5)}


def tree(seed: int, dtype=jnp.float32, shapes=SHAPES) -> dict[str, jax.Array]:
    rng = np.random.default_rng(seed)
    return {k: jnp.asarray(rng.standard_normal(s), dtype) for k, s in shapes.items()}


def run(opt, steps: int, params=None, state=None, jit=jax.jit):
    params = tree(0) if params is None else params
    state = opt.init(params) if state is None else state
    step = jit(opt.step) if jit is jax.jit else jit(opt)
    for t in range(steps):
        params, state = step(params, tree(100 + t), state)
    return params, state


def uses_kernel(opt, params=None) -> bool:
    params = tree(0) if params is None else params
    text = jax.jit(opt.step).lower(params, params, opt.init(params)).as_text()
    return "jaxopt_adv_" in text


# ----------------------------------------------------------------------------- fallback


def test_kernels_are_available_with_a_compiler():
    """On a single-device CPU host with g++ (this project's machines) the kernels build
    and pass the self-check; everything else here also holds without them."""
    assert fast.available(), fast.unavailable_reason()
    assert uses_kernel(fast.fused("torch.adam"))


def test_kernel_false_takes_the_xla_path():
    opt = fast.fused("torch.adam", kernel=False, learning_rate=0.1)
    assert not uses_kernel(opt)
    assert opt.explain(tree(0), tree(1), opt.init(tree(0))) == "kernel=False"


@pytest.mark.parametrize(
    "name, kwargs, dtype, reason",
    [
        ("torch.adam", {}, jnp.bfloat16, "leaf dtype bfloat16"),
        ("torch.adam", {"mu_dtype": jnp.bfloat16}, jnp.float32, "state dtype bfloat16"),
        ("torch.sgd", {"momentum": 1.0}, jnp.float32, "momentum 1"),
        ("torch.rmsprop", {"eps": 0.0}, jnp.float32, "eps 0"),
        ("torch.adagrad", {"eps": 0.0}, jnp.float32, "eps 0"),
    ],
    ids=["bfloat16", "mu_dtype", "momentum_one", "eps_zero", "adagrad_eps_zero"],
)
def test_unsupported_cases_fall_back_bit_identically(name, kwargs, dtype, reason):
    ours = fast.fused(name, learning_rate=0.1, **kwargs)
    theirs = fast.fused(name, learning_rate=0.1, kernel=False, **kwargs)
    params = tree(0, dtype)
    explained = ours.explain(params, params, ours.init(params))
    assert explained.startswith(reason if fast.available() else fast.unavailable_reason())
    assert_bit_identical(run(ours, 3, params), run(theirs, 3, params))


def test_a_mixed_dtype_tree_falls_back_whole():
    """One unsupported leaf sends the whole tree to XLA (per-leaf XLA inside the kernel
    program would not reproduce the transform's own program bit for bit)."""
    params = {**tree(0), "h": jnp.ones(5, jnp.bfloat16)}
    opt = fast.fused("torch.adam", learning_rate=0.1)
    assert not uses_kernel(opt, params)
    theirs = fast.fused("torch.adam", learning_rate=0.1, kernel=False)
    grads = {**tree(1), "h": jnp.full(5, 0.5, jnp.bfloat16)}
    ours = jax.jit(opt.step)(params, grads, opt.init(params))
    assert_bit_identical(ours, jax.jit(theirs.step)(params, grads, theirs.init(params)))


def test_float64_hyperparameter_with_float32_leaves_falls_back():
    with x64(True):
        lr = jnp.asarray(0.1, jnp.float64)  # promotes lr * update to float64
        opt = fast.fused("torch.adam", learning_rate=lr)
        params = tree(0)
        explained = opt.explain(params, params, opt.init(params))
        if fast.available():
            assert explained == "the learning rate would promote the float32 arithmetic"
        theirs = fast.fused("torch.adam", learning_rate=lr, kernel=False)
        assert_bit_identical(run(opt, 3, params), run(theirs, 3, params))


def test_disable_variable_and_missing_compiler(tmp_path, monkeypatch):
    """JAXOPT_ADV_FAST_DISABLE and a missing compiler (empty cache) are reported and
    the step takes the XLA path; the process's library comes back afterwards."""
    ours = fast.fused("torch.sgd", learning_rate=0.1, momentum=0.9)
    theirs = fast.fused("torch.sgd", learning_rate=0.1, momentum=0.9, kernel=False)
    try:
        build.reset()
        selfcheck.reset()
        monkeypatch.setenv("JAXOPT_ADV_FAST_DISABLE", "1")
        assert fast.unavailable_reason() == "disabled by JAXOPT_ADV_FAST_DISABLE"
        assert not uses_kernel(ours)
        assert_bit_identical(run(ours, 2), run(theirs, 2))

        build.reset()
        selfcheck.reset()
        monkeypatch.delenv("JAXOPT_ADV_FAST_DISABLE")
        monkeypatch.setenv("JAXOPT_ADV_FAST_CACHE", str(tmp_path))
        monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
        expected = "RuntimeError: no C++ compiler found (set CXX, or install g++)"
        assert fast.unavailable_reason() == expected
        assert not uses_kernel(ours)
    finally:
        monkeypatch.undo()
        build.reset()
        selfcheck.reset()
    assert fast.available() == (build.load() is not None)


def test_the_self_check_runs_in_the_asking_threads_x64_mode(tmp_path, monkeypatch):
    """Each x64 mode is checked on its own, with its own marker file (the mode changes the
    dtype of counts and scalars), in the mode of the thread that asks: a thread-local
    ``jax.enable_x64`` too (the probes run on a fresh thread, which would otherwise
    start in the global mode)."""
    assert build.load() is not None, build.failure()  # as on this project's machines
    keys = {mode: selfcheck._marker(build.load(), mode, len) for mode in (True, False)}
    assert keys[True] != keys[False]
    monkeypatch.setattr(selfcheck, "_marker", lambda library, x64, check: tmp_path / f"{x64}.json")
    seen = []

    def check():
        seen.append(bool(jax.config.jax_enable_x64))
        return {"k": None}

    try:
        selfcheck.reset()
        with jax.enable_x64(True):
            assert selfcheck.outcome(check, "k") is None
            assert selfcheck.outcome(check, "k") is None  # once per process and mode
        assert selfcheck.outcome(check, "k") is None
    finally:
        selfcheck.reset()
    assert seen == [True, False]
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["False.json", "True.json"]


def test_a_check_with_most_optimisations_off_has_its_own_marker():
    """With ``jax_disable_most_optimizations`` XLA generates other code (LLVM at -O0),
    which the kernels do not reproduce: a check run so must not decide for the default
    settings in later processes. The default settings keep their marker."""
    library = build.load()
    assert library is not None, build.failure()  # as on this project's machines
    default = selfcheck._marker(library, False, len)
    jax.config.update("jax_disable_most_optimizations", True)
    try:
        unoptimised = selfcheck._marker(library, False, len)
    finally:
        jax.config.update("jax_disable_most_optimizations", False)
    assert unoptimised != default
    assert selfcheck._marker(library, False, len) == default


def test_more_than_one_device_falls_back():
    code = (
        "import jax, jax.numpy as jnp\n"
        "from jaxopt_adv import fast\n"
        "opt = fast.fused('torch.adam', learning_rate=0.1)\n"
        "p = {'w': jnp.ones(4)}\n"
        "print(opt.explain(p, p, opt.init(p)))\n"
        "print(fast.jit_step(opt)(p, {'w': jnp.ones(4)}, opt.init(p))[0]['w'])\n"
    )
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.splitlines()[0] == "2 devices: arrays may be sharded, the kernels are not"
    assert out.stdout.splitlines()[1] == "[0.9 0.9 0.9 0.9]"


# ------------------------------------------------------------------------- jit contract


def test_jit_step_donates_and_updates_in_place():
    opt = fast.fused("torch.adam", learning_rate=0.1, amsgrad=True)
    step = fast.jit_step(opt)
    params = tree(0)
    params, state = step(params, tree(1), opt.init(params))  # compile, and own buffers

    def arrays(params, state):
        moments = [find_state_field(state, name) for name in ("mu", "nu_max")]
        return jax.tree.leaves((params, moments))

    pointers = [x.unsafe_buffer_pointer() for x in arrays(params, state)]
    old = arrays(params, state)
    params, state = step(params, tree(2), state)
    assert all(x.is_deleted() for x in old)
    if fast.available():  # the kernel wrote into the donated buffers
        assert [x.unsafe_buffer_pointer() for x in arrays(params, state)] == pointers


def test_no_recompile_across_steps_and_learning_rates():
    opt = fast.fused("torch.adamw", inject_hyperparams=True, learning_rate=0.1)
    theirs = fast.fused("torch.adamw", inject_hyperparams=True, learning_rate=0.1, kernel=False)
    step, reference = fast.jit_step(opt), jax.jit(theirs.step)
    a = (tree(0), opt.init(tree(0)))
    b = (tree(0), theirs.init(tree(0)))
    for t, lr in enumerate([0.1, 0.1, 0.01, 0.3]):
        a[1].hyperparams["learning_rate"] = jnp.asarray(lr, jnp.float32)
        b[1].hyperparams["learning_rate"] = jnp.asarray(lr, jnp.float32)
        a = step(a[0], tree(10 + t), a[1])
        b = reference(b[0], tree(10 + t), b[1])
        assert_bit_identical(a, b, f"step {t}")
    assert step._cache_size() == 1


def test_states_are_interchangeable_with_the_transform():
    """The fast path's state is the transform's: 3 fast steps then 3 plain optax steps
    equal 6 plain steps, bit for bit."""
    opt = fast.fused("torch.rmsprop", learning_rate=0.01, momentum=0.9, centered=True)

    @jax.jit
    def plain(params, grads, state):
        updates, state = opt.tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    params, state = run(opt, 3)
    assert jax.tree.structure(state) == jax.tree.structure(opt.tx.init(params))
    for t in range(3, 6):
        params, state = plain(params, tree(100 + t), state)
    kwargs = {"learning_rate": 0.01, "momentum": 0.9, "centered": True, "kernel": False}
    assert_bit_identical((params, state), run(fast.fused("torch.rmsprop", **kwargs), 6))


def test_schedule_and_factory_arguments():
    schedule = optax.linear_schedule(0.1, 0.01, 10)
    by_name = fast.fused("adam", learning_rate=schedule, weight_decay=0.1)
    by_factory = fast.fused(jaxopt_adv.torch.adam, learning_rate=schedule, weight_decay=0.1)
    assert by_name.name == by_factory.name == "torch.adam"
    reference = fast.fused("torch.adam", learning_rate=schedule, weight_decay=0.1, kernel=False)
    assert_bit_identical(run(by_factory, 5), run(reference, 5))
    with pytest.raises(ValueError, match="fused\\(\\) supports"):
        fast.fused("came")


# per optimizer: a negative learning rate, and a negative weight decay (Rprop and
# SparseAdam have none: inverted etas, an eps of 0 instead)
OTHER_BAD = {
    "torch.rprop": ({"etas": (1.2, 0.5)}, "etas"),
    "torch.sparse_adam": ({"eps": 0.0}, "eps"),
}
BAD_HYPERPARAMETERS = [
    (name, hyperparams, text)
    for name in sorted(fast.SUPPORTED)
    for hyperparams, text in [
        ({"learning_rate": -0.1}, "learning_rate must be in"),
        OTHER_BAD.get(name, ({"weight_decay": -1.0}, "weight_decay")),
    ]
]


@pytest.mark.parametrize(
    ("name", "hyperparams", "text"),
    BAD_HYPERPARAMETERS,
    ids=[f"{name}-{next(iter(kw))}" for name, kw, _ in BAD_HYPERPARAMETERS],
)
def test_bad_hyperparameters_raise_at_construction(name, hyperparams, text):
    """``fused`` builds the transform at once, so the factory's checks apply."""
    with pytest.raises(ValueError, match=text):
        fast.fused(name, **hyperparams)


def test_vmap_over_a_batch_of_optimizer_states():
    opt = fast.fused("torch.sgd", learning_rate=0.1, momentum=0.9)
    params = jnp.stack([jnp.arange(4.0), -jnp.arange(4.0)])
    grads = jnp.ones((2, 4))
    state = jax.vmap(opt.init)(params)
    reference = fast.fused("torch.sgd", learning_rate=0.1, momentum=0.9, kernel=False)
    ours = jax.jit(jax.vmap(opt.step))(params, grads, state)
    theirs = jax.jit(jax.vmap(reference.step))(params, grads, state)
    assert_bit_identical(ours, theirs)


# ------------------------------------------------------------------------- build cache


def test_the_cached_library_is_reused_without_compiling(monkeypatch):
    assert build.load() is not None, build.failure()
    path = build.load().path
    assert path.is_file() and path.parent == build.cache_dir()

    def no_compiler(*args, **kwargs):
        raise AssertionError("the compiler ran although the library is cached")

    try:
        build.reset()
        monkeypatch.setattr(build, "_compile", no_compiler)
        library = build.load()
        assert library is not None and library.path == path
    finally:
        monkeypatch.undo()
        build.reset()
        build.load()


def test_cache_key_changes_with_the_source(tmp_path, monkeypatch):
    original = build.library_path(True, "g++")
    source = tmp_path / "kernels.cc"
    source.write_text(build.source_path().read_text() + "\n// changed\n")
    monkeypatch.setattr(build, "source_path", lambda: source)
    changed = build.library_path(True, "g++")
    assert changed != original and changed.parent == original.parent
    assert build.library_path(False, "g++") != changed  # FMA mode is part of the key


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("torch.adam", {"amsgrad": True, "weight_decay": 0.1}),
        ("torch.sgd", {"momentum": 0.9, "nesterov": True}),
        ("torch.rmsprop", {"centered": True, "momentum": 0.9}),
        ("torch.adagrad", {"lr_decay": 0.1, "weight_decay": 0.1}),
        ("torch.adamax", {"weight_decay": 0.1, "maximize": True}),
        ("torch.nadam", {"maximize": True}),
        ("torch.radam", {"maximize": True, "b2": 0.9}),
        ("torch.rprop", {"maximize": True}),
        ("torch.adadelta", {"maximize": True, "weight_decay": 0.1}),
        ("torch.asgd", {"maximize": True, "weight_decay": 0.1, "t0": 1.0}),
    ],
    ids=[
        "adam",
        "sgd",
        "rmsprop",
        "adagrad",
        "adamax",
        "nadam",
        "radam",
        "rprop",
        "adadelta",
        "asgd",
    ],
)
def test_non_finite_gradients_give_the_same_values(name, kwargs):
    """inf and NaN gradients: the same values everywhere, NaNs in the same places (a
    NaN's sign bit may differ: XLA folds maximize's negation into constants)."""
    ours = fast.fused(name, learning_rate=0.1, **kwargs)
    theirs = fast.fused(name, learning_rate=0.1, kernel=False, **kwargs)
    shapes = {"w": (70001,)}
    params = tree(0, shapes=shapes)
    a = b = (params, ours.init(params))
    for t, special in enumerate([np.inf, -np.inf, np.nan, 1e30]):
        g = np.asarray(tree(10 + t, shapes=shapes)["w"]).copy()
        g[t::97] = special
        grads = {"w": jnp.asarray(g)}
        a = jax.jit(ours.step)(a[0], grads, a[1])
        b = jax.jit(theirs.step)(b[0], grads, b[1])
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize(
    "name, family",
    [
        ("torch.adagrad", selfcheck.ADAGRAD),
        ("torch.adamax", selfcheck.ADAMAX),
        ("torch.nadam", selfcheck.NADAM),
        ("torch.radam", selfcheck.RADAM),
        ("torch.rprop", selfcheck.RPROP),
        ("torch.adadelta", selfcheck.ADADELTA),
        ("torch.asgd", selfcheck.ASGD),
    ],
    ids=["adagrad", "adamax", "nadam", "radam", "rprop", "adadelta", "asgd"],
)
def test_a_failed_family_self_check_sends_only_that_family_to_the_xla_path(
    monkeypatch, name, family
):
    """The Adagrad, Adamax, NAdam, RAdam, Rprop, Adadelta and ASGD probes are families of
    their own: a mismatch there leaves the other kernels in use (SparseAdam's:
    tests/fast/test_sparse_adam.py)."""
    assert fast.available(), fast.unavailable_reason()  # as on this project's machines
    reason = "the kernels differ from XLA on this host (a probe)"
    monkeypatch.setitem(selfcheck._RESULT[False], family, reason)
    opt = fast.fused(name, learning_rate=0.1)
    assert opt.explain(tree(0), tree(1), opt.init(tree(0))) == reason
    assert not uses_kernel(opt)
    assert uses_kernel(fast.fused("torch.adam"))
