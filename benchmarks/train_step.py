"""Train-step time of an MLP on the bundled MNIST subset: jaxopt_adv against torch.

The 784-512-256-10 MLP (ReLU, dropout 0.2; ``jaxopt_adv.models.MLP`` and its
torch twin), batch 128 of ``mnist5k``, softmax cross-entropy, Adam (lr 1e-3). One
step is forward + backward + optimizer update, timed to completion; the batches are
prepared up front so data slicing is not timed. Variants:

- ``jax fused``: ``jaxopt_adv.train.make_train_step`` with ``jaxopt_adv.fast.fused(
  "torch.adam")`` (one C++ pass for the update);
- ``jax xla``: the same step with ``jaxopt_adv.torch.adam`` (the parity-tested XLA path);
- ``jax optax``: the same step with ``optax.adam``;
- ``torch default`` / ``torch fused``: ``torch.optim.Adam`` (foreach) and
  ``Adam(fused=True)``, eager, ``zero_grad(set_to_none=True)``.

Each framework runs in its own worker process (their thread pools slow each other
down); inside a worker the variants alternate step by step. The JAX step also returns
the loss, the global gradient norm and the accuracy as metrics (``make_train_step``);
the torch step returns nothing but its loss tensor.

  python benchmarks/train_step.py [--steps 200] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

BATCH = 128
LR = 1e-3


def batches(steps: int):
    """``steps`` training batches ``(x, y)`` of the bundled MNIST subset (numpy)."""
    import numpy as np

    from jaxopt_adv.datasets import load_dataset

    data = load_dataset("mnist5k")
    rng = np.random.default_rng(0)
    idx = [rng.choice(len(data.y_train), BATCH, replace=False) for _ in range(steps)]
    return [(data.x_train[i], data.y_train[i]) for i in idx]


def jax_worker(steps: int) -> dict:
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    import jaxopt_adv
    from jaxopt_adv import fast
    from jaxopt_adv.models import MLP
    from jaxopt_adv.train import init_train_state, make_train_step, split_model

    def loss_fn(model, batch):
        x, y = batch
        logits = model(x)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == y)}

    fused = fast.fused("torch.adam", learning_rate=LR)
    optimizers = {"fused": fused, "xla": jaxopt_adv.torch.adam(LR), "optax": optax.adam(LR)}
    runners = {}
    for name, tx in optimizers.items():
        model = MLP(rngs=nnx.Rngs(0))
        model.train()
        runners[name] = [make_train_step(split_model(model)[0], loss_fn, tx), None]
        runners[name][1] = init_train_state(model, tx)
    data = [jax.device_put(b) for b in batches(steps + 5)]
    times: dict = {f"jax_{name}": [] for name in runners}
    for i, batch in enumerate(data):
        for name, runner in runners.items():
            start = time.perf_counter()
            runner[1], metrics = runner[0](runner[1], batch)
            jax.block_until_ready((runner[1], metrics))
            if i >= 5:
                times[f"jax_{name}"].append(time.perf_counter() - start)
    params = runners["fused"][1].params
    times["kernels"] = fused.explain(params, params, runners["fused"][1].opt_state) or "used"
    return times


def torch_worker(steps: int) -> dict:
    import torch
    import torch.nn.functional as F

    from jaxopt_adv.models.torch_twins import TorchMLP

    torch.manual_seed(0)
    runners = {}
    for name, kwargs in {"default": {}, "fused": {"fused": True}}.items():
        model = TorchMLP()
        model.train()
        runners[name] = (model, torch.optim.Adam(model.parameters(), lr=LR, **kwargs))
    data = [(torch.from_numpy(x), torch.from_numpy(y).long()) for x, y in batches(steps + 5)]
    times: dict = {f"torch_{name}": [] for name in runners}
    for i, (x, y) in enumerate(data):
        for name, (model, opt) in runners.items():
            start = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            loss.item()
            if i >= 5:
                times[f"torch_{name}"].append(time.perf_counter() - start)
    return times


WORKERS = {"jax": jax_worker, "torch": torch_worker}


def spawn(worker: str, steps: int) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", worker, "--steps", str(steps)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ.copy())
    return json.loads(out.stdout.strip().splitlines()[-1])


def markdown(medians: dict) -> str:
    """A one-row-per-variant table with ratios to torch fused Adam and to the XLA path."""
    base_torch, base_xla = medians["torch_fused"], medians["jax_xla"]
    rows = [
        "| variant | median ms | / torch fused | / jax xla |",
        "|---|---|---|---|",
    ]
    for name, ms in medians.items():
        rows.append(f"| {name} | {ms:.3f} | {ms / base_torch:.2f} | {ms / base_xla:.2f} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="timed steps per worker run")
    parser.add_argument("--rounds", type=int, default=2, help="worker runs per framework")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args.steps)))
        return
    samples: dict = {}
    for _ in range(args.rounds):
        for worker in WORKERS:
            for key, value in spawn(worker, args.steps).items():
                if key == "kernels":
                    if value != "used":
                        print(f"warning: kernels not used: {value}", file=sys.stderr)
                    continue
                samples.setdefault(key, []).extend(value)
    medians = {key: 1e3 * statistics.median(value) for key, value in samples.items()}
    print(markdown(medians))


if __name__ == "__main__":
    main()
