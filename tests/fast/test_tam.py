"""The TAM kernel (``jaxopt_adv.fast.tam``): torch parity of TAM and AdaTAM under every
correlation rule (small leaves and leaves split into tasks), agreement with the JAX
transforms, the compiled program, and the leaves and hosts it leaves to JAX."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from pytorch_optimizer import TAM, AdaTAM

from jaxopt_adv import fast
from jaxopt_adv.fast import build
from jaxopt_adv.tam import adatam, scale_by_adatam, scale_by_tam, tam
from tests.harness import run_parity
from tests.helpers.fast_paths import assert_left_to_jax, compiled, max_relative_error, step_fn
from tests.helpers.tam_cases import ADATAM_CASES, ADATAM_STATE, TAM_CASES, TAM_STATE, torch_kwargs
from tests.helpers.x64 import x64
from tests.reference.torch_tam import TorqueAwareMomentumSGD

# split into tasks: column sums in two row blocks (1800 x 600), in column blocks
# (3 x 40000), sums of a long vector in two chunks; plus the harness's small shapes
LARGE = {"rows": (1800, 600), "wide": (3, 40000), "long": (300_000,)}
SMALL = {"matrix": (5, 4), "vector": (7,), "conv": (3, 2, 3, 3), "scalar": (), "column": (9, 1)}
RULES = [("dim0", 1000), ("cosine", 1000), ("row_cosine", 1000), ("auto", 1000), ("auto", 20)]
RULE_IDS = [f"{rule}-{threshold}" for rule, threshold in RULES]


def stream_for(shapes, steps=20, seed=1):
    rng = np.random.default_rng(seed)
    scales = [5.0, 1.0, 0.5, 2.0, 0.1]
    return [
        {k: scales[t % 5] * rng.normal(size=s) for k, s in shapes.items()} for t in range(steps)
    ]


def params_for(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=s) for k, s in shapes.items()}


def test_kernels_are_available():
    assert build.host_reason() is None, build.host_reason()


@pytest.mark.parametrize(
    "case, dtype", [(c, "float64") for c in TAM_CASES] + [("hyper_decoupled", "float32")]
)
def test_tam_parity_with_pytorch_optimizer(case, dtype):
    kwargs = TAM_CASES[case]
    run_parity(
        fast.tam(0.05, **kwargs),
        lambda p: TAM(p, lr=0.05, **torch_kwargs(kwargs)),
        dtype=dtype,
        state_map=TAM_STATE,
    )


@pytest.mark.parametrize(
    "case, dtype", [(c, "float64") for c in ADATAM_CASES] + [("coupled_maximize", "float32")]
)
def test_adatam_parity_with_pytorch_optimizer(case, dtype):
    kwargs = ADATAM_CASES[case]
    run_parity(
        fast.adatam(0.01, **kwargs),
        lambda p: AdaTAM(p, lr=0.01, **torch_kwargs(kwargs, "betas")),
        dtype=dtype,
        state_map=ADATAM_STATE,
    )


# dim0 columns of one nonzero element (a one-row leaf, a scalar, a matrix whose gradient
# has one nonzero row), whose normalised momentum and gradient are exactly +-1 in torch
ONE_ELEMENT_COLUMNS = {"row": (1, 6), "scalar": (), "sparse": (3, 4), "matrix": (5, 4)}
NO_DECAY = [
    {"decay_rate": 0.0, "b1": 0.0, "eps": 0.0},
    {"decay_rate": 0.0, "b1": 0.0, "eps": 1e-8},
    {"decay_rate": 0.0, "b1": 0.9, "eps": 0.0},
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kwargs", NO_DECAY, ids=["b1_0-eps_0", "b1_0", "eps_0"])
@pytest.mark.parametrize("factory", [fast.adatam, adatam], ids=["kernel", "jax"])
def test_adatam_without_correlation_decay(factory, kwargs, dtype):
    """decay_rate = 0: s is the correlation itself, c = -1 makes (1 + s) / 2 exactly 0 and,
    with b1 = eps = 0, the momentum exactly 0, whose normalisation is 0 at the next step.
    One rounding in c (a product by the reciprocal of the norm instead of torch's
    division) leaves a tiny momentum that normalises to +-1: s then differs by 1."""
    stream = stream_for(ONE_ELEMENT_COLUMNS)
    for g in stream:
        g["sparse"][1:] = 0.0
    run_parity(
        factory(0.01, **kwargs),
        lambda p: AdaTAM(p, lr=0.01, **torch_kwargs(kwargs, "betas")),
        dtype=dtype,
        state_map=ADATAM_STATE,
        params=params_for(ONE_ELEMENT_COLUMNS),
        stream=stream,
    )


@pytest.mark.parametrize("factory, torch_cls", [(fast.tam, TAM), (fast.adatam, AdaTAM)])
def test_parity_on_leaves_split_into_tasks(factory, torch_cls):
    """Column sums over row blocks and column blocks, a long vector's sums in chunks,
    float64, 20 steps, under a schedule."""
    schedule = lambda t: 0.02 / (1 + t)  # noqa: E731
    state_map = TAM_STATE if torch_cls is TAM else ADATAM_STATE
    report = run_parity(
        factory(schedule, weight_decay=0.1),
        lambda p: torch_cls(p, lr=0.02, weight_decay=0.1),
        schedule=schedule,
        state_map=state_map,
        params=params_for(LARGE),
        stream=stream_for(LARGE),
    )
    assert report.max_error <= 1e-10


@pytest.mark.parametrize("rule, threshold", RULES, ids=RULE_IDS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_rule_parity_with_torch_reference(rule, threshold, dtype):
    """TAM under each correlation rule against the torch reference started at the first
    gradient (pytorch_optimizer's TAM with the rule swapped), small and large leaves."""
    shapes = {**SMALL, **LARGE} if dtype == "float64" else SMALL
    kwargs = {"b1": 0.8, "decay_rate": 0.5, "eps": 1e-3}
    run_parity(
        fast.tam(0.02, correlation=rule, auto_threshold=threshold, **kwargs),
        lambda p: TorqueAwareMomentumSGD(
            p,
            lr=0.02,
            momentum=0.8,
            decay_rate=0.5,
            eps=1e-3,
            rule=rule,
            threshold=threshold,
            start_at_gradient=True,
        ),
        dtype=dtype,
        state_map={"mu": "exp_avg", "s": "s"},
        params=params_for(shapes),
        stream=stream_for(shapes),
    )


def run_both(ours, theirs, shapes, dtype, steps=20):
    """Steps of two transforms from the same params and gradient stream; the worst relative
    error of params and state over all steps."""
    params = jax.tree.map(lambda x: jnp.asarray(x, dtype), params_for(shapes))
    a = b = (params, ours.init(params))
    step_ours, step_theirs = step_fn(ours), step_fn(theirs)
    worst = 0.0
    for grads in stream_for(shapes, steps):
        grads = jax.tree.map(lambda x: jnp.asarray(x, dtype), grads)
        a = step_ours(*a, grads)
        b = step_theirs(*b, grads)
        worst = max(worst, max_relative_error(a, b))
    return worst


@pytest.mark.parametrize("rule, threshold", RULES, ids=RULE_IDS)
def test_adatam_matches_the_jax_transform(rule, threshold):
    kwargs = {"correlation": rule, "auto_threshold": threshold, "b2": 0.9, "weight_decay": 0.1}
    shapes = {**SMALL, "mid": (300, 200), "long": (3000,)}
    with x64(True):
        assert (
            run_both(fast.adatam(0.01, **kwargs), adatam(0.01, **kwargs), shapes, jnp.float64)
            <= 1e-10
        )
    # float32: XLA sums in float32, the kernel in float64
    assert run_both(fast.adatam(0.01, **kwargs), adatam(0.01, **kwargs), SMALL, jnp.float32) <= 1e-5


def test_one_custom_call_and_the_apply_loop_per_leaf():
    """The kernel replaces TAM's reduction and loops: what is left per leaf is the custom
    call and the ``apply_updates`` loop (which also applies the learning rate, and for
    AdaTAM forms m / (sqrt(v) + eps))."""
    params = {"w": jnp.ones((300, 200)), "k": jnp.ones((4, 30, 20))}
    for ours, theirs in [(fast.tam(1e-3), tam(1e-3)), (fast.adatam(1e-3), adatam(1e-3))]:
        text = compiled(ours, params)
        entry = text[text.index("ENTRY") :]
        assert entry.count('custom_call_target="jaxopt_adv_tam"') == 1
        full = [line for line in entry.splitlines() if " fusion(" in line and "[300,200]" in line]
        assert len(full) == 1, full
        reference = compiled(theirs, params)
        reference = reference[reference.index("ENTRY") :]
        assert "jaxopt_adv_tam" not in reference
        lines = reference.splitlines()
        assert sum(" fusion(" in line and "[300,200]" in line for line in lines) > 1


@pytest.mark.parametrize(
    "params, kwargs",
    [
        ({"w": jnp.ones((4, 3), jnp.bfloat16)}, {}),  # not float32/float64
        ({"w": jnp.ones((4, 3), jnp.float32)}, {"mu_dtype": jnp.bfloat16}),  # momentum dtype
        ({"w": jnp.ones((0, 3), jnp.float32)}, {}),  # empty
        ({"w": jnp.ones((4, 3), jnp.float32)}, {"kernel": False}),
    ],
    ids=["bfloat16", "mu_dtype", "empty", "kernel_false"],
)
@pytest.mark.parametrize("pair", [(fast.tam, tam), (fast.adatam, adatam)], ids=["tam", "adatam"])
def test_leaves_left_to_jax(params, kwargs, pair):
    """Leaves the kernel does not take go through the JAX transform, bit for bit."""
    factory, reference = pair
    theirs = reference(1e-3, mu_dtype=kwargs.get("mu_dtype"))
    assert_left_to_jax(factory(1e-3, **kwargs), theirs, params, "jaxopt_adv_tam")


def test_disabled_kernels_leave_every_leaf_to_jax(monkeypatch):
    monkeypatch.setattr(build, "host_reason", lambda: "disabled for the test")
    text = compiled(fast.tam(1e-3), {"w": jnp.ones((40, 30))})
    assert "jaxopt_adv_tam" not in text


def test_inject_hyperparams_and_interchangeable_state():
    """Injected hyperparameters (a traced auto threshold too) reach the kernel; the
    kernel's state can be handed to the JAX transform (and back) mid-run."""
    shapes = {"w": (64, 48), "b": (48,), "c": (3, 2, 3, 3)}
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params_for(shapes))
    kwargs = {"learning_rate": 1e-2, "b1": 0.5, "correlation": "auto", "auto_threshold": 40}
    ours = optax.inject_hyperparams(fast.tam, static_args=("correlation",))(**kwargs)
    theirs = optax.inject_hyperparams(tam, static_args=("correlation",))(**kwargs)
    a = b = (params, ours.init(params))
    for t, grads in enumerate(stream_for(shapes, 6)):
        grads = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), grads)
        if t == 3:  # the 54-element leaf turns "small" (one cosine instead of per row)
            for state in (a[1], b[1]):
                state.hyperparams["b1"] = jnp.asarray(0.9)
                state.hyperparams["auto_threshold"] = jnp.asarray(60.0)
        a = step_fn(ours if t % 2 == 0 else theirs)(*a, grads)
        b = step_fn(theirs)(*b, grads)
        assert max_relative_error(a, b) <= 1e-5
    assert jax.tree.structure(a) == jax.tree.structure(b)


def test_first_step_starts_the_momentum_at_the_gradient():
    """TAM's first step correlates the gradient with itself (c = g^2 / |g|^2 per column)."""
    g = jnp.array([[3.0, 0.0], [4.0, 2.0]])
    state = fast.scale_by_tam(b1=0.5, decay_rate=0.0, eps=0.0).update(
        g, fast.scale_by_tam().init(g)
    )[1]
    m, s = state.mu, state.s
    c = g**2 / jnp.sum(g**2, axis=0)
    np.testing.assert_allclose(s, c, rtol=1e-6)
    np.testing.assert_allclose(m, 0.5 * g + (1 + c) / 2 * g, rtol=1e-6)


@pytest.mark.parametrize("bad", [jnp.inf, jnp.nan], ids=["inf", "nan"])
@pytest.mark.parametrize("rule", ["dim0", "cosine", "row_cosine"])
def test_nonfinite_gradient_spreads_as_in_the_jax_path(rule, bad):
    """A non-finite gradient element: NaN where the JAX transform has NaN (under "dim0"
    the element for Inf, its column for NaN; the leaf or the row under the cosines), and
    the other leaves untouched."""
    params = {"w": jnp.ones((300, 400)), "v": jnp.ones((30, 40))}
    grads = jax.tree.map(lambda p: jnp.full(p.shape, 0.5), params)
    grads["w"] = grads["w"].at[7, 9].set(bad)
    got = jax.jit(fast.adatam(1e-2, correlation=rule).update)(grads, adatam(1e-2).init(params))
    want = jax.jit(adatam(1e-2, correlation=rule).update)(grads, adatam(1e-2).init(params))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(jnp.isnan(a), jnp.isnan(b))
    assert bool(jnp.all(jnp.isfinite(got[0]["v"])))
    assert not bool(jnp.all(jnp.isfinite(got[0]["w"])))


def test_bad_hyperparameters_raise_at_construction():
    with pytest.raises(ValueError, match="b1"):
        fast.tam(1e-3, b1=1.0)
    with pytest.raises(ValueError, match="correlation"):
        fast.adatam(1e-3, correlation="pearson")
    with pytest.raises(ValueError, match="b2"):
        fast.scale_by_adatam(b2=-0.1)


def test_vmap_over_a_batch_of_optimizers():
    params = jnp.ones((3, 20, 10))
    grads = jnp.asarray(np.random.default_rng(4).standard_normal((3, 20, 10)), jnp.float32)
    for ours, theirs in [
        (fast.scale_by_tam(), scale_by_tam()),
        (fast.scale_by_adatam(), scale_by_adatam()),
    ]:
        state = jax.vmap(ours.init)(params)
        got = jax.jit(jax.vmap(ours.update))(grads, state)
        want = jax.jit(jax.vmap(theirs.update))(grads, state)
        assert max_relative_error(got, want) <= 1e-5
