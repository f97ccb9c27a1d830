"""AGR parity against the minimal torch reference ``tests/reference/torch_agr.py``."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxopt_adv.automagic.agr import agr, edge_strength, laplacian
from jaxopt_adv.grouping import with_slots
from jaxopt_adv.torch import adamw, sgd
from tests.harness import REPEATED_SHAPES, gradient_stream, make_params, precision, run_parity
from tests.reference import torch_agr

LR = 0.1


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(
    "scope, edge, eps, cap_alpha",
    [
        ("leaf", False, 0.0, False),
        ("leaf", True, 1e-10, False),
        ("tree", False, 1e-10, False),
        ("tree", True, 0.0, False),
        ("leaf", True, 0.0, True),
        ("tree", True, 1e-10, True),
    ],
)
def test_sgd_parity(scope, edge, eps, cap_alpha, dtype):
    """Given slots, on a tree that repeats shapes (grouped per shape)."""
    options = dict(scope=scope, edge=edge, eps=eps, cap_alpha=cap_alpha)
    run_parity(
        optax.chain(with_slots(agr(**options)), sgd(LR)),
        lambda p: torch_agr.AGRSGD(p, lr=LR, **options),
        dtype=dtype,
        params=make_params(shapes=REPEATED_SHAPES),
        stream=gradient_stream(20, shapes=REPEATED_SHAPES),
    )


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_adamw_agr_parity(dtype):
    """The paper's setting: AdamW on per-tensor AGR gradients, edge factor with other knobs."""
    options = dict(scope="leaf", edge=True, edge_threshold=0.3, edge_scale=0.5, eps=0.0)
    run_parity(
        optax.chain(agr(**options), adamw(0.05)),
        lambda p: torch_agr.AGRAdamW(p, lr=0.05, **options),
        dtype=dtype,
        state_map={"mu": "exp_avg", "nu": "exp_avg_sq"},
    )


def _groups(p):
    # harness order: matrix, vector, conv, scalar
    return [{"params": [p[0], p[2]]}, {"params": [p[1], p[3]]}]


LABELS = {"matrix": "a", "conv": "a", "vector": "b", "scalar": "b"}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_partition_equals_torch_param_groups(dtype):
    """One ``optax.partition`` label is one torch param group for the tree-scope sum."""
    block = lambda: optax.chain(agr("tree", edge=True), sgd(LR))  # noqa: E731
    ours = optax.partition({"a": block(), "b": block()}, LABELS)
    run_parity(
        ours, lambda p: torch_agr.AGRSGD(_groups(p), lr=LR, scope="tree", edge=True), dtype=dtype
    )
    # ... and a single group is measurably different (the test can fail).
    report = run_parity(
        ours, lambda p: torch_agr.AGRSGD(p, lr=LR, scope="tree", edge=True), check=False
    )
    assert report.max_error > 1e-4


def test_tree_and_leaf_scopes_differ():
    grads = {k: jnp.asarray(v) for k, v in make_params(3).items()}
    leaf, _ = jax.jit(agr("leaf").update)(grads, optax.EmptyState())
    tree, _ = jax.jit(agr("tree").update)(grads, optax.EmptyState())
    total = sum(float(jnp.abs(g).sum()) for g in grads.values())
    m = grads["matrix"]
    np.testing.assert_allclose(tree["matrix"], m * (1 - jnp.abs(m) / (total + 1e-10)), rtol=1e-6)
    assert float(jnp.max(jnp.abs(leaf["matrix"] - tree["matrix"]))) > 1e-3


def test_laplacian_boundary_rules():
    x = jnp.arange(24.0).reshape(2, 3, 4) ** 2
    lap = np.asarray(jax.jit(laplacian)(x))
    xn = np.asarray(x)
    want = np.zeros_like(xn)
    want[:, 1:-1, :] += xn[:, 2:, :] - 2 * xn[:, 1:-1, :] + xn[:, :-2, :]
    want[:, :, 1:-1] += xn[:, :, 2:] - 2 * xn[:, :, 1:-1] + xn[:, :, :-2]
    np.testing.assert_allclose(lap, want)
    # Border rows still get the column term, border columns the row term.
    assert lap[0, 0, 1] != 0 and lap[0, 1, 0] != 0 and lap[0, 0, 0] == 0
    # h == 2: only the column term; w == 2: only the row term; ndim < 2: zeros.
    y = jnp.array([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(laplacian(y), [[0.0, -2.0, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(laplacian(y.T), [[0.0, 0.0], [-2.0, 0.0], [0.0, 0.0]])
    assert not np.any(laplacian(jnp.arange(5.0) ** 2))
    assert laplacian(jnp.ones(())).shape == ()


def test_edge_strength_threshold_and_conv_taps():
    """3x3 kernels: only the centre tap has both terms' neighbours; 1x1 kernels: nothing."""
    rng = np.random.default_rng(0)
    kernel = jnp.asarray(rng.normal(size=(4, 2, 3, 3)) * 10)
    strength = np.asarray(jax.jit(edge_strength)(kernel))
    centre = strength[..., 1, 1]
    assert np.all(centre > 0)
    lap = np.asarray(jax.jit(laplacian)(kernel))
    np.testing.assert_allclose(strength[..., 1, 1], np.abs(lap[..., 1, 1]) * 0.1)
    assert not np.any(edge_strength(jnp.ones((4, 2, 1, 1)) * 100))
    # Strictly above the threshold.
    x = jnp.array([[0.0, 0.0, 0.0], [0.0, 0.15, 0.0], [0.0, 0.0, 0.0]])  # |lap| = 0.6 at centre
    assert float(edge_strength(x)[1, 1]) == 0.0
    assert float(edge_strength(x, threshold=0.5, scale=2.0)[1, 1]) == pytest.approx(1.2)


@pytest.mark.parametrize("eps", [0.0, 1e-10])
@pytest.mark.parametrize("scope", ["leaf", "tree"])
def test_zero_gradients_stay_zero(scope, eps):
    grads = {"w": jnp.zeros((3, 4)), "b": jnp.zeros(4)}
    out, _ = jax.jit(agr(scope, edge=True, eps=eps).update)(grads, optax.EmptyState())
    for v in jax.tree.leaves(out):
        assert v.dtype == jnp.float32 and not np.any(v)
    # One zero leaf next to a non-zero one: leaf scope keeps the zero leaf finite.
    grads["b"] = jnp.ones(4)
    out, _ = agr(scope, eps=eps).update(grads, optax.EmptyState())
    assert np.all(np.isfinite(out["w"])) and not np.any(out["w"])


@pytest.mark.parametrize("scope", ["leaf", "tree"])
def test_cap_alpha_keeps_an_element_that_carries_the_whole_sum(scope):
    """Official AGR multiplies an element holding all of ``sum |g|`` by exactly zero (a
    scalar parameter under "leaf", one active entry under either scope): with
    ``cap_alpha`` it keeps 1/n of itself, and a one-element sum leaves it unchanged."""
    grads = {"vector": jnp.array([0.0, -3.0, 0.0]), "scalar": jnp.array(2.0)}
    if scope == "tree":
        grads = {"vector": grads["vector"]}
    plain, _ = agr(scope, eps=0.0).update(grads, optax.EmptyState())
    capped, _ = agr(scope, eps=0.0, cap_alpha=True).update(grads, optax.EmptyState())
    assert not np.any(plain["vector"])
    np.testing.assert_allclose(capped["vector"], [0.0, -1.0, 0.0], rtol=1e-6)
    if scope == "leaf":
        assert float(plain["scalar"]) == 0.0 and float(capped["scalar"]) == 2.0
    # Elsewhere (every alpha below 1 - 1/n) the capped result is AGR's.
    g = {"w": jnp.asarray(make_params(3)["matrix"], jnp.float32)}
    a, _ = agr(scope, edge=True).update(g, optax.EmptyState())
    b, _ = agr(scope, edge=True, cap_alpha=True).update(g, optax.EmptyState())
    np.testing.assert_array_equal(a["w"], b["w"])


def test_cap_alpha_stops_the_edge_factor_flipping_a_sign():
    g = jnp.zeros((3, 3)).at[1, 1].set(1.0).at[0, 0].set(0.01)  # |lap| = 4 at the centre
    plain, _ = agr("leaf", edge=True, edge_threshold=0.5, edge_scale=1.0).update(g, None)
    capped, _ = agr("leaf", edge=True, edge_threshold=0.5, edge_scale=1.0, cap_alpha=True).update(
        g, None
    )
    assert float(plain[1, 1]) < 0  # alpha ~ 0.99 * 5: the step would point uphill
    assert float(capped[1, 1]) > 0 and np.all(np.sign(capped) == np.sign(g))


def test_nan_gradient_poisons_its_scope():
    grads = {"w": jnp.array([1.0, jnp.nan]), "b": jnp.ones(2)}
    leaf, _ = agr("leaf").update(grads, optax.EmptyState())
    tree, _ = agr("tree").update(grads, optax.EmptyState())
    assert np.all(np.isfinite(leaf["b"])) and np.all(np.isnan(leaf["w"]))
    assert np.all(np.isnan(tree["b"]))


def test_jit_once_and_dtype():
    traces = []
    tx = agr("tree", edge=True)

    @jax.jit
    def step(g, state):
        traces.append(1)
        return tx.update(g, state)

    state = tx.init(None)
    for scale in (1.0, 2.0, 0.5):
        g = {"w": jnp.ones((4, 5), jnp.bfloat16) * scale, "b": jnp.ones(3) * scale}
        out, state = step(g, state)
    assert len(traces) == 1
    assert out["w"].dtype == jnp.bfloat16 and out["b"].dtype == jnp.float32


def test_inject_hyperparams():
    g = {"w": jnp.asarray(make_params(2)["matrix"], jnp.float32)}
    injected = optax.inject_hyperparams(agr, static_args=("scope", "edge"))(
        "tree", True, edge_threshold=0.3, edge_scale=0.2
    )
    a, _ = injected.update(g, injected.init(g))
    b, _ = agr("tree", True, edge_threshold=0.3, edge_scale=0.2).update(g, optax.EmptyState())
    np.testing.assert_allclose(a["w"], b["w"], rtol=1e-6)


def test_float64_sum():
    with precision("float64"):
        out, _ = agr("leaf", eps=0.0).update(jnp.array([1.0, -3.0]), optax.EmptyState())
        assert out.dtype == jnp.float64
        np.testing.assert_array_equal(out, [0.75, -0.75])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"scope": "group"}, "scope"),
        ({"edge_threshold": 0.0}, "edge_threshold"),
        ({"edge_threshold": 1.0}, "edge_threshold"),
        ({"edge_scale": -0.1}, "edge_scale"),
        ({"eps": -1e-10}, "eps"),
    ],
)
def test_bad_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        agr(**kwargs)
