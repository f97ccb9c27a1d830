"""The torch parity harness every algorithm family reuses.

``run_parity`` starts a jaxopt_adv transform and a torch optimizer from identical
parameters (a matrix, a vector, a 4-D conv-shaped tensor and a scalar), replays one
recorded gradient stream through both, and after *every* step compares the parameters
and, through a field map (``{"mu": "exp_avg", ...}``), the optimizer state. In float64
(jax x64 + ``torch.float64``) the max relative error must be <= 1e-10; in float32,
<= 1e-5. The relative error of a quantity at step t is ``max|ours_t - torch_t|`` over
its elements divided by the largest magnitude the torch quantity has had up to step t
(its starting value included): a max-norm relative error that stays meaningful for
parameters and buffers that cross zero.

Set ``JAXOPT_ADV_PARITY_LOG=file.jsonl`` to record every run's max error (the figures in
``benchmarks/RESULTS.md`` come from it).

A learning-rate schedule can be applied on both sides: ours receives it as an optax
schedule, torch gets ``param_groups[i]['lr'] = schedule(t)`` before step ``t``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

from jaxopt_adv.grouping import GroupTree, ungroup_leaves
from tests.helpers.x64 import x64

TOLERANCE = {"float64": 1e-10, "float32": 1e-5}
# (parameters' dtype, torch's default dtype) of the parity runs of the optimizers whose
# step scalars torch rounds to its default dtype: float64 parameters under torch's
# default float32 (what users run) and under float64, and float32
PRECISIONS = [("float64", "float32"), ("float64", "float64"), ("float32", "float32")]
PARAM_SHAPES = {"matrix": (5, 4), "vector": (7,), "conv": (3, 2, 3, 3), "scalar": ()}
# a tree that repeats its shapes: per-leaf maths goes through jaxopt_adv.grouping's
# grouped path (one vmapped trace per shape)
REPEATED_SHAPES = {
    "matrix": (5, 4),
    "m2": (5, 4),
    "m3": (5, 4),
    "t1": (4, 5),
    "t2": (4, 5),
    "vector": (7,),
    "v2": (7,),
}
# Step-varying gradient scale: second-moment maxima move up and down (exercises AMSGrad).
GRADIENT_SCALES = (5.0, 1.0, 0.5, 2.0, 0.1, 3.0, 0.2, 1.5, 0.05, 4.0)

torch.set_num_threads(1)


def make_params(seed: int = 0, shapes: dict = PARAM_SHAPES) -> dict[str, np.ndarray]:
    """Identical float64 starting parameters for both frameworks."""
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=s) for k, s in shapes.items()}


def gradient_stream(
    num_steps: int, seed: int = 1, shapes: dict = PARAM_SHAPES
) -> list[dict[str, np.ndarray]]:
    """A recorded float64 gradient stream: a persistent direction plus noise, scaled per step.

    Every fourth step the first row of the matrix is exactly zero, which exercises the
    ``sign == 0`` / empty-accumulator branches (Rprop, Adagrad).
    """
    return drifting_stream(np.random.default_rng(seed), num_steps, shapes)


def drifting_stream(
    rng: np.random.Generator, num_steps: int, shapes: dict
) -> list[dict[str, np.ndarray]]:
    """:func:`gradient_stream`'s gradients drawn from ``rng`` (the zero row every fourth
    step is the matrix's, or the vector's in a tree without ``"matrix"``)."""
    drift = {k: rng.normal(size=s) for k, s in shapes.items()}
    stream = []
    for t in range(num_steps):
        scale = GRADIENT_SCALES[t % len(GRADIENT_SCALES)]
        g = {k: scale * (0.5 * drift[k] + rng.normal(size=s)) for k, s in shapes.items()}
        if t % 4 == 3:
            g["matrix" if "matrix" in g else "vector"][0] = 0.0
        stream.append(g)
    return stream


def sine_steps(
    tx: optax.GradientTransformation, params: Any, traces: list, num_steps: int = 4
) -> tuple[Any, Any]:
    """``num_steps`` jitted steps of ``tx`` (and ``optax.apply_updates``) from ``params``
    on the gradients ``sin(p (t + 1))``, ``t`` a traced step number in the params' dtype;
    each trace of the step appends to ``traces``. Returns the params and the state."""

    @jax.jit
    def step(params, state, t):
        traces.append(1)
        grads = jax.tree.map(lambda p: jnp.sin(p * (t + 1.0)), params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    state = tx.init(params)
    dtype = jax.tree.leaves(params)[0].dtype
    for t in range(num_steps):
        params, state = step(params, state, jnp.asarray(t, dtype))
    return params, state


@contextlib.contextmanager
def precision(dtype: str, torch_default: str | None = None) -> Iterator[None]:
    """jax x64 on for ``"float64"``, and torch's default dtype ``torch_default`` (default:
    ``dtype``; torch keeps some step scalars in it: compare with the transform's
    ``torch_default_dtype``)."""
    previous_torch = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, torch_default or dtype))
    try:
        with x64(dtype == "float64"):
            yield
    finally:
        torch.set_default_dtype(previous_torch)


def named_tuples(tree: Any) -> Iterator[tuple]:
    """Every NamedTuple node of a tree of tuples, lists and dicts (an optax state), outer
    ones first."""
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        yield tree
    if isinstance(tree, (tuple, list)):
        for child in tree:
            yield from named_tuples(child)
    elif isinstance(tree, dict):
        for child in tree.values():
            yield from named_tuples(child)


def find_state_field(state: Any, name: str) -> Any:
    """The value of the unique NamedTuple field ``name`` anywhere in an optax state."""
    found = [getattr(node, name) for node in named_tuples(state) if name in node._fields]
    if len(found) != 1:
        raise KeyError(f"state field {name!r} found {len(found)} times in {type(state)}")
    return found[0]


def max_abs(x: Any) -> float:
    """The largest finite magnitude in ``x`` (0 when there is none): a scale for errors."""
    x = np.abs(np.asarray(x, dtype=np.float64))
    return float(np.max(x[np.isfinite(x)], initial=0.0))


def absolute_error(ours: Any, reference: Any) -> float:
    """Largest elementwise ``|ours - reference|``; a NaN or an infinity on one side only is
    an infinite error (NaN on both sides, or the same infinity, is agreement), so a NaN can
    never hide behind a comparison that is always false."""
    ours = np.asarray(ours, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    assert ours.shape == reference.shape, (ours.shape, reference.shape)
    agree = (ours == reference) | (np.isnan(ours) & np.isnan(reference))
    with np.errstate(invalid="ignore"):
        diff = np.where(agree, 0.0, np.abs(ours - reference))
    return float(np.max(np.where(np.isnan(diff), np.inf, diff), initial=0.0))


@dataclasses.dataclass
class ParityReport:
    """Max relative errors over all steps: per compared quantity, and overall."""

    errors: dict[str, float]
    num_steps: int

    @property
    def max_error(self) -> float:
        return max(self.errors.values())


def torch_betas(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Our ``b1, b2`` keyword arguments as torch's ``betas`` tuple (defaults 0.9, 0.999)."""
    kwargs = dict(kwargs)
    return {"betas": (kwargs.pop("b1", 0.9), kwargs.pop("b2", 0.999)), **kwargs}


TorchFactory = Callable[[Sequence[torch.Tensor]], torch.optim.Optimizer]


def run_parity(
    ours: optax.GradientTransformation,
    torch_factory: TorchFactory,
    *,
    dtype: str = "float64",
    num_steps: int = 20,
    state_map: dict[str, str] | None = None,
    schedule: Callable[[Any], Any] | None = None,
    tolerance: float | None = None,
    check: bool = True,
    params: dict[str, np.ndarray] | None = None,
    stream: Sequence[dict[str, np.ndarray]] | None = None,
    torch_default: str | None = None,
    resume: tuple[int, int] | None = None,
) -> ParityReport:
    """Replay the gradient stream through both optimizers and compare after every step.

    Args:
      ours: the jaxopt_adv transform (built with ``schedule`` as its learning rate when
        one is given).
      torch_factory: ``params -> torch.optim.Optimizer``.
      dtype: ``"float64"`` or ``"float32"``.
      num_steps: number of steps (>= 20 for a parity claim).
      state_map: our state field name -> torch state key.
      schedule: learning rate as a function of the 0-based step, applied to torch through
        ``param_groups``; it must accept a Python int and a jax int32 scalar.
      tolerance: override of the max relative error allowed.
      check: assert the tolerance (``False`` only to measure a known mismatch).
      params: float64 starting parameters by name (default: :func:`make_params`).
      stream: float64 gradients by name, one dict per step (default:
        :func:`gradient_stream`; ``num_steps`` is then ignored).
      torch_default: torch's default dtype during the run (default: ``dtype``); the
        transform's ``torch_default_dtype`` must name the same one to match.
      resume: ``(count, torch_step)``: after the first step, every ``count`` field of our
        state is set to ``count`` and torch's ``state["step"]`` to ``torch_step``, as in a
        run that goes on after that many steps (torch's float32 counter stops at 2**24).

    Returns:
      The report of max relative errors.
    """
    state_map = state_map or {}
    tolerance = TOLERANCE[dtype] if tolerance is None else tolerance
    start = make_params() if params is None else params
    names = list(start)
    stream = gradient_stream(num_steps) if stream is None else stream
    errors: dict[str, float] = {}
    scales = {f"param:{k}": max_abs(v) for k, v in start.items()}

    def record(key: str, ours_value: Any, reference: Any) -> None:
        scales[key] = max(scales.get(key, 0.0), max_abs(reference))
        error = absolute_error(ours_value, reference) / max(scales[key], 1e-30)
        errors[key] = max(errors.get(key, 0.0), error)

    with precision(dtype, torch_default):
        np_dtype = np.dtype(dtype)
        params = {k: jnp.asarray(v, np_dtype) for k, v in start.items()}
        state = ours.init(params)

        @jax.jit
        def step(grads, state, params):
            updates, state = ours.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        torch_dtype = getattr(torch, dtype)
        t_params = [torch.tensor(start[k], dtype=torch_dtype, requires_grad=True) for k in names]
        optimizer = torch_factory(t_params)

        for t, g in enumerate(stream):
            grads = {k: jnp.asarray(v, np_dtype) for k, v in g.items()}
            params, state = step(grads, state, params)
            for p, k in zip(t_params, names, strict=True):
                p.grad = torch.tensor(g[k], dtype=torch_dtype)
            if schedule is not None:
                for group in optimizer.param_groups:
                    group["lr"] = float(schedule(t))
            optimizer.step()
            if resume is not None and t == 0:
                state = optax.tree.set(state, count=jnp.asarray(resume[0], jnp.int32))
                for p in t_params:
                    optimizer.state[p]["step"].fill_(resume[1])

            for p, k in zip(t_params, names, strict=True):
                record(f"param:{k}", params[k], p.detach().numpy())
            for field, torch_key in state_map.items():
                value = find_state_field(state, field)
                if isinstance(value, GroupTree):  # a state kept stacked per shape group
                    value = ungroup_leaves(value, jax.tree.structure(params))
                for p, k in zip(t_params, names, strict=True):
                    ours_value = value[k] if isinstance(value, dict) else value
                    reference = optimizer.state[p][torch_key]
                    record(f"state:{field}:{k}", ours_value, reference.numpy())
            if check:
                worst = max(errors, key=errors.get)
                assert errors[worst] <= tolerance, (
                    f"step {t + 1}: {worst} relative error {errors[worst]:.3e} > {tolerance:.0e}"
                )
    report = ParityReport(errors, len(stream))
    _log(report, dtype)
    return report


def _log(report: ParityReport, dtype: str) -> None:
    """Append the report to ``$JAXOPT_ADV_PARITY_LOG`` (JSON lines) when it is set."""
    path = os.environ.get("JAXOPT_ADV_PARITY_LOG")
    if path:
        record = {
            "test": os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0],
            "dtype": dtype,
            "steps": report.num_steps,
            "max_error": report.max_error,
        }
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")
