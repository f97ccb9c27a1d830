"""The optax contract, checked for every registered optimizer (driven by tests/cases.py).

Every test here runs under the ``quick_compilation`` fixture (XLA's optimisations mostly
off): the contract is structure, dtypes, shardings and the agreement of two ways of running
the same optimizer (jit and eager, injected and plain hyperparameters, donated and not), which
optimisation does not change, and compilation is most of the file's run time. The numbers
themselves are checked against torch by the parity tests, with XLA's optimisations on.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxopt_adv
from jaxopt_adv import fast, get_optimizer
from tests.cases import CASES, CASES_BY_NAME, closure_args, numeric_arguments
from tests.harness import precision
from tests.helpers.trees import make_grads, make_params


def build(case, **overrides) -> optax.GradientTransformation:
    return get_optimizer(case.name)(**{**case.kwargs, **overrides})


def make_step(tx, extra_args):
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params, **extra_args)
        return optax.apply_updates(params, updates), state

    return step


def run(tx, case, num_steps=4, params=None, jit=True):
    params = case.params(make_params()) if params is None else params
    state = tx.init(params)
    step = make_step(tx, case.extra_args)
    step = jax.jit(step) if jit else step
    for t in range(num_steps):
        params, state = step(params, state, make_grads(params, t))
    return params, state


def assert_trees_close(a, b, rtol=0.0, atol=0.0):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=atol), a, b)


def avals(tree):
    """(shape, dtype, weak_type) of every leaf of a tree of ShapeDtypeStructs."""
    return jax.tree.map(lambda x: (x.shape, x.dtype, x.weak_type), tree)


ids = [case.name for case in CASES]
cases = pytest.mark.parametrize("case", CASES, ids=ids)
pytestmark = pytest.mark.usefixtures("quick_compilation")


@cases
def test_jit_no_recompile(case):
    tx = build(case)
    traces = []

    @jax.jit
    def step(params, state, grads):
        traces.append(None)
        return make_step(tx, case.extra_args)(params, state, grads)

    params = case.params(make_params())
    state = tx.init(params)
    for t in range(3):
        params, state = step(params, state, make_grads(params, t))
    assert len(traces) == 1


@cases
def test_state_avals_stable(case):
    """update returns a state with the init state's shapes, dtypes and weak types."""
    tx = build(case)
    params = case.params(make_params())
    state = jax.eval_shape(tx.init, params)
    _, new_state = jax.eval_shape(
        lambda s: tx.update(make_grads(params, 0), s, params, **case.extra_args),
        tx.init(params),
    )
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    assert avals(new_state) == avals(state)


@cases
def test_state_stable_through_cond(case):
    tx = build(case)
    params = case.params(make_params())
    state = tx.init(params)
    grads = make_grads(params, 0)

    @jax.jit
    def maybe_step(pred, state):
        def skip():
            return jax.tree.map(jnp.zeros_like, grads), state

        return jax.lax.cond(pred, lambda: tx.update(grads, state, params, **case.extra_args), skip)

    skipped_updates, skipped = maybe_step(False, state)
    assert_trees_close(skipped, state)
    updates, stepped = maybe_step(True, state)
    expected_updates, expected = tx.update(grads, state, params, **case.extra_args)
    # jit may fuse differently from eager: a float32 ulp of the values (~0.3) is allowed
    assert_trees_close(updates, expected_updates, rtol=1e-6, atol=1e-6)
    assert_trees_close(stepped, expected, rtol=1e-6, atol=1e-6)


@cases
def test_unknown_extra_args_ignored(case):
    tx = build(case)
    params = case.params(make_params())
    state = tx.init(params)
    grads = make_grads(params, 0)
    plain = tx.update(grads, state, params, **case.extra_args)
    extra = tx.update(grads, state, params, not_an_argument=jnp.ones(3), **case.extra_args)
    assert_trees_close(plain, extra)


@cases
def test_inject_hyperparams_equivalent(case):
    """Injected hyperparameters give the same numbers (float64, where a hyperparameter
    held as an array is not rounded to float32 the way a Python float is not)."""
    factory = get_optimizer(case.name)
    with precision("float64"):
        params = case.params(make_params(jnp.float64))
        injected = optax.inject_hyperparams(factory)(**case.kwargs)
        expected, _ = run(factory(**case.kwargs), case, params=params)
        got, state = run(injected, case, params=params)
        assert_trees_close(got, expected, rtol=1e-12)
        assert float(state.hyperparams["learning_rate"]) == case.kwargs["learning_rate"]


def layout(tree):
    """What a checkpoint must match: the tree structure and each leaf's shape, dtype and
    weak type (a differing weak type recompiles a jitted step)."""
    leaves = jax.tree.map(
        lambda x: (jnp.shape(x), jnp.result_type(x), jax.typeof(x).weak_type), tree
    )
    return jax.tree.structure(tree), leaves


def option_kwargs(case, options: str) -> dict:
    """The case's kwargs (``"case"``: options switched on), only its learning rate and the
    arguments without a default (``"default"``), or the case's with every momentum and
    weight decay the factory has set to an explicit 0 (``"zero"``)."""
    factory = get_optimizer(case.name)
    parameters = inspect.signature(factory).parameters
    if options == "case":
        return case.kwargs
    if options == "default":
        required = [k for k, p in parameters.items() if p.default is inspect.Parameter.empty]
        return {k: case.kwargs[k] for k in ["learning_rate", *required]}
    zeros = {k: 0.0 for k in ("momentum", "weight_decay") if k in parameters}
    return {**case.kwargs, **zeros}


@cases
@pytest.mark.parametrize(
    "options, jit",
    [("default", False), ("default", True), ("case", True), ("zero", True)],
)
def test_inject_hyperparams_state_matches_plain(case, options, jit):
    """optax's own check (alias_test's test_optimizers_can_be_wrapped_in_inject_hyperparams):
    the injected optimizer's inner state has the plain one's structure, shapes and dtypes,
    after init and after an update, with the same numbers; and a state saved from either
    continues in the other (a checkpoint restored into a run that switched to injected
    hyperparameters, or back)."""
    factory = get_optimizer(case.name)
    kwargs = option_kwargs(case, options)
    plain = factory(**kwargs)
    injected = optax.inject_hyperparams(factory, static_args=case.static_args)(**kwargs)

    def maybe_jit(f, static_argnames=()):
        return jax.jit(f, static_argnames=static_argnames) if jit else f

    closures = tuple(k for k, v in case.extra_args.items() if callable(v))  # LBFGS's closure
    params = case.params(make_params())
    plain_update = maybe_jit(plain.update, closures)
    injected_update = maybe_jit(injected.update, closures)
    state, injected_state = maybe_jit(plain.init)(params), maybe_jit(injected.init)(params)
    assert layout(injected_state.inner_state) == layout(state)

    grads = make_grads(params, 0)
    updates, state = plain_update(grads, state, params, **case.extra_args)
    injected_updates, injected_state = injected_update(
        grads, injected_state, params, **case.extra_args
    )
    assert layout(injected_state.inner_state) == layout(state)
    # the injected hyperparameters are float32 arrays, the plain ones Python floats (in
    # float32, 1 - b2 is 4e-5 off 1e-3): optax's test allows 1e-3 / 1e-4
    assert_trees_close(injected_updates, updates, rtol=1e-4, atol=1e-6)
    assert_trees_close(injected_state.inner_state, state, rtol=1e-4, atol=1e-6)

    grads = make_grads(params, 1)
    swapped = injected_state._replace(inner_state=state)
    expected, _ = plain_update(grads, state, params, **case.extra_args)
    got, _ = injected_update(grads, swapped, params, **case.extra_args)
    assert_trees_close(got, expected, rtol=1e-4, atol=1e-6)
    expected, _ = injected_update(grads, injected_state, params, **case.extra_args)
    got, _ = plain_update(grads, injected_state.inner_state, params, **case.extra_args)
    assert_trees_close(got, expected, rtol=1e-4, atol=1e-6)


def public_callables():
    """Every function and class in the ``__all__`` of jaxopt_adv and its modules."""
    names = ["jaxopt_adv"]
    names += [f"jaxopt_adv.{m.name}" for m in pkgutil.iter_modules(jaxopt_adv.__path__)]
    found = {}
    for module_name in names:
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if inspect.isfunction(obj) or inspect.isclass(obj):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


def test_annotations_resolve():
    """With ``from __future__ import annotations`` the annotations are strings; tools
    (optax's schedule tests) read them with ``inspect.signature(f, eval_str=True)``."""
    found = public_callables()
    assert len(found) > 100
    for name, obj in found.items():
        target = obj.__init__ if inspect.isclass(obj) else obj
        try:
            inspect.signature(target, eval_str=True)
        except Exception as error:  # report which one, whatever failed
            raise AssertionError(f"{name}: {error!r}") from error


@cases
def test_learning_rate_is_annotated_as_a_schedule(case):
    """optax's contrib tests pass a schedule to every factory whose ``learning_rate`` is
    annotated ``optax.ScalarOrSchedule`` (every registered one takes schedules)."""
    signature = inspect.signature(get_optimizer(case.name), eval_str=True)
    assert signature.parameters["learning_rate"].annotation is optax.ScalarOrSchedule


@cases
def test_injected_learning_rate_is_live(case):
    """Changing the injected learning rate in the state changes the next update."""
    injected = optax.inject_hyperparams(get_optimizer(case.name))(**case.kwargs)
    params = case.params(make_params())
    state = injected.init(params)
    grads = make_grads(params, 0)
    u1, _ = injected.update(grads, state, params, **case.extra_args)
    state.hyperparams["learning_rate"] = jnp.asarray(0.0)
    # under jit, as in training: the injected rate is a tracer there, so a 0 passes where
    # a concrete 0 is refused (Automagic's and SparseAdam's rates must be > 0)
    update = jax.jit(lambda g, s, p: injected.update(g, s, p, **case.extra_args)[0])
    u0 = update(grads, state, params)
    assert any(float(jnp.max(jnp.abs(x))) > 0 for x in jax.tree.leaves(u1))
    if case.learning_rate_scales_updates:
        assert all(float(jnp.max(jnp.abs(x))) == 0 for x in jax.tree.leaves(u0))


@cases
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["float32", "bfloat16"])
def test_update_dtype_follows_gradient(case, dtype):
    tx = build(case)
    params = case.params(make_params(dtype))
    state = tx.init(params)
    init_dtypes = jax.tree.map(jnp.result_type, state)
    # one compiled update for both steps (eager, every operation compiles on its own)
    update = jax.jit(lambda g, s, p: tx.update(g, s, p, **case.extra_args))
    for t in range(2):
        grads = make_grads(params, t)
        updates, state = update(grads, state, params)
        jax.tree.map(lambda u, g: _assert_dtype(u, g.dtype), updates, grads)
        params = optax.apply_updates(params, updates)
        jax.tree.map(lambda x: _assert_dtype(x, dtype), params)
        assert jax.tree.map(jnp.result_type, state) == init_dtypes
        assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))


def _assert_dtype(x, dtype):
    assert jnp.result_type(x) == dtype, (jnp.result_type(x), dtype)


@cases
def test_multisteps_accumulates(case):
    k = 3
    tx = optax.MultiSteps(build(case), every_k_schedule=k)
    params = case.params(make_params())
    state = tx.init(params)
    # one compiled update for the k steps (eager, every operation compiles on its own)
    update = jax.jit(lambda g, s, p: tx.update(g, s, p, **case.extra_args))
    for t in range(k):
        updates, state = update(make_grads(params, t), state, params)
        norms = [float(jnp.max(jnp.abs(u))) for u in jax.tree.leaves(updates)]
        if t < k - 1:
            assert max(norms) == 0.0
        else:
            assert max(norms) > 0.0


@cases
def test_abstract_init(case):
    tx = build(case)
    params = case.params(make_params())
    abstract = jax.eval_shape(
        tx.init, jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), params)
    )
    concrete = tx.init(params)
    assert jax.tree.structure(abstract) == jax.tree.structure(concrete)
    shapes = jax.tree.map(lambda x: (x.shape, x.dtype), abstract)
    assert shapes == jax.tree.map(lambda x: (jnp.shape(x), jnp.result_type(x)), concrete)


@cases
def test_donation(case):
    tx = build(case)
    step = jax.jit(make_step(tx, case.extra_args), donate_argnums=(0, 1))
    params = case.params(make_params())
    state = tx.init(params)
    expected, _ = run(tx, case, num_steps=1)
    grads = make_grads(params, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Some donated buffers were not usable" fails
        new_params, _ = step(params, state, grads)
    assert all(p.is_deleted() for p in jax.tree.leaves(params))
    assert_trees_close(new_params, expected)


@cases
def test_schedule_equals_constant(case):
    lr = case.kwargs["learning_rate"]
    constant, _ = run(build(case), case)
    scheduled, _ = run(build(case, learning_rate=optax.constant_schedule(lr)), case)
    assert_trees_close(scheduled, constant, rtol=1e-7)


def _minimise(tx, loss, x0, steps, case):
    extra_args = closure_args(case, loss)

    def body(carry, _):
        x, state = carry
        updates, state = tx.update(jax.grad(loss)(x), state, x, **extra_args)
        return (optax.apply_updates(x, updates), state), None

    (x, _), _ = jax.jit(lambda x: jax.lax.scan(body, (x, tx.init(x)), None, steps))(x0)
    return float(loss(x) / loss(x0))


@cases
def test_converges_on_quadratic(case):
    conv = case.quadratic
    x0 = jnp.linspace(-2.0, 3.0, 6)
    curvature = jnp.linspace(1.0, 10.0, 6)
    ratio = _minimise(
        build(case, **conv.kwargs) if conv.kwargs else build(case),
        lambda x: 0.5 * jnp.sum(curvature * x**2),
        case.params(x0),
        conv.steps,
        case,
    )
    assert ratio < conv.ratio


def rosenbrock(x):
    """Rosenbrock's function of the two entries of ``x`` (of any shape)."""
    x = x.reshape(-1)
    return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


@cases
def test_converges_on_rosenbrock(case):
    conv = case.rosenbrock
    factory = get_optimizer(case.name)
    ratio = _minimise(
        factory(**conv.kwargs),
        rosenbrock,
        case.params(jnp.array([-1.2, 1.0])),
        conv.steps,
        case,
    )
    assert ratio < conv.ratio


@cases
def test_nonfinite_gradient(case):
    """A NaN gradient gives NaN updates (as in torch); apply_if_finite skips the step
    and leaves the optimizer state untouched, and training then goes on."""
    tx = build(case)
    params = case.params(make_params())
    nan_grads = jax.tree.map(lambda g: g.at[...].set(jnp.nan), make_grads(params, 0))
    # jitted: eager, every operation of the update compiles on its own
    plain_update = jax.jit(lambda g, s, p: tx.update(g, s, p, **case.extra_args)[0])
    updates = plain_update(nan_grads, tx.init(params), params)
    assert all(bool(jnp.all(jnp.isnan(u))) for u in jax.tree.leaves(updates))

    guarded = optax.apply_if_finite(tx, max_consecutive_errors=3)
    # one compiled update for the three steps (eager, each call compiled its lax.cond)
    update = jax.jit(lambda g, s, p: guarded.update(g, s, p, **case.extra_args))
    state = guarded.init(params)
    updates, state = update(make_grads(params, 0), state, params)
    params = optax.apply_updates(params, updates)
    before = state
    updates, state = update(nan_grads, state, params)
    assert all(float(jnp.max(jnp.abs(u))) == 0 for u in jax.tree.leaves(updates))
    assert_trees_close(state.inner_state, before.inner_state)
    updates, state = update(make_grads(params, 1), state, params)
    assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))
    assert int(state.notfinite_count) == 0


class _Model(nnx.Module):
    """Two dense layers; without biases (``use_bias=False``) for an optimizer that takes
    only matrices (torch.optim.Muon)."""

    def __init__(self, rngs: nnx.Rngs, use_bias: bool = True):
        self.hidden = nnx.Linear(3, 4, use_bias=use_bias, rngs=rngs)
        self.out = nnx.Linear(4, 2, use_bias=use_bias, rngs=rngs)

    def __call__(self, x):
        return self.out(jnp.tanh(self.hidden(x)))


def _require_extra(name):
    """A pass-through block that fails unless the extra arg ``name`` reaches it."""

    def update(updates, state, params=None, **extra_args):
        assert name in extra_args, f"extra arg {name!r} was not forwarded"
        return updates, state

    return optax.GradientTransformationExtraArgs(lambda params: optax.EmptyState(), update)


@cases
def test_flax_nnx_optimizer(case):
    x = jnp.linspace(-1.0, 1.0, 15).reshape(5, 3)
    y = jnp.ones((5, 2))

    def loss_fn(model):
        return jnp.mean((model(x) - y) ** 2)

    tx = optax.chain(build(case), _require_extra("value"))
    model = _Model(nnx.Rngs(0), use_bias=not case.matrices_only)
    initial = nnx.as_pure(nnx.state(model, nnx.Param))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    reference = _Model(nnx.Rngs(0), use_bias=not case.matrices_only)
    graphdef, ref_params = nnx.split(reference, nnx.Param)
    ref_params = nnx.as_pure(ref_params)
    ref_state = tx.init(ref_params)
    for _ in range(3):
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads, value=loss, **case.extra_args)

        def pure_loss(p):
            return loss_fn(nnx.merge(graphdef, p))

        ref_loss, ref_grads = jax.value_and_grad(pure_loss)(ref_params)
        updates, ref_state = tx.update(
            ref_grads, ref_state, ref_params, value=ref_loss, **case.extra_args
        )
        ref_params = optax.apply_updates(ref_params, updates)
    got = nnx.as_pure(nnx.state(model, nnx.Param))
    assert_trees_close(got, ref_params, rtol=1e-6, atol=1e-7)
    assert not jax.tree.all(jax.tree.map(jnp.array_equal, got, initial))


@cases
@pytest.mark.parametrize(
    ("dtype", "match"),
    [
        (jnp.int32, r"Invalid params: \['vector'\] has dtype int32; params must have a floating"),
        (jnp.bool_, r"Invalid params: \['vector'\] has dtype bool; params must have a floating"),
        (jnp.complex64, r"\['vector'\] has dtype complex64; complex params are not supported"),
    ],
    ids=["int32", "bool", "complex64"],
)
def test_non_float_params_are_rejected_at_init(case, dtype, match):
    """Integer params were left unchanged without a word; complex ones were updated by a
    rule that is not torch's (which views a complex tensor as pairs of reals)."""
    tx = build(case)
    params = case.params(make_params())
    params["vector"] = params["vector"].astype(dtype)
    with pytest.raises(TypeError, match=match):
        tx.init(params)
    with pytest.raises(TypeError, match=match):  # abstract params too
        jax.eval_shape(tx.init, params)


def _buffers(tree) -> list[tuple[str, int]]:
    """(path, device buffer address) of every concrete array leaf of ``tree``."""
    return [
        (jax.tree_util.keystr(path), leaf.unsafe_buffer_pointer())
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
        if isinstance(leaf, jax.Array)
    ]


def _assert_no_shared_buffers(**trees):
    owner: dict[int, str] = {}
    for name, tree in trees.items():
        for path, address in _buffers(tree):
            where = f"{name}{path}"
            assert address not in owner, f"{where} is the buffer of {owner[address]}"
            owner[address] = where


@cases
def test_state_leaves_own_their_buffers(case):
    """No state leaf is the buffer of another leaf, of a param or of a hyperparameter,
    with every numeric hyperparameter a concrete 0-d array (passed directly, or injected
    by ``optax.inject_hyperparams``), and params with a 0-d leaf; a jit that donates
    params and state then runs (it failed with "Attempt to donate the same buffer
    twice", or deleted the user's hyperparameter)."""
    numeric = {k: v for k, v in numeric_arguments(case.name).items() if not isinstance(v, tuple)}
    hyperparams = {k: jnp.asarray(v) for k, v in numeric.items()}
    params = case.params(make_params())
    _assert_no_shared_buffers(
        params=params, hyperparams=hyperparams, state=build(case, **hyperparams).init(params)
    )

    injected = optax.inject_hyperparams(get_optimizer(case.name), static_args=case.static_args)(
        **{**case.kwargs, **numeric}
    )
    state = injected.init(params)
    _assert_no_shared_buffers(params=params, state=state)
    step = jax.jit(make_step(injected, case.extra_args), donate_argnums=(0, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unusable donations are test_donation's concern
        new_params, state = step(params, state, make_grads(params, 0))
    _assert_no_shared_buffers(params=new_params, state=state)


@pytest.mark.parametrize("name", sorted(fast.SUPPORTED))
def test_fused_state_leaves_own_their_buffers(name):
    """``fast.fused(..., inject_hyperparams=True)`` with a 0-d param: its donated
    ``jit_step`` runs (it failed with "Attempt to donate the same buffer twice" for
    Adagrad), and integer params are refused at ``init``."""
    numeric = {k: v for k, v in numeric_arguments(name).items() if not isinstance(v, tuple)}
    kwargs = {**CASES_BY_NAME[name].kwargs, **numeric}
    optimizer = fast.fused(name, inject_hyperparams=True, **kwargs)
    params = {"scalar": jnp.asarray(1.5), "vector": jnp.linspace(-1.0, 1.0, 3)}
    state = optimizer.init(params)
    _assert_no_shared_buffers(params=params, state=state)
    params, state = fast.jit_step(optimizer)(params, make_grads(params, 0), state)
    _assert_no_shared_buffers(params=params, state=state)
    with pytest.raises(TypeError, match=r"Invalid params: \['vector'\] has dtype int32"):
        optimizer.init({**params, "vector": jnp.arange(3)})
