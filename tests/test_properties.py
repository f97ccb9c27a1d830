"""Property tests (hypothesis) over every registered optimizer in ``tests/cases.py``.

Each example draws one parameter tree holding every awkward shape at once (a scalar, a
zero-size array, a ``[1, n]`` row, a ``[n, 1]`` column, odd sizes, a 4-D kernel: one
compilation per example covers them all) and hyperparameters around the case's (the
learning rate and the weight decay scaled by drawn factors). For gradients of every scale
in ``GRADIENT_SCALES`` (exact zeros included), two jitted steps must give

* finite updates for finite gradients,
* updates in the gradient's dtype,
* a state with the init state's tree structure, shapes and dtypes.

Mixed precision, the contract: the state is initialised from float32 master parameters,
then bfloat16 gradients arrive, with the float32 masters or their bfloat16 copies as
``params`` (each example passes both kinds, leaf by leaf). The optimizer computes in its
float32 state and rounds once: the updates are bfloat16 (the gradient's dtype), the state
stays float32 (never downcast by a step, so a jitted or scanned loop keeps one
compilation) and everything is finite; ``optax.apply_updates`` then adds the bfloat16
updates to the float32 masters in float32.

The examples are derandomized (reproducible in CI) and few: every one recompiles. Every
test here runs under the ``quick_compilation`` fixture (XLA's optimisations mostly off):
it checks finiteness, dtypes and structure, not the numbers (the parity tests do, with
XLA's optimisations on), and compilation is most of its run time.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from jaxopt_adv import get_optimizer
from jaxopt_adv.mup import infer_infshapes
from tests.cases import CASES

pytestmark = pytest.mark.usefixtures("quick_compilation")

# every example compiles the optimizer afresh: few examples, and no shrinking (a failure
# is reported as drawn; shrinking would recompile for minutes)
SETTINGS = settings(
    max_examples=2,
    deadline=None,
    derandomize=True,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

sizes = st.integers(1, 9)
odd_sizes = st.sampled_from([1, 3, 5, 7])


@st.composite
def shape_trees(draw) -> dict[str, tuple[int, ...]]:
    """One shape of every kind, as a {name: shape} dict (the parameter tree's layout)."""
    empty_rank = draw(st.integers(1, 3))
    empty = list(draw(st.lists(st.integers(1, 4), min_size=empty_rank, max_size=empty_rank)))
    empty[draw(st.integers(0, empty_rank - 1))] = 0
    odd_rank = draw(st.integers(1, 3))
    return {
        "scalar": (),
        "empty": tuple(empty),
        "row": (1, draw(sizes)),
        "column": (draw(sizes), 1),
        "odd": tuple(draw(st.lists(odd_sizes, min_size=odd_rank, max_size=odd_rank))),
        "conv": tuple(draw(st.lists(st.integers(1, 4), min_size=4, max_size=4))),
    }


@st.composite
def hyperparameters(draw, case) -> dict:
    """The case's kwargs with the learning rate (and weight decay) scaled by drawn factors."""
    kwargs = dict(case.kwargs)
    kwargs["learning_rate"] = kwargs["learning_rate"] * draw(st.sampled_from([0.1, 0.5, 1.0, 2.0]))
    if "weight_decay" in kwargs:
        kwargs["weight_decay"] = kwargs["weight_decay"] * draw(st.sampled_from([0.0, 1.0, 10.0]))
    return kwargs


# every example runs each gradient scale (one compilation serves them all): exact zeros
# (frozen or unused parameters must not divide by zero), tiny, unit and large gradients
GRADIENT_SCALES = (0.0, 1e-4, 1.0, 1e3)


def _base_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A narrower base for muP: the last two axes halved where they are wider than 1."""
    narrow = [(d + 1) // 2 if i >= len(shape) - 2 and d > 1 else d for i, d in enumerate(shape)]
    return tuple(narrow)


def build(case, kwargs: dict, shapes: dict) -> optax.GradientTransformation:
    if "infshapes" in kwargs:  # muP's widths must describe this tree
        base = {k: jax.ShapeDtypeStruct(_base_shape(s), jnp.float32) for k, s in shapes.items()}
        target = {k: jax.ShapeDtypeStruct(s, jnp.float32) for k, s in shapes.items()}
        kwargs = {**kwargs, "infshapes": infer_infshapes(base, target)}
    return get_optimizer(case.name)(**kwargs)


def random_tree(shapes: dict, seed: int, scale: float = 1.0, dtype=jnp.float32) -> dict:
    rng = np.random.default_rng(seed)  # NumPy: no compilation per new shape
    return {name: jnp.asarray(scale * rng.normal(size=s), dtype) for name, s in shapes.items()}


def avals(tree):
    return jax.tree.map(lambda x: (jnp.shape(x), jnp.result_type(x)), tree)


def check_contract(case, tx, shapes, seed, grad_dtype, given_params):
    """Per gradient scale: init from float32 masters, two jitted steps, the contract."""
    masters = case.params(random_tree(shapes, seed))

    @jax.jit
    def step(grads, state, params):
        updates, state = tx.update(grads, state, given_params(params), **case.extra_args)
        return updates, state, optax.apply_updates(params, updates)

    for scale in GRADIENT_SCALES:
        params, state = masters, tx.init(masters)
        structure, layout = jax.tree.structure(state), avals(state)
        for t in range(2):
            grads = case.params(random_tree(shapes, seed + 1 + t, scale, grad_dtype))
            updates, state, params = step(grads, state, params)
            assert jax.tree.structure(updates) == jax.tree.structure(grads)
            for name, u in updates.items():
                where = f"{name!r} {u.shape}, gradient scale {scale}, step {t}"
                assert u.dtype == grads[name].dtype, where
                assert u.shape == grads[name].shape, where
                assert np.all(np.isfinite(np.asarray(u, np.float32))), where
            assert jax.tree.structure(state) == structure
            assert avals(state) == layout, f"gradient scale {scale}, step {t}"
        assert avals(params) == avals(masters)  # float32 masters stay float32


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_float32_random_shapes_and_hyperparameters(case):
    @SETTINGS
    @given(shapes=shape_trees(), kwargs=hyperparameters(case), seed=st.integers(0, 2**16))
    def check(shapes, kwargs, seed):
        tx = build(case, kwargs, shapes)
        check_contract(case, tx, shapes, seed, jnp.float32, lambda params: params)

    check()


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bfloat16_gradients_with_float32_state(case):
    @SETTINGS
    @given(shapes=shape_trees(), kwargs=hyperparameters(case), seed=st.integers(0, 2**16))
    def check(shapes, kwargs, seed):
        tx = build(case, kwargs, shapes)

        def given_params(params):
            """Every other leaf as its bfloat16 copy, the rest as the float32 masters (which
            leaves: by the seed), so that each example has both."""
            return {
                name: p.astype(jnp.bfloat16) if (i + seed) % 2 else p
                for i, (name, p) in enumerate(params.items())
            }

        check_contract(case, tx, shapes, seed, jnp.bfloat16, given_params)

    check()


def test_shape_trees_cover_every_kind():
    """The strategy really draws the awkward shapes (a guard on the generator itself)."""
    seen = []

    @settings(max_examples=20, deadline=None, derandomize=True)
    @given(shapes=shape_trees())
    def collect(shapes):
        seen.append(shapes)

    collect()
    for shapes in seen:
        assert shapes["scalar"] == ()
        assert 0 in shapes["empty"]
        assert shapes["row"][0] == 1 and shapes["column"][1] == 1
        assert all(d % 2 == 1 for d in shapes["odd"])
        assert len(shapes["conv"]) == 4
    assert len({s["empty"] for s in seen}) > 1 and len({s["odd"] for s in seen}) > 1
    assert np.mean([len(s["odd"]) for s in seen]) > 1
