"""Run in a subprocess with 8 host CPU devices: every registered optimizer on sharded params.

For each case and each layout (rows, columns, both mesh axes), the sharded run must give
the single-device numbers (float32, <= 1e-6 relative), and every param-shaped state leaf
must carry its param's sharding, after eager init, after jitted steps, after init under a
plain ``jax.jit`` (no ``out_shardings``; inside ``jax.set_mesh``, which jax 0.10 requires
for a jitted function whose outputs do not depend on its inputs' values), and in the
abstract state of ``jax.eval_shape(tx.init, <sharded ShapeDtypeStructs>)`` (whose leaves
carry shardings on the mesh's ``AbstractMesh``; ``jax.make_mesh`` makes Explicit axes).
Prints one JSON line per failure and exits non-zero if there is any.

XLA compiles quickly (``tests/helpers/quick.py``'s settings, in ``XLA_FLAGS``): the check
compares placements and the sharded run with the single-device run of the same compilation
settings, and its run time is mostly compilation (its three groups and zero_check: 104 ->
51 CPU s with the code generator).
The steps run as one jitted ``lax.scan`` (a scan's carry must keep its type, sharding
included), so one compilation per layout gives the numbers, the state after steps and the
scan from the eager init, and the scan from the jitted init reuses it (the 28 registered
optimizers in one process: 195.4 -> 110.5 s of CPU, against a jitted step, a scan with
gradients made inside it and the jitted init per layout).
"""

from __future__ import annotations

import json
import os
import sys

if __name__ == "__main__":  # not on import (pytest's doctest collection imports this
    # module in its workers, whose subprocesses would inherit 8 devices)
    from tests.helpers.quick import quick_xla_flags

    os.environ["XLA_FLAGS"] = quick_xla_flags("--xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from jaxopt_adv import get_optimizer  # noqa: E402
from tests.cases import CASES  # noqa: E402
from tests.helpers.trees import random_tree  # noqa: E402

SHAPES = {"matrix": (16, 8), "conv": (8, 8, 3, 3), "vector": (16,), "scalar": ()}
NUM_STEPS = 3


def layouts():
    mesh_1d = jax.make_mesh((8,), ("x",))
    mesh_2d = jax.make_mesh((4, 2), ("a", "b"))
    return {
        "rows": (mesh_1d, P("x", None), P("x")),
        "cols": (mesh_1d, P(None, "x"), P("x")),
        "both": (mesh_2d, P("a", "b"), P(("a", "b"))),
    }


def make_tree(seed: int, case):
    """A random tree of ``SHAPES``, as ``case``'s optimizer takes it (matrices for Muon)."""
    return case.params(random_tree(seed, SHAPES))


def case_shapes(case) -> dict[str, tuple[int, ...]]:
    """{param name: shape} of ``case``'s tree."""
    return {k: jnp.shape(v) for k, v in make_tree(0, case).items()}


def shardings(mesh, matrix_spec, vector_spec, case):
    """The layout's sharding of every param; a vector reshaped to ``(1, n)`` is sharded
    along its ``n``."""
    if case.matrices_only:
        vector_spec = P(None, *vector_spec)
    return {
        "matrix": NamedSharding(mesh, matrix_spec),
        "conv": NamedSharding(mesh, matrix_spec),
        "vector": NamedSharding(mesh, vector_spec),
        "scalar": NamedSharding(mesh, P()),
    }


def train(tx, case):
    """``NUM_STEPS`` steps in one jitted ``lax.scan`` over stacked gradients: from
    ``(params, state, grads)`` to ``(params, state)``. A scan's carry must keep its type
    (its sharding included, in Explicit mode), so a state that changes type fails here."""

    def step(carry, grads):
        params, state = carry
        updates, state = tx.update(grads, state, params, **case.extra_args)
        return (optax.apply_updates(params, updates), state), None

    return jax.jit(lambda params, state, grads: jax.lax.scan(step, (params, state), grads)[0])


def stacked_grads(case, target=None):
    """The ``NUM_STEPS`` gradient trees stacked along a new leading axis, each leaf placed
    like its param along the others (``target``: the params' shardings; ``None``: one
    device)."""
    trees = [make_tree(100 + t, case) for t in range(NUM_STEPS)]
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)
    if target is None:
        return stacked
    return {
        k: jax.device_put(leaf, NamedSharding(target[k].mesh, P(None, *target[k].spec)))
        for k, leaf in stacked.items()
    }


def param_shaped_leaves(state, shapes):
    """(param name, leaf) for every state leaf stored under a params key with its shape."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        key = path[-1]
        name = getattr(key, "key", None)
        if name in shapes and jnp.shape(leaf) == shapes[name]:
            yield name, leaf


def padded_spec(sharding, ndim: int) -> tuple:
    spec = tuple(sharding.spec)
    return spec + (None,) * (ndim - len(spec))


def same_abstract_sharding(sharding, target, ndim: int) -> bool:
    """Whether an abstract value's sharding places it like the concrete ``target``."""
    return (
        isinstance(sharding, NamedSharding)
        and sharding.mesh == target.mesh.abstract_mesh
        and padded_spec(sharding, ndim) == padded_spec(target, ndim)
    )


def same_sharding(sharding, target, ndim: int) -> bool:
    return sharding.is_equivalent_to(target, ndim)


def check_state_shardings(
    state, target, when: str, case, layout, failures, same=same_sharding
) -> int:
    """Record every param-shaped leaf of ``state`` that ``same`` does not place like its
    param; return how many were compared."""
    compared = 0
    for name, leaf in param_shaped_leaves(state, case_shapes(case)):
        compared += 1
        if not same(leaf.sharding, target[name], len(leaf.shape)):
            failures.append(
                {
                    "case": case.name,
                    "layout": layout,
                    "leaf": name,
                    "when": when,
                    "sharding": str(leaf.sharding),
                }
            )
    return compared


def check_init_placements(tx, case, layout, mesh, target, init_state, failures) -> tuple:
    """Abstract init (eval_shape) and init under a plain jit place state like params;
    return how many param-shaped leaves were compared, and the jitted init's state."""
    compared = 0
    abstract_params = {
        k: jax.ShapeDtypeStruct(shape, jnp.float32, sharding=target[k])
        for k, shape in case_shapes(case).items()
    }
    try:
        abstract = jax.eval_shape(tx.init, abstract_params)
    except Exception as error:  # report it like any other failure, then go on
        failures.append({"case": case.name, "layout": layout, "problem": f"eval_shape: {error!r}"})
    else:
        concrete_avals = [(x.shape, x.dtype) for x in jax.tree.leaves(init_state)]
        if (
            jax.tree.structure(abstract) != jax.tree.structure(init_state)
            or [(x.shape, x.dtype) for x in jax.tree.leaves(abstract)] != concrete_avals
        ):
            failures.append(
                {"case": case.name, "layout": layout, "problem": "eval_shape state != eager init"}
            )
        compared += check_state_shardings(
            abstract, target, "eval_shape init", case, layout, failures, same_abstract_sharding
        )
    with jax.set_mesh(mesh):
        jitted = jax.jit(tx.init)(jax.tree.map(jax.device_put, make_tree(0, case), target))
    compared += check_state_shardings(jitted, target, "jit init", case, layout, failures)
    return compared, jitted


def state_types(state) -> list[str]:
    """Each state leaf's type, sharding included (``float32[16@x,1]``)."""
    return [str(jax.typeof(leaf)) for leaf in jax.tree.leaves(state)]


def check_state_types(case, layout, states, failures) -> None:
    """Explicit-mode sharding is part of an array's type: the state from ``jax.jit(init)``
    and after the scanned steps (``states``: "jit init", "after steps") must have the
    types of the state from ``init`` ("init")."""
    eager = states["init"]
    expected = state_types(eager)
    for when in ("jit init", "after steps"):
        if state_types(states[when]) != expected:
            changed = [
                f"{jax.tree_util.keystr(path)}: {a} -> {b}"
                for (path, _), a, b in zip(
                    jax.tree_util.tree_leaves_with_path(eager),
                    expected,
                    state_types(states[when]),
                    strict=True,
                )
                if a != b
            ]
            failures.append(
                {"case": case.name, "layout": layout, "types": when, "changed": changed}
            )


def scan_from(train_fn, mesh, params, state, grads, when: str, case, layout, failures):
    """``train_fn`` run inside ``jax.set_mesh`` from ``state`` (init "when"); its
    ``(params, state)``, or ``None`` with the error recorded."""
    try:
        with jax.set_mesh(mesh):
            return train_fn(params, state, grads)
    except Exception as error:  # report it like any other failure, then go on
        failures.append(
            {"case": case.name, "layout": layout, "scan from": when, "error": repr(error)[:300]}
        )
        return None


def check_numbers(params, reference, target, case, layout, failures) -> None:
    """The sharded run's params equal the single-device run's and keep their sharding."""
    for k in SHAPES:
        ref = np.asarray(reference[k], np.float64)
        err = np.max(np.abs(np.asarray(params[k], np.float64) - ref), initial=0.0)
        rel = err / max(np.max(np.abs(ref), initial=0.0), 1e-30)
        if not rel <= 1e-6:
            failures.append({"case": case.name, "layout": layout, "param": k, "rel": rel})
        if not params[k].sharding.is_equivalent_to(target[k], params[k].ndim):
            failures.append(
                {
                    "case": case.name,
                    "layout": layout,
                    "param": k,
                    "problem": "param lost its sharding",
                }
            )


def check_case(case, failures) -> int:
    """Check one optimizer; return how many param-shaped state leaves were compared.

    Per layout, one compiled scan (:func:`train`) gives the numbers, the state after
    steps and the scan from the eager init; the scan from the jitted init reuses its
    compilation when the two inits have the same types (they must)."""
    tx = get_optimizer(case.name)(**case.kwargs)
    train_fn = train(tx, case)
    start = make_tree(0, case)
    start_state = tx.init(start)
    # a flat state (L-BFGS's) holds no leaf shaped like a param of one or more dimensions,
    # only per-leaf scalars such as its offsets
    shapes = case_shapes(case)
    if case.flat_state and any(jnp.ndim(x) for _, x in param_shaped_leaves(start_state, shapes)):
        failures.append({"case": case.name, "problem": "param-shaped leaves in a flat state"})
    reference, _ = train_fn(start, start_state, stacked_grads(case))
    compared = 0
    for layout, (mesh, matrix_spec, vector_spec) in layouts().items():
        target = shardings(mesh, matrix_spec, vector_spec, case)
        params = jax.tree.map(jax.device_put, start, target)
        init_state = tx.init(params)
        grads = stacked_grads(case, target)
        done = scan_from(train_fn, mesh, params, init_state, grads, "init", case, layout, failures)
        placed, jitted = check_init_placements(tx, case, layout, mesh, target, init_state, failures)
        compared += placed
        scan_from(train_fn, mesh, params, jitted, grads, "jit init", case, layout, failures)
        compared += check_state_shardings(init_state, target, "init", case, layout, failures)
        if done is None:
            continue
        check_numbers(done[0], reference, target, case, layout, failures)
        states = {"init": init_state, "jit init": jitted, "after steps": done[1]}
        check_state_types(case, layout, states, failures)
        compared += check_state_shardings(done[1], target, "after steps", case, layout, failures)
    return compared


def main(names: list[str]) -> int:
    assert jax.device_count() == 8, jax.devices()
    failures: list[dict] = []
    checked = 0
    for case in CASES:
        if names and case.name not in names:
            continue
        before = len(failures)
        compared = check_case(case, failures)
        if compared == 0 and not case.flat_state:
            failures.append({"case": case.name, "problem": "no param-shaped state leaf"})
        checked += 1
        print(f"{case.name}: {len(failures) - before} failures", file=sys.stderr, flush=True)
    for failure in failures:
        print(json.dumps(failure, default=str))
    print(f"checked {checked} optimizers x {len(layouts())} layouts, {len(failures)} failures")
    return 1 if failures or not checked else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
