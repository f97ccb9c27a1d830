"""TAM / AdaTAM parity with pytorch_optimizer 4.1.0, and the Automagic TAM variants."""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from pytorch_optimizer import TAM, AdaTAM

from jaxopt_adv import fast
from jaxopt_adv._common import tree_map_multi
from jaxopt_adv.automagic.composition import with_reference_grads
from jaxopt_adv.grouping import leaf_slots
from jaxopt_adv.tam.tam import (
    ScaleByTamState,
    adatam,
    auto_correlation,
    scale_by_adatam,
    scale_by_tam,
    tam,
    tam_correlation,
    torque_aware_momentum_update,
)
from tests.harness import (
    REPEATED_SHAPES,
    gradient_stream,
    make_params,
    precision,
    run_parity,
    sine_steps,
)
from tests.helpers.tam_cases import ADATAM_CASES, ADATAM_STATE, TAM_CASES, TAM_STATE, torch_kwargs
from tests.reference.torch_tam import TorqueAwareMomentumSGD, correlation

TAM_RUNS = [(c, "float64") for c in TAM_CASES] + [
    ("hyper_decoupled", "float32"),
    ("fixed_decay_maximize", "float32"),
]
ADATAM_RUNS = [(c, "float64") for c in ADATAM_CASES] + [
    ("hyper_decoupled", "float32"),
    ("coupled_maximize", "float32"),
]


@pytest.mark.parametrize("case, dtype", TAM_RUNS, ids=[f"{c}-{d}" for c, d in TAM_RUNS])
def test_tam_parity(case, dtype):
    kwargs = TAM_CASES[case]
    run_parity(
        tam(0.05, **kwargs),
        lambda p: TAM(p, lr=0.05, **torch_kwargs(kwargs)),
        dtype=dtype,
        state_map=TAM_STATE,
    )


@pytest.mark.parametrize("case, dtype", ADATAM_RUNS, ids=[f"{c}-{d}" for c, d in ADATAM_RUNS])
def test_adatam_parity(case, dtype):
    kwargs = ADATAM_CASES[case]
    run_parity(
        adatam(0.01, **kwargs),
        lambda p: AdaTAM(p, lr=0.01, **torch_kwargs(kwargs, "betas")),
        dtype=dtype,
        state_map=ADATAM_STATE,
    )


@pytest.mark.usefixtures("default_compilation")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_parity_with_xlas_default_compilation(dtype):
    """The package compiles quickly (``conftest.py``); TAM's and AdaTAM's parity also holds
    compiled with XLA's default settings, the code users run."""
    test_tam_parity("hyper_decoupled", dtype)
    test_adatam_parity("hyper_decoupled", dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("factory", [tam, fast.tam, adatam, fast.adatam])
def test_parity_on_leaves_of_repeated_shapes(factory, dtype):
    """Leaves of one shape go through one vmapped trace (jaxopt_adv.grouping)."""
    params, stream = (
        make_params(shapes=REPEATED_SHAPES),
        gradient_stream(20, shapes=REPEATED_SHAPES),
    )
    if factory in (tam, fast.tam):
        kwargs, reference, state_map = TAM_CASES["hyper_decoupled"], TAM, TAM_STATE
        torch_args = torch_kwargs(kwargs)
    else:
        kwargs, reference, state_map = ADATAM_CASES["hyper_decoupled"], AdaTAM, ADATAM_STATE
        torch_args = torch_kwargs(kwargs, "betas")
    run_parity(
        factory(0.02, **kwargs),
        lambda p: reference(p, lr=0.02, **torch_args),
        dtype=dtype,
        state_map=state_map,
        params=params,
        stream=stream,
    )


@pytest.mark.parametrize("factory, torch_cls", [(tam, TAM), (adatam, AdaTAM)])
def test_parity_per_tensor_path_and_schedule(factory, torch_cls):
    """pytorch_optimizer's non-foreach loop, under a learning-rate schedule."""
    schedule = lambda t: 0.02 / (1 + t)  # noqa: E731
    run_parity(
        factory(schedule, weight_decay=0.1),
        lambda p: torch_cls(p, lr=0.02, weight_decay=0.1, foreach=False),
        schedule=schedule,
        num_steps=24,
    )


def test_tam_coupled_weight_decay_is_a_no_op_in_the_reference():
    """pytorch_optimizer.TAM adds the coupled decay to the gradient after using it."""
    run_parity(
        tam(0.05),
        lambda p: TAM(p, lr=0.05, weight_decay=0.5, weight_decouple=False),
        state_map=TAM_STATE,
    )


def test_momentum_starts_at_first_gradient_for_tam_and_zero_for_adatam():
    g = jnp.array([3.0, -4.0])
    _, state = jax.jit(scale_by_tam(eps=0.0).update)(g, scale_by_tam().init(g))
    # m0 = g, c = normalize(g)^2, s = 0.1 c, m1 = 0.9 g + (1 + s)/2 g
    c = (g / 5.0) ** 2
    np.testing.assert_allclose(state.mu, 0.9 * g + (1 + 0.1 * c) / 2 * g, rtol=1e-6)
    _, state = jax.jit(scale_by_adatam(eps=0.0).update)(g, scale_by_adatam().init(g))
    np.testing.assert_allclose(state.mu, 0.5 * g, rtol=1e-6)
    np.testing.assert_array_equal(state.s, jnp.zeros(2))


@pytest.mark.parametrize("factory", [scale_by_tam, scale_by_adatam])
def test_zero_gradients(factory):
    tx = factory()
    params = {k: jnp.asarray(v, jnp.float32) for k, v in make_params().items()}
    state, update = tx.init(params), jax.jit(tx.update)
    zeros = jax.tree.map(jnp.zeros_like, params)
    for _ in range(3):
        updates, state = update(zeros, state)
    assert int(state.count) == 3
    for leaf in jax.tree.leaves((updates, state._replace(count=0))):
        assert bool(jnp.all(leaf == 0))


def test_zero_d_leaf_matches_torch_normalize():
    """torch's normalize(x, dim=0) on a 0-d tensor is sign(x) (0 for 0)."""
    for m, g in [(2.0, -3.0), (0.0, 1.5), (-1e-14, 2.0)]:
        ours = tam_correlation(jnp.float32(m), jnp.float32(g))
        theirs = correlation(torch.tensor(m), torch.tensor(g), "dim0")
        assert float(ours) == float(theirs)


# -------------------------------------------------------------------------------------
# Correlation rules and the Automagic variants, against tests/reference/torch_tam.py.

SHAPES = [(), (7,), (1001,), (1000,), (5, 4), (4, 6), (3, 2, 3, 3), (2, 1, 5)]


RULES = [("dim0", 0), ("cosine", 0), ("row_cosine", 0), ("auto", 20), ("auto", 1000)]


@pytest.mark.parametrize("rule, threshold", RULES, ids=[f"{r}-{t}" for r, t in RULES])
def test_correlation_rules_match_torch(rule, threshold):
    rng = np.random.default_rng(3)
    with precision("float64"):
        ms = {str(s): rng.normal(size=s) for s in SHAPES}
        gs = {str(s): rng.normal(size=s) for s in SHAPES}
        ms[str((7,))] = np.zeros(7)  # zero momentum: every rule gives 0
        ours = jax.jit(
            lambda ms, gs: jax.tree.map(
                lambda m, g: tam_correlation(m, g, rule, auto_threshold=threshold), ms, gs
            )
        )(ms, gs)
        for key, m in ms.items():
            theirs = correlation(torch.tensor(m), torch.tensor(gs[key]), rule, threshold).numpy()
            assert ours[key].shape == m.shape
            np.testing.assert_allclose(ours[key], theirs, rtol=1e-13, atol=1e-15, err_msg=key)


def test_auto_threshold_boundary():
    """numel == threshold is "small" (one scalar); one element more switches rule."""
    auto = jax.jit(auto_correlation, static_argnums=2)
    rng = np.random.default_rng(4)
    m, g = jnp.asarray(rng.normal(size=(5, 4))), jnp.asarray(rng.normal(size=(5, 4)))
    at = auto(m, g, 20)
    assert bool(jnp.all(at == at[0, 0]))  # scalar cosine
    above = auto(m, g, 19)
    assert not bool(jnp.all(above == above[0, 0]))
    assert bool(jnp.all(above == above[:, :1]))  # constant along each row
    v, w = jnp.asarray(rng.normal(size=1001)), jnp.asarray(rng.normal(size=1001))
    np.testing.assert_allclose(auto(v, w, 1001), auto(v, w, 1000), rtol=1e-6)


def test_traced_auto_threshold_equals_static():
    rng = np.random.default_rng(5)
    m, g = jnp.asarray(rng.normal(size=(3, 2, 3, 3))), jnp.asarray(rng.normal(size=(3, 2, 3, 3)))
    traced = jax.jit(lambda t: auto_correlation(m, g, t))
    static = jax.jit(lambda: [auto_correlation(m, g, t) for t in (53, 54, 55)])()
    for threshold, expected in zip((53, 54, 55), static, strict=True):
        np.testing.assert_allclose(traced(threshold), expected, rtol=1e-6)
        # 54 elements: per-row cosines below 54, one scalar from 54 on
        assert bool(jnp.all(expected == expected.ravel()[0])) == (threshold >= 54)


def momentum_rule(learning_rate, *, emphasis=1.0, **kwargs):
    """A body running the pure TAM step as the composite does (m, s from zero, e on 2-D)."""

    def init_fn(params):
        zeros = optax.tree.zeros_like(params)
        return ScaleByTamState(jnp.zeros([], jnp.int32), zeros, zeros, leaf_slots(params))

    def update_fn(updates, state, params=None, **extra_args):
        def leaf(g, m, s):
            e = emphasis if g.ndim == 2 else 1.0
            m, s = torque_aware_momentum_update(g, m, s, emphasis=e, **kwargs)
            return m, m, s

        out, mu, s = tree_map_multi(leaf, 3, updates, state.mu, state.s)
        return out, ScaleByTamState(optax.safe_increment(state.count), mu, s, state.slots)

    body = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    return optax.chain(body, optax.scale_by_learning_rate(learning_rate))


VARIANT_CASES = {
    "fixed_auto_at_threshold": ({"variant": "fixed", "emphasis": 1.2}, "auto", 20),
    "refactored_auto_rows": ({"variant": "refactored", "emphasis": 1.2}, "auto", 19),
    "refactored_dim0": ({"variant": "refactored", "b1": 0.8, "decay_rate": 0.5}, "dim0", 0),
    "fixed_row_cosine": ({"variant": "fixed", "eps": 1e-3}, "row_cosine", 0),
    "fixed_cosine": ({"variant": "fixed", "emphasis": 0.5}, "cosine", 0),
}
VARIANT_RUNS = [(case, "float64") for case in VARIANT_CASES] + [
    ("fixed_auto_at_threshold", "float32"),
    ("refactored_auto_rows", "float32"),
]


@pytest.mark.parametrize("case, dtype", VARIANT_RUNS, ids=[f"{c}-{d}" for c, d in VARIANT_RUNS])
def test_automagic_variants_match_torch_reference(case, dtype):
    kwargs, rule, threshold = VARIANT_CASES[case]
    torch_args = {
        "momentum": kwargs.get("b1", 0.9),
        "decay_rate": kwargs.get("decay_rate", 0.9),
        "eps": kwargs.get("eps", 1e-8),
        "emphasis": kwargs.get("emphasis", 1.0),
        "variant": kwargs["variant"],
    }
    run_parity(
        momentum_rule(0.02, correlation=rule, auto_threshold=threshold, **kwargs),
        lambda p: TorqueAwareMomentumSGD(p, lr=0.02, rule=rule, threshold=threshold, **torch_args),
        dtype=dtype,
        state_map={"mu": "exp_avg", "s": "s"},
    )


def test_fixed_and_refactored_differ_only_from_the_second_step():
    g1, g2 = jnp.array([1.0, -2.0, 0.5]), jnp.array([0.3, 1.0, -1.0])
    zeros = jnp.zeros(3)
    fixed = torque_aware_momentum_update(g1, zeros, zeros, variant="fixed")
    refactored = torque_aware_momentum_update(g1, zeros, zeros, variant="refactored")
    np.testing.assert_array_equal(fixed[0], refactored[0])
    np.testing.assert_array_equal(refactored[1], refactored[0])  # s <- d (= m at step 1)
    np.testing.assert_array_equal(fixed[1], zeros)  # correlation with m = 0
    m_fixed, _ = torque_aware_momentum_update(g2, *fixed, variant="fixed")
    m_refactored, _ = torque_aware_momentum_update(g2, *refactored, variant="refactored")
    assert float(jnp.max(jnp.abs(m_fixed - m_refactored))) > 1e-2


def test_emphasis_placement():
    """fixed: d = ((1 + e s)/2 + eps) g; refactored: d = e ((1 + s)/2 + eps) g."""
    g, m, s = jnp.array([1.0, 2.0]), jnp.array([1.0, 1.0]), jnp.array([0.5, 0.5])
    kw = {"b1": 0.0, "decay_rate": 1.0 - 1e-7, "eps": 0.0, "emphasis": 2.0}
    m_fixed, s_fixed = torque_aware_momentum_update(g, m, s, variant="fixed", **kw)
    np.testing.assert_allclose(m_fixed, (1 + 2.0 * 0.5) / 2 * g, rtol=1e-6)
    np.testing.assert_allclose(s_fixed, s, rtol=1e-6)
    m_ref, s_ref = torque_aware_momentum_update(g, m, s, variant="refactored", **kw)
    np.testing.assert_allclose(m_ref, 2.0 * (1 + 0.5) / 2 * g, rtol=1e-6)
    np.testing.assert_array_equal(s_ref, m_ref)


# -------------------------------------------------------------------------------------
# Contract details.


@pytest.mark.parametrize(
    "factory, kwargs, message",
    [
        (tam, {"learning_rate": -1.0}, "Invalid learning rate"),
        (tam, {"b1": 1.0}, "Invalid momentum value"),
        (tam, {"decay_rate": -0.1}, "Invalid decay_rate value"),
        (tam, {"eps": -1e-8}, "Invalid eps value"),
        (tam, {"weight_decay": -0.1}, "Invalid weight_decay value"),
        (tam, {"weight_decay": -0.1, "fixed_decay": True}, "Invalid weight_decay value"),
        (tam, {"correlation": "pearson"}, "Invalid correlation"),
        (tam, {"auto_threshold": -1}, "Invalid auto_threshold value"),
        (adatam, {"b1": -0.5}, "Invalid beta1 value"),
        (adatam, {"b2": 1.0}, "Invalid beta2 value"),
        (
            adatam,
            {"decoupled_weight_decay": False, "fixed_decay": True},
            "fixed_decay=True needs decoupled_weight_decay=True",
        ),
    ],
)
def test_bad_hyperparameters(factory, kwargs, message):
    with pytest.raises(ValueError, match=message):
        factory(**kwargs)


@pytest.mark.parametrize("factory", [adatam, fast.adatam], ids=["adatam", "fast.adatam"])
def test_weight_decouple_is_a_deprecated_name_of_decoupled_weight_decay(factory):
    """pytorch_optimizer's ``weight_decouple`` (the released keyword) still works, warns,
    and builds the same optimizer; given with the new name it is an error."""
    assert "weight_decouple" not in inspect.signature(factory).parameters
    params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float32), make_params())
    grads = jax.tree.map(lambda p: 0.5 * p + 0.1, params)

    def first_update(opt):
        return jax.tree.leaves(opt.update(grads, opt.init(params), params)[0])

    with pytest.warns(DeprecationWarning, match=r"weight_decouple=.*decoupled_weight_decay="):
        old = first_update(factory(0.01, weight_decay=0.1, weight_decouple=False))
    new = first_update(factory(0.01, weight_decay=0.1, decoupled_weight_decay=False))
    for got, want in zip(old, new, strict=True):
        np.testing.assert_array_equal(got, want)
    decoupled = first_update(factory(0.01, weight_decay=0.1))  # the default
    assert any(not np.array_equal(a, b) for a, b in zip(old, decoupled, strict=True))
    with pytest.raises(TypeError, match="both decoupled_weight_decay= and weight_decouple="):
        factory(0.01, decoupled_weight_decay=False, weight_decouple=False)


def test_bad_variant_and_correlation_in_pure_functions():
    x = jnp.ones(3)
    with pytest.raises(ValueError, match="Invalid variant"):
        torque_aware_momentum_update(x, x, x, variant="inplace")
    with pytest.raises(ValueError, match="Invalid correlation"):
        tam_correlation(x, x, "pearson")


@pytest.mark.parametrize("factory", [tam, adatam])
def test_jit_compiles_once_with_injected_hyperparameters(factory):
    """Every numeric argument (auto_threshold included) traced; one trace for all steps.

    float64, so that injected arrays and Python floats round alike (in float32
    ``1 - b2`` from an injected 0.999 is 1.3e-5 off, which AdaTAM's first step amplifies).
    """
    kwargs = {"learning_rate": 0.01, "weight_decay": 0.01, "correlation": "auto"}
    traces = []

    with precision("float64"):
        params = {k: jnp.asarray(v) for k, v in make_params().items()}
        injected = optax.inject_hyperparams(factory)(auto_threshold=20, **kwargs)
        got, _ = sine_steps(injected, params, traces)
        assert len(traces) == 1
        expected, _ = sine_steps(factory(auto_threshold=20, **kwargs), params, traces)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12), got, expected)


def test_composes_in_chain_and_under_with_reference_grads():
    params = {k: jnp.asarray(v, jnp.float32) for k, v in make_params().items()}
    grads = jax.tree.map(jnp.cos, params)
    chained = optax.chain(scale_by_tam(), optax.scale(-0.1))
    wrapped = with_reference_grads(optax.identity(), chained)

    @jax.jit
    def updates(params, grads):
        alias, _ = tam(0.1).update(grads, tam(0.1).init(params), params)
        u1, _ = chained.update(grads, chained.init(params), params, unknown_extra=1)
        u2, _ = wrapped.update(grads, wrapped.init(params), params)
        return alias, u1, u2

    alias, u1, u2 = updates(params, grads)
    jax.tree.map(np.testing.assert_allclose, u1, alias)
    jax.tree.map(np.testing.assert_allclose, u2, alias)


def test_mu_dtype_and_update_dtype():
    params = {k: jnp.asarray(v, jnp.bfloat16) for k, v in make_params().items()}
    tx = scale_by_adatam(mu_dtype=jnp.float32)
    updates, state = jax.jit(tx.update)(params, tx.init(params))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.mu))
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves((state.nu, state.s)))
    assert all(u.dtype == jnp.bfloat16 for u in jax.tree.leaves(updates))
