"""Step time of localized learning with k localized layers against full backprop.

The model puts ``jax.lax.stop_gradient`` on the output of the last localized layer
(``jaxopt_adv.local.LocalizedMLP``), so XLA drops the backward GEMMs of the localized
prefix; each localized layer costs one Hebbian GEMM (``x^T y``) instead of two backward
ones. Same MLP, same batch; the base optimizer is ``jaxopt_adv.torch.sgd(0.01,
momentum=0.9)`` in every row, k = 0 is full backprop with that optimizer alone.

  python benchmarks/localized_step_time.py [--width 2048] [--depth 5] [--batch 256]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxopt_adv.local import LocalizedMLP, create_localized_optimizer
from jaxopt_adv.torch import sgd


def make_step(num_localized: int):
    @nnx.jit
    def step(model, optimizer, x, y):
        def loss_fn(model):
            logits, activations = model(x, num_localized=num_localized)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return loss, activations

        (loss, activations), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        if num_localized:
            optimizer.update(model, grads, activations=activations, value=loss)
        else:
            optimizer.update(model, grads)
        return loss

    return step


def time_step(num_localized: int, args: argparse.Namespace) -> float:
    """Median seconds per step over ``args.repeats`` timed steps (after 3 warm-up steps)."""
    model = LocalizedMLP(784, [args.width] * args.depth, 10, rngs=nnx.Rngs(0))
    if num_localized:
        tx = create_localized_optimizer(model, 0.01, 1e-4, num_localized=num_localized)
    else:
        tx = sgd(0.01, momentum=0.9)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(args.batch, 784)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, size=args.batch))
    step = make_step(num_localized)
    for _ in range(3):
        jax.block_until_ready(step(model, optimizer, x, y))
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        jax.block_until_ready(step(model, optimizer, x, y))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--depth", type=int, default=5)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    full = time_step(0, args)
    print(f"MLP 784-{args.width}x{args.depth}-10, batch {args.batch}, {jax.devices()[0]}")
    print("| localized layers k | step (ms) | full backprop / step |")
    print("|---|---|---|")
    print(f"| 0 (full backprop) | {1e3 * full:.2f} | 1.00 |")
    for k in range(1, args.depth):
        seconds = time_step(k, args)
        print(f"| {k} | {1e3 * seconds:.2f} | {full / seconds:.2f} |")


if __name__ == "__main__":
    main()
