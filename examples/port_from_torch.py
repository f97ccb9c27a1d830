"""Resume a PyTorch training run in JAX from its torch checkpoint, and get the same numbers.

The script a porter copies. A torch run trains an MLP on scikit-learn's 8x8 digits the
way modern scripts do -- ``torch.optim.AdamW``, a linear warm-up then cosine decay
(``SequentialLR`` of ``LinearLR`` and ``CosineAnnealingLR``), gradient clipping
(``clip_grad_norm_``) and an exponential moving average of the weights
(``torch.optim.swa_utils.AveragedModel``) -- and is saved with ``torch.save`` halfway.
The JAX run starts from that file:

* the model weights with :func:`jaxopt_adv.interop.load_torch_state_dict` (into the
  Flax NNX twin :class:`jaxopt_adv.models.MLP`), the EMA weights the same way into a
  :func:`jaxopt_adv.torch.swa_utils.averaged_model` state (with torch's ``n_averaged``);
* the optimizer with :func:`jaxopt_adv.interop.load_torch_optimizer_state` (AdamW's
  ``exp_avg``, ``exp_avg_sq`` and ``step``; :func:`jaxopt_adv.interop.torch_param_order`
  says which NNX parameter is which torch parameter, and that Linear kernels are the
  torch weights transposed);
* the scheduler with :func:`jaxopt_adv.interop.load_torch_scheduler_state`
  (``last_epoch``);

then both runs take the second half from the same mini-batches. The two loss curves are
printed side by side (and plotted with ``--plot FILE``), with their largest relative
deviation and the EMA weights' deviation at the end. In float64 (``--float64``) the two
runs agree to rounding; in float32 to about 1e-6 (matmul summation orders differ).

  python examples/port_from_torch.py [--steps 60] [--float64] [--plot curves.png]

Needs torch and the ``examples`` extra (scikit-learn; matplotlib for ``--plot``).
"""

from __future__ import annotations

import argparse
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from flax import nnx
from sklearn.datasets import load_digits

import jaxopt_adv
from jaxopt_adv.interop import (
    load_torch_optimizer_state,
    load_torch_scheduler_state,
    load_torch_state_dict,
    to_numpy,
    torch_param_order,
)
from jaxopt_adv.models import MLP
from jaxopt_adv.models.torch_twins import TorchMLP
from jaxopt_adv.torch import swa_utils

HIDDEN, BATCH = 32, 64
LR, WEIGHT_DECAY, MAX_NORM, EMA_DECAY = 1e-2, 1e-2, 1.0, 0.9
WARMUP = 10  # steps of linear warm-up before the cosine decay


def digits(dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    data = load_digits()
    return (data.data / 16.0).astype(dtype), data.target.astype(np.int64)


def batches(n: int, steps: int, seed: int = 1) -> list[np.ndarray]:
    """The mini-batch indices of every step (both runs read the same list)."""
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    while len(out) < steps:
        order = rng.permutation(n)
        out += [order[i : i + BATCH] for i in range(0, n - BATCH + 1, BATCH)]
    return out[:steps]


# ------------------------------------------------------------------ the torch script


def torch_training(steps: int):
    """The torch objects of the run: model, AdamW, warm-up + cosine, EMA."""
    torch.manual_seed(0)
    model = TorchMLP(64, (HIDDEN,), 10, dropout_rate=0.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    scheduler = torch.optim.lr_scheduler.SequentialLR(
        optimizer,
        [
            torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=WARMUP),
            torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps - WARMUP),
        ],
        milestones=[WARMUP],
    )
    ema = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(EMA_DECAY)
    )
    return model, optimizer, scheduler, ema


def run_torch(steps: int, data, plan, checkpoint: str) -> tuple[list[float], dict]:
    """Train ``steps`` steps, ``torch.save`` everything after half of them."""
    x, y = (torch.from_numpy(a) for a in data)
    model, optimizer, scheduler, ema = torch_training(steps)
    losses = []
    for step, idx in enumerate(plan):
        if step == steps // 2:
            torch.save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "ema": ema.state_dict(),
                    "step": step,
                },
                checkpoint,
            )
        idx = torch.from_numpy(idx)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)
        optimizer.step()
        scheduler.step()
        ema.update_parameters(model)
        losses.append(loss.item())
    return losses, ema.module.state_dict()


# ------------------------------------------------------------------ the JAX port


def jax_transform(steps: int) -> optax.GradientTransformation:
    """The same optimizer: clip, then AdamW on the warm-up + cosine schedule."""
    T = jaxopt_adv.torch
    schedule = T.sequential_lr(
        [
            T.linear_lr(LR, start_factor=0.1, total_iters=WARMUP),
            T.cosine_annealing_lr(LR, T_max=steps - WARMUP),
        ],
        [WARMUP],
    )
    return optax.chain(T.clip_grad_norm(MAX_NORM), T.adamw(schedule, weight_decay=WEIGHT_DECAY))


def nnx_model(state_dict, dtype) -> MLP:
    model = MLP(64, (HIDDEN,), 10, dropout_rate=0.0, param_dtype=dtype, rngs=nnx.Rngs(0))
    load_torch_state_dict(model, state_dict)
    return model


def resume_in_jax(steps: int, data, plan, checkpoint: str) -> tuple[list[float], nnx.State]:
    """Load the torch checkpoint and train the second half in JAX."""
    saved = torch.load(checkpoint, weights_only=True)
    dtype = jnp.asarray(data[0][:1]).dtype
    model = nnx_model(saved["model"], dtype)
    # torch's AveragedModel: its weights under "module.", and its n_averaged counter
    ema_weights = {k.removeprefix("module."): v for k, v in saved["ema"].items()}
    n_averaged = int(ema_weights.pop("n_averaged"))
    ema = swa_utils.averaged_model(multi_avg_fn=swa_utils.get_ema_multi_avg_fn(EMA_DECAY))
    ema_state = ema.init(nnx.state(nnx_model(ema_weights, dtype), nnx.Param))
    ema_state = ema_state._replace(n_averaged=jnp.asarray(n_averaged, ema_state.n_averaged.dtype))

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    order, layout = torch_param_order(model)  # torch's parameter index and layout per leaf
    tx = jax_transform(steps)
    state = load_torch_optimizer_state(saved["optimizer"], tx, params, order=order, layout=layout)
    state = load_torch_scheduler_state(saved["scheduler"], tx, state, params)

    def loss_fn(params, xb, yb):
        logits = nnx.merge(graphdef, params, rest)(xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    @jax.jit
    def step(params, state, ema_state, xb, yb):
        loss, grads = jax.value_and_grad(loss_fn)(params, xb, yb)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        return params, state, ema.update(ema_state, params), loss

    x, y = data
    losses = []
    for idx in plan[saved["step"] :]:
        params, state, ema_state, loss = step(params, state, ema_state, x[idx], y[idx])
        losses.append(float(loss))
    return losses, ema_state.params


def ema_deviation(ema: nnx.State, torch_ema: dict) -> float:
    """max |EMA_jax - EMA_torch| / max |EMA_torch| over the weights."""
    dtype = jax.tree.leaves(ema)[0].dtype
    model = MLP(64, (HIDDEN,), 10, dropout_rate=0.0, param_dtype=dtype, rngs=nnx.Rngs(0))
    nnx.update(model, ema)
    theirs = {k: to_numpy(v) for k, v in torch_ema.items()}
    ours = jaxopt_adv.interop.export_torch_state_dict(model)  # torch's keys and layouts
    scale = max(float(np.max(np.abs(v))) for v in theirs.values())
    return max(float(np.max(np.abs(ours[k] - theirs[k]))) for k in ours) / scale


def plot(path: str, torch_losses: list[float], jax_losses: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = len(torch_losses) - len(jax_losses)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(len(torch_losses)), torch_losses, label="torch (whole run)")
    ax.plot(range(start, len(torch_losses)), jax_losses, "--", label="JAX (resumed)")
    ax.axvline(start, color="grey", lw=0.5)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--float64", action="store_true", help="both runs in float64")
    parser.add_argument("--plot", metavar="FILE", help="save the two loss curves (PNG)")
    args = parser.parse_args()
    if args.float64:
        jax.config.update("jax_enable_x64", True)
        torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    data = digits(np.float64 if args.float64 else np.float32)
    plan = batches(len(data[0]), args.steps)

    with tempfile.TemporaryDirectory() as folder:
        checkpoint = os.path.join(folder, "halfway.pt")
        torch_losses, torch_ema = run_torch(args.steps, data, plan, checkpoint)
        jax_losses, ema = resume_in_jax(args.steps, data, plan, checkpoint)

    start = args.steps - len(jax_losses)
    print(f"resumed at step {start} of {args.steps} from the torch checkpoint")
    print(f"{'step':>5} {'torch loss':>12} {'JAX loss':>12}")
    for k in range(start, args.steps, max(1, (args.steps - start) // 10)):
        print(f"{k:>5} {torch_losses[k]:>12.8f} {jax_losses[k - start]:>12.8f}")
    theirs = np.array(torch_losses[start:])
    deviation = np.max(np.abs(np.array(jax_losses) - theirs) / np.abs(theirs))
    print(f"max relative deviation of the two loss curves: {deviation:.2e}")
    print(f"relative deviation of the EMA weights: {ema_deviation(ema, torch_ema):.2e}")
    if args.plot:
        plot(args.plot, torch_losses, jax_losses)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
