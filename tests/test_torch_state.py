"""torch optimizer / scheduler checkpoints resume in JAX, and JAX states resume in torch.

Each case: torch takes 7 steps and is checkpointed (``torch.save``); the JAX transform
loads the checkpoint and both sides take 12 more steps from the same gradients, compared
after every step; then the JAX state is exported, a fresh torch optimizer loads it and
both take 5 more steps, compared after every step (float64, relative 1e-10).

Compiled with ``quick_compilation`` (``tests/helpers/quick.py``: why that is safe here).
"""

from __future__ import annotations

import copy
import io

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import jaxopt_adv
from jaxopt_adv import fast
from jaxopt_adv.interop import (
    export_torch_optimizer_state,
    export_torch_scheduler_state,
    load_torch_optimizer_state,
    load_torch_scheduler_state,
)
from jaxopt_adv.torch import lr_scheduler
from tests.harness import TOLERANCE, gradient_stream, make_params, precision

pytestmark = pytest.mark.usefixtures("quick_compilation")

T = jaxopt_adv.torch
BEFORE, RESUMED, BACK = 7, 12, 5  # torch steps, then JAX steps, then torch again
RNG = np.random.default_rng(20)
B1, B2 = (float(x) for x in RNG.uniform([0.8, 0.95], [0.95, 0.9999]))
WD = float(RNG.uniform(0.0, 0.1))

# id: (our factory, our kwargs, torch class, torch kwargs)
CASES = {
    "sgd": (T.sgd, {"learning_rate": 0.05}, "SGD", {"lr": 0.05}),
    "sgd_momentum": (
        T.sgd,
        {"learning_rate": 0.05, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01},
        "SGD",
        {"lr": 0.05, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01},
    ),
    "sgd_nesterov": (
        T.sgd,
        {"learning_rate": 0.05, "momentum": 0.8, "nesterov": True},
        "SGD",
        {"lr": 0.05, "momentum": 0.8, "nesterov": True},
    ),
    "adam": (T.adam, {"learning_rate": 0.01}, "Adam", {"lr": 0.01}),
    "adam_random": (
        T.adam,
        {"learning_rate": 0.01, "b1": B1, "b2": B2, "weight_decay": WD, "amsgrad": True},
        "Adam",
        {"lr": 0.01, "betas": (B1, B2), "weight_decay": WD, "amsgrad": True},
    ),
    "adamw_amsgrad": (
        T.adamw,
        {"learning_rate": 0.01, "amsgrad": True, "weight_decay": 0.1},
        "AdamW",
        {"lr": 0.01, "amsgrad": True, "weight_decay": 0.1},
    ),
    "adamax": (T.adamax, {"learning_rate": 0.01}, "Adamax", {"lr": 0.01}),
    "nadam": (T.nadam, {"learning_rate": 0.01}, "NAdam", {"lr": 0.01}),
    "radam": (T.radam, {"learning_rate": 0.01}, "RAdam", {"lr": 0.01}),
    "rmsprop_centered": (
        T.rmsprop,
        {"learning_rate": 0.01, "momentum": 0.5, "centered": True},
        "RMSprop",
        {"lr": 0.01, "momentum": 0.5, "centered": True},
    ),
    "rmsprop": (T.rmsprop, {"learning_rate": 0.01}, "RMSprop", {"lr": 0.01}),
    "adagrad": (
        T.adagrad,
        {"learning_rate": 0.05, "lr_decay": 0.01},
        "Adagrad",
        {"lr": 0.05, "lr_decay": 0.01},
    ),
    "adadelta": (T.adadelta, {"learning_rate": 0.5}, "Adadelta", {"lr": 0.5}),
    "asgd": (
        T.asgd,
        {"learning_rate": 0.05, "lambd": 0.01, "t0": 3.0},
        "ASGD",
        {"lr": 0.05, "lambd": 0.01, "t0": 3.0},
    ),
    "rprop": (T.rprop, {"learning_rate": 0.01}, "Rprop", {"lr": 0.01}),
    "adafactor": (T.adafactor, {"learning_rate": 0.01}, "Adafactor", {"lr": 0.01}),
    "sparse_adam": (T.sparse_adam, {"learning_rate": 0.01}, "SparseAdam", {"lr": 0.01}),
    "muon": (T.muon, {"learning_rate": 0.01}, "Muon", {"lr": 0.01}),
}


def case_params(name: str) -> dict[str, np.ndarray]:
    params = make_params()
    if name == "muon":  # Muon takes matrices only
        return {"matrix": params["matrix"], "wide": params["matrix"].T.copy()}
    return params


def case_grads(name: str, params: dict) -> list[dict[str, np.ndarray]]:
    stream = gradient_stream(BEFORE + RESUMED + BACK)
    if name == "muon":
        return [{"matrix": g["matrix"], "wide": 0.5 * g["matrix"].T} for g in stream]
    return [{k: g[k] for k in params} for g in stream]


def as_torch(tree: dict) -> list[torch.Tensor]:
    """The leaves in jax.tree.leaves order, as torch leaf tensors."""
    return [torch.tensor(np.asarray(x), requires_grad=True) for x in jax.tree.leaves(tree)]


def torch_step(opt: torch.optim.Optimizer, tensors: list, grads: dict, sparse: bool) -> None:
    for p, g in zip(tensors, jax.tree.leaves(grads), strict=True):
        g = torch.tensor(g)
        p.grad = g.to_sparse() if sparse else g
    opt.step()


def saved(state_dict: dict) -> dict:
    """``state_dict`` after a torch.save / torch.load round trip, as a checkpoint is."""
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def relative(ours, tensors: list) -> float:
    ours = [np.asarray(x) for x in jax.tree.leaves(ours)]
    theirs = [t.detach().numpy() for t in tensors]
    scale = max(float(np.max(np.abs(t))) for t in theirs)
    return max(float(np.max(np.abs(a - b))) for a, b in zip(ours, theirs, strict=True)) / scale


def run_round_trip(tx, torch_factory, params, grads, *, sparse=False, step=None) -> list:
    """The per-step relative errors: JAX resumed from torch, then torch from JAX."""
    tensors = as_torch(params)
    opt = torch_factory(tensors)
    for g in grads[:BEFORE]:
        torch_step(opt, tensors, g, sparse)
    checkpoint = opt.state_dict()  # live: its tensors are torch's, stepped in place below
    treedef = jax.tree.structure(params)
    jparams = treedef.unflatten([jnp.asarray(t.detach().numpy()) for t in tensors])
    state = load_torch_optimizer_state(checkpoint, tx, jparams)

    @jax.jit
    def jax_step(p, s, g):
        updates, s = tx.update(g, s, p)
        return optax.apply_updates(p, updates), s

    errors = []
    for g in grads[BEFORE : BEFORE + RESUMED]:
        jparams, state = jax_step(jparams, state, jax.tree.map(jnp.asarray, g))
        torch_step(opt, tensors, g, sparse)
        errors.append(relative(jparams, tensors))
    exported = saved(export_torch_optimizer_state(state, tx, jparams, step=step))
    back = as_torch(jparams)
    opt_back = torch_factory(back)
    opt_back.load_state_dict(exported)
    for g in grads[BEFORE + RESUMED :]:
        jparams, state = jax_step(jparams, state, jax.tree.map(jnp.asarray, g))
        torch_step(opt_back, back, g, sparse)
        errors.append(relative(jparams, back))
    return errors


# the optimizers whose state keeps no step count: export needs it
NO_COUNT = {"rmsprop", "rmsprop_centered", "adadelta", "rprop"}


# also under torch's default dtype float32 (float32 params and tensors, float32 steps)
FLOAT32 = ("adam_random", "nadam", "asgd", "sgd_momentum", "sparse_adam", "adafactor")


@pytest.mark.parametrize(
    ("name", "dtype"),
    [(n, "float64") for n in sorted(CASES)] + [(n, "float32") for n in FLOAT32],
)
def test_checkpoint_round_trip(name, dtype):
    factory, ours, torch_class, theirs = CASES[name]
    # torch at its default dtype float32, what users run (the transforms' default
    # torch_default_dtype="float32" reproduces its float32 step scalars)
    with precision(dtype, torch_default="float32"):
        params = {k: v.astype(dtype) for k, v in case_params(name).items()}
        grads = [{k: v.astype(dtype) for k, v in g.items()} for g in case_grads(name, params)]
        errors = run_round_trip(
            factory(**ours),
            lambda ps: getattr(torch.optim, torch_class)(ps, **theirs),
            params,
            grads,
            sparse=name == "sparse_adam",
            step=BEFORE + RESUMED if name in NO_COUNT else None,
        )
    assert len(errors) == RESUMED + BACK
    assert max(errors) <= TOLERANCE[dtype], errors


def test_partition_groups_round_trip():
    """Two torch param groups (decay / no decay) are an optax.partition of two AdamWs."""
    labels = {"conv": "decay", "matrix": "decay", "scalar": "plain", "vector": "plain"}
    tx = optax.partition(
        {"decay": T.adamw(0.01, weight_decay=0.1), "plain": T.adamw(0.02, weight_decay=0.0)},
        labels,
    )

    def torch_factory(tensors):  # leaves: conv, matrix, scalar, vector
        return torch.optim.AdamW(
            [
                {"params": tensors[:2], "weight_decay": 0.1},
                {"params": tensors[2:], "lr": 0.02, "weight_decay": 0.0},
            ],
            lr=0.01,
        )

    with precision("float64"):
        params = make_params()
        errors = run_round_trip(tx, torch_factory, params, case_grads("adamw", params))
    assert max(errors) <= TOLERANCE["float64"], errors


def test_chain_with_clipping_and_fused_flat_state():
    """The optimizer inside optax.chain, and a FusedOptimizer's flat state, both convert."""
    with precision("float64"):
        params = make_params()
        grads = case_grads("adam", params)
        chained = optax.chain(optax.identity(), T.adam(0.01))
        errors = run_round_trip(chained, lambda ps: torch.optim.Adam(ps, lr=0.01), params, grads)
        assert max(errors) <= TOLERANCE["float64"], errors
        opt = fast.fused("torch.adam", learning_rate=0.01, flat_state=True, kernel=False)
        jparams = jax.tree.map(jnp.asarray, params)
        state = opt.init(jparams)
        for g in grads[:3]:
            jparams, state = opt.step(jparams, jax.tree.map(jnp.asarray, g), state)
        exported = export_torch_optimizer_state(state, opt, jparams)
        assert exported["state"][0]["step"].item() == 3
        reloaded = load_torch_optimizer_state(exported, opt, jparams)
        for a, b in zip(jax.tree.leaves(reloaded), jax.tree.leaves(state), strict=True):
            np.testing.assert_array_equal(a, b)


def adam_checkpoint(params, **kwargs) -> dict:
    tensors = as_torch(params)
    opt = torch.optim.Adam(tensors, **kwargs)
    torch_step(opt, tensors, jax.tree.map(np.ones_like, params), False)
    return opt.state_dict()


@pytest.mark.parametrize(
    ("tx", "match"),
    [
        (T.sgd(0.1, momentum=0.9), "not a torch.optim.SGD"),
        (T.adamw(1e-3, weight_decay=0.0), "decoupled_weight_decay"),
        (T.adam(1e-3, b1=0.8), "betas"),
        (T.lbfgs(), "LBFGS checkpoints are not supported"),
        (optax.adam(1e-3), "expected exactly one"),
    ],
)
def test_refuses_another_optimizer(tx, match):
    params = make_params()
    with pytest.raises(ValueError, match=match):
        load_torch_optimizer_state(adam_checkpoint(params, lr=1e-3), tx, params)


def test_refuses_other_shapes_and_groups():
    params = make_params()
    checkpoint = adam_checkpoint(params, lr=1e-3)
    tx = T.adam(1e-3)
    other = {**params, "matrix": np.zeros((4, 5))}
    with pytest.raises(ValueError, match=r"shape \(5, 4\) for a state leaf of shape \(4, 5\)"):
        load_torch_optimizer_state(checkpoint, tx, other)
    with pytest.raises(ValueError, match="holds parameters"):
        load_torch_optimizer_state(checkpoint, tx, {k: params[k] for k in ("conv", "matrix")})
    two = copy.deepcopy(checkpoint)
    two["param_groups"] = [
        {**two["param_groups"][0], "params": [0, 1]},
        {**two["param_groups"][0], "params": [2, 3]},
    ]
    with pytest.raises(ValueError, match="2 param_groups, the transform 1"):
        load_torch_optimizer_state(two, tx, params)
    with pytest.raises(ValueError, match="pass step="):
        export_torch_optimizer_state(T.rprop().init(params), T.rprop(), params)


def test_linear_layout_transposes_the_state():
    """A Linear weight kept as torch's transpose (NNX kernels) converts with layout."""
    with precision("float64"):
        params = {"w": make_params()["matrix"]}
        tensors = as_torch(params)
        opt = torch.optim.Adafactor(tensors, lr=0.01)
        grads = case_grads("adam", make_params())
        for g in grads[:BEFORE]:
            torch_step(opt, tensors, {"w": g["matrix"]}, False)
        jparams = {"w": jnp.asarray(tensors[0].detach().numpy().T)}
        tx = T.adafactor(0.01)
        layout = {"w": "linear"}
        state = load_torch_optimizer_state(opt.state_dict(), tx, jparams, layout=layout)
        errors = []
        for g in grads[BEFORE : BEFORE + RESUMED]:
            updates, state = tx.update({"w": jnp.asarray(g["matrix"].T)}, state, jparams)
            jparams = optax.apply_updates(jparams, updates)
            torch_step(opt, tensors, {"w": g["matrix"]}, False)
            errors.append(relative({"w": jparams["w"].T}, tensors))
        exported = export_torch_optimizer_state(state, tx, jparams, layout=layout)
        np.testing.assert_allclose(
            exported["state"][0]["row_var"], opt.state[tensors[0]]["row_var"], rtol=1e-10
        )
    assert max(errors) <= TOLERANCE["float64"], errors


def test_sequential_lr_scheduler_round_trip():
    """AdamW + warm-up then cosine (SequentialLR): optimizer and scheduler both resume."""
    base, warm, total = 0.02, 4, 30

    def torch_pair(tensors):
        opt = torch.optim.AdamW(tensors, lr=base)
        scheduler = torch.optim.lr_scheduler.SequentialLR(
            opt,
            [
                torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=warm),
                torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total - warm),
            ],
            milestones=[warm],
        )
        return opt, scheduler

    schedule = T.sequential_lr(
        [
            lr_scheduler.linear_lr(base, start_factor=0.1, total_iters=warm),
            lr_scheduler.cosine_annealing_lr(base, T_max=total - warm),
        ],
        [warm],
    )
    tx = T.adamw(schedule)
    with precision("float64"):
        params = make_params()
        grads = case_grads("adamw", params)
        tensors = as_torch(params)
        opt, scheduler = torch_pair(tensors)
        for g in grads[:BEFORE]:
            torch_step(opt, tensors, g, False)
            scheduler.step()
        checkpoint = saved({"opt": opt.state_dict(), "sched": scheduler.state_dict()})
        jparams = jax.tree.structure(params).unflatten(
            [jnp.asarray(t.detach().numpy()) for t in tensors]
        )
        state = load_torch_optimizer_state(checkpoint["opt"], tx, jparams)
        state = load_torch_scheduler_state(checkpoint["sched"], tx, state, jparams)
        errors = []
        for g in grads[BEFORE : BEFORE + RESUMED]:
            updates, state = tx.update(jax.tree.map(jnp.asarray, g), state, jparams)
            jparams = optax.apply_updates(jparams, updates)
            torch_step(opt, tensors, g, False)
            scheduler.step()
            errors.append(relative(jparams, tensors))
        exported = export_torch_scheduler_state(state, tx, jparams, milestones=[warm])
        theirs = scheduler.state_dict()
        assert exported["last_epoch"] == theirs["last_epoch"] == BEFORE + RESUMED
        assert [s["last_epoch"] for s in exported["_schedulers"]] == [
            s["last_epoch"] for s in theirs["_schedulers"]
        ]
        back = as_torch(jparams)
        opt_back, scheduler_back = torch_pair(back)
        opt_back.load_state_dict(export_torch_optimizer_state(state, tx, jparams))
        scheduler_back.load_state_dict(saved(exported))
        for g in grads[BEFORE + RESUMED :]:
            updates, state = tx.update(jax.tree.map(jnp.asarray, g), state, jparams)
            jparams = optax.apply_updates(jparams, updates)
            torch_step(opt_back, back, g, False)
            scheduler_back.step()
            errors.append(relative(jparams, back))
    assert max(errors) <= TOLERANCE["float64"], errors


def test_reduce_lr_on_plateau_round_trip():
    """SGD + ReduceLROnPlateau: best, num_bad_epochs, cooldown_counter and the lr resume."""
    losses = [1.0, 0.9, 0.95, 0.97, 0.96, 0.99, 0.98, 0.97, 0.99, 1.0, 0.5, 0.6, 0.7, 0.8]
    losses += [0.9, 0.95, 0.96, 0.97, 0.98, 0.99, 1.0, 1.0, 1.0, 1.0]
    kwargs = {"factor": 0.5, "patience": 2, "cooldown": 1}
    tx = optax.chain(T.sgd(0.1, momentum=0.9), T.reduce_lr_on_plateau(**kwargs))

    def torch_pair(tensors):
        opt = torch.optim.SGD(tensors, lr=0.1, momentum=0.9)
        return opt, torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **kwargs)

    with precision("float64"):
        params = make_params()
        grads = case_grads("sgd", params)
        tensors = as_torch(params)
        opt, scheduler = torch_pair(tensors)
        for k, g in enumerate(grads[:BEFORE]):
            torch_step(opt, tensors, g, False)
            scheduler.step(losses[k])
        jparams = jax.tree.structure(params).unflatten(
            [jnp.asarray(t.detach().numpy()) for t in tensors]
        )
        state = load_torch_optimizer_state(saved(opt.state_dict()), tx, jparams)
        state = load_torch_scheduler_state(saved(scheduler.state_dict()), tx, state, jparams)
        errors = []
        for k in range(BEFORE, BEFORE + RESUMED):
            g = jax.tree.map(jnp.asarray, grads[k])
            updates, state = tx.update(g, state, jparams, value=jnp.asarray(losses[k]))
            jparams = optax.apply_updates(jparams, updates)
            torch_step(opt, tensors, grads[k], False)
            scheduler.step(losses[k])
            errors.append(relative(jparams, tensors))
        exported = export_torch_scheduler_state(state, tx, jparams)
        theirs = scheduler.state_dict()
        for key in ("last_epoch", "best", "num_bad_epochs", "cooldown_counter"):
            assert exported[key] == theirs[key], key
        assert exported["_last_lr"] == pytest.approx(theirs["_last_lr"], rel=1e-12)
        assert theirs["_last_lr"][0] < 0.1  # the plateau did reduce the lr
        back = as_torch(jparams)
        opt_back, scheduler_back = torch_pair(back)
        opt_back.load_state_dict(export_torch_optimizer_state(state, tx, jparams))
        scheduler_back.load_state_dict(exported)
        for k in range(BEFORE + RESUMED, BEFORE + RESUMED + BACK):
            g = jax.tree.map(jnp.asarray, grads[k])
            updates, state = tx.update(g, state, jparams, value=jnp.asarray(losses[k]))
            jparams = optax.apply_updates(jparams, updates)
            torch_step(opt_back, back, grads[k], False)
            scheduler_back.step(losses[k])
            errors.append(relative(jparams, back))
    assert max(errors) <= TOLERANCE["float64"], errors


def test_nnx_model_order_and_layout():
    """An NNX MLP's parameters (bias before kernel, kernels transposed) resume torch's
    AdamW run with torch_param_order's order and layout; without them the load fails."""
    from flax import nnx

    from jaxopt_adv.interop import load_torch_state_dict, torch_param_order
    from jaxopt_adv.models import MLP
    from jaxopt_adv.models.torch_twins import TorchMLP

    with precision("float64"):
        torch.manual_seed(0)
        torch_model = TorchMLP(6, (5,), 3, dropout_rate=0.0)
        opt = torch.optim.AdamW(torch_model.parameters(), lr=0.01)
        x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))

        def torch_loss():
            opt.zero_grad()
            torch.nn.functional.cross_entropy(torch_model(x), y).backward()
            opt.step()

        for _ in range(BEFORE):
            torch_loss()
        model = MLP(6, (5,), 3, dropout_rate=0.0, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
        load_torch_state_dict(model, torch_model.state_dict())
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        tx = T.adamw(0.01)
        with pytest.raises(ValueError, match="shape"):
            load_torch_optimizer_state(opt.state_dict(), tx, params)
        order, layout = torch_param_order(model)
        state = load_torch_optimizer_state(opt.state_dict(), tx, params, order=order, layout=layout)
        xj, yj = jnp.asarray(x.numpy()), jnp.asarray(y.numpy())

        @jax.jit
        def step(params, state):
            def loss(p):
                logits = nnx.merge(graphdef, p, rest)(xj)
                return optax.softmax_cross_entropy_with_integer_labels(logits, yj).mean()

            updates, state = tx.update(jax.grad(loss)(params), state, params)
            return optax.apply_updates(params, updates), state

        for _ in range(RESUMED):
            params, state = step(params, state)
            torch_loss()
        nnx.update(model, params)
        ours = jaxopt_adv.interop.export_torch_state_dict(model)
        theirs = {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}
        for key, value in theirs.items():
            np.testing.assert_allclose(ours[key], value, rtol=1e-10, atol=1e-12)
        exported = export_torch_optimizer_state(state, tx, params, order=order, layout=layout)
        assert exported["param_groups"][0]["params"] == [0, 1, 2, 3]
        np.testing.assert_allclose(
            exported["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"], rtol=1e-9
        )
