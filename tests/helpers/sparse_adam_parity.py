"""SparseAdam's torch parity run (``torch.optim.SparseAdam`` on sparse row gradients against
``jaxopt_adv.torch.sparse_adam`` on dense ones), shared by the transform's tests
(tests/torch_exact/test_sparse_adam.py) and the fused step's (tests/fast/test_sparse_adam.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

from jaxopt_adv.torch import sparse_adam
from tests.harness import TOLERANCE, absolute_error, find_state_field, max_abs, precision

SHAPES = {"embedding": (9, 4), "vector": (7,), "stack": (2, 3, 4), "scalar": ()}
NUM_STEPS = 20

CASES = {
    "defaults": {},
    "betas": {"b1": 0.5, "b2": 0.9, "eps": 1e-3},
    "maximize": {"maximize": True, "b1": 0.0},
    # torch's bias corrections are 1 - b2**t in doubles, 1e-7 off here: reproduced
    "b2_near_one": {"b2": 1 - 1e-9},
}


def _draw(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "b1": float(rng.uniform(0.0, 0.99)),
        "b2": float(rng.uniform(0.5, 0.9999)),
        "eps": float(10 ** rng.uniform(-10, -2)),
        "maximize": bool(rng.integers(2)),
    }


CASES.update({f"random{seed}": _draw(seed) for seed in range(2)})


def _stream(seed: int = 1):
    """Gradients with ~half their elements exactly zero; the embedding's gradient is zero
    outside the rows looked up at that step (its row mask), and some looked-up rows have
    an all-zero gradient, as an embedding lookup produces them."""
    rng = np.random.default_rng(seed)
    stream = []
    for t in range(NUM_STEPS):
        g = {k: (0.1 + t % 3) * rng.normal(size=s) for k, s in SHAPES.items()}
        for k in g:
            g[k] = np.where(rng.uniform(size=SHAPES[k]) < 0.5, 0.0, g[k])
        rows = rng.uniform(size=SHAPES["embedding"][0]) < 0.4
        g["embedding"][~rows | (rng.uniform(size=rows.shape) < 0.3)] = 0.0
        stream.append((g, rows))
    return stream


def _torch_grad(g: np.ndarray, rows, dtype) -> torch.Tensor:
    """The sparse gradient torch sees: the nonzero elements, or the masked rows (whole)."""
    if rows is not None:
        present = np.nonzero(rows)[0]
        index = torch.tensor(present[None, :])
        return torch.sparse_coo_tensor(
            index, torch.tensor(g[present], dtype=dtype), g.shape, check_invariants=True
        )
    nonzero = np.nonzero(g) if g.ndim else ()
    index = np.stack(nonzero) if g.ndim else np.zeros((0, int(g != 0)), np.int64)
    values = g[nonzero] if g.ndim else g.reshape(1)[: index.shape[1]]
    return torch.sparse_coo_tensor(
        torch.tensor(index), torch.tensor(values, dtype=dtype), g.shape, check_invariants=True
    )


def run_sparse_parity(kwargs: dict, dtype: str, use_mask: bool, make_tx=sparse_adam) -> float:
    """20 steps of both; params, exp_avg and exp_avg_sq compared after every step.
    ``make_tx(learning_rate, **kwargs)``: the transform under test."""
    rng = np.random.default_rng(0)
    start = {k: rng.normal(size=s) for k, s in SHAPES.items()}
    errors, scales = {}, {}
    with precision(dtype):
        tx = make_tx(0.05, **kwargs)
        params = {k: jnp.asarray(v, dtype) for k, v in start.items()}
        state = tx.init(params)

        @jax.jit
        def step(grads, state, params, mask):
            updates, state = tx.update(grads, state, params, mask=mask)
            return optax.apply_updates(params, updates), state

        torch_dtype = getattr(torch, dtype)
        t_params = {
            k: torch.tensor(v, dtype=torch_dtype, requires_grad=True) for k, v in start.items()
        }
        torch_kwargs = {k: v for k, v in kwargs.items() if k not in ("b1", "b2")}
        betas = (kwargs.get("b1", 0.9), kwargs.get("b2", 0.999))
        optimizer = torch.optim.SparseAdam(
            list(t_params.values()), lr=0.05, betas=betas, **torch_kwargs
        )
        for g, rows in _stream():
            mask = {k: None for k in SHAPES}
            if use_mask:
                mask["embedding"] = jnp.asarray(rows)
            params, state = step(
                {k: jnp.asarray(v, dtype) for k, v in g.items()}, state, params, mask
            )
            for k, p in t_params.items():
                p.grad = _torch_grad(
                    g[k], rows if use_mask and k == "embedding" else None, torch_dtype
                )
            optimizer.step()
            for k, p in t_params.items():
                ours = {
                    "param": params[k],
                    "exp_avg": find_state_field(state, "mu")[k],
                    "exp_avg_sq": find_state_field(state, "nu")[k],
                }
                for name, value in ours.items():
                    reference = (
                        (p if name == "param" else optimizer.state[p][name]).detach().numpy()
                    )
                    key = f"{name}:{k}"
                    scales[key] = max(
                        scales.get(key, max_abs(start[k]) if name == "param" else 0.0),
                        max_abs(reference),
                    )
                    errors[key] = max(
                        errors.get(key, 0.0),
                        absolute_error(value, reference) / max(scales[key], 1e-30),
                    )
            worst = max(errors, key=errors.get)
            assert errors[worst] <= TOLERANCE[dtype], (worst, errors[worst])
    return max(errors.values())
