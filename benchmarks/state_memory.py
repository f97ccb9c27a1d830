"""Optimizer-state memory: bytes per parameter element of every registered optimizer.

The state comes from ``jax.eval_shape(tx.init, params)`` on float32
``jax.ShapeDtypeStruct`` params, so nothing is allocated. Counted: every leaf of the
optimizer state (moments, factored row/column statistics, per-element learning-rate
masks, anchors, step counters and other scalars, hyperparameters held in the state), as
``size * itemsize``; a zero-size placeholder counts 0. Not counted: the params, the
gradients and the temporaries of a step. The figure is that total divided by the number
of parameter elements, on three trees:

* ``matrix``: one 1024x1024 matrix;
* ``lora``: 4 LoRA adapter pairs, 4096x16 (A) and 16x4096 (B);
* ``mlp``: an MLP 784-256-256-10 with biases (Flax layout, kernels ``[in, out]``).

Each registered optimizer runs with the registry factory's defaults and
``learning_rate=1e-3``, plus what it requires: muP's ``infshapes`` (from a base-width
version of the same tree), FER's ``num_classes`` / ``num_samples`` / ``num_epochs``
(tests/cases.py's: 3 classes, 4 samples). FER's memory grows with the training set, not
with the params; its per-sample bytes are printed under the table. A few notable
variants follow each default.

Usage:
  python benchmarks/state_memory.py                      # print the markdown table
  python benchmarks/state_memory.py --out state_memory.md
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxopt_adv import get_optimizer, list_optimizers
from jaxopt_adv import torch as torch_exact
from jaxopt_adv.automagic import create_full_finetune_optimizer, create_lora_optimizer
from jaxopt_adv.mup import infer_infshapes

LR = 1e-3
FER_KWARGS = {"num_classes": 3, "num_samples": 4, "num_epochs": 3}
LORA_PAIRS = 4


def _structs(shapes: dict) -> dict:
    return jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s, jnp.float32),
        shapes,
        is_leaf=lambda s: isinstance(s, tuple),
    )


def _mlp(hidden: int) -> dict:
    widths = (784, hidden, hidden, 10)
    return {
        f"dense_{i}": {"kernel": (n_in, n_out), "bias": (n_out,)}
        for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:], strict=True))
    }


def _lora(width: int) -> dict:
    return {f"layer_{i}": {"lora_a": (width, 16), "lora_b": (16, width)} for i in range(LORA_PAIRS)}


# name -> (params, the same tree at its muP base width)
TREES = {
    "matrix": ({"w": (1024, 1024)}, {"w": (64, 64)}),
    "lora": (_lora(4096), _lora(256)),
    "mlp": (_mlp(256), _mlp(64)),
}
TREE_TITLES = {
    "matrix": "matrix 1024x1024",
    "lora": f"LoRA {LORA_PAIRS}x(4096x16 + 16x4096)",
    "mlp": "MLP 784-256-256-10",
}


class Variant(NamedTuple):
    name: str  # registry name
    label: str  # what differs from the registry defaults
    build: Callable[[Any], optax.GradientTransformation]  # infshapes -> transform


def _on_matrices(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """``tx`` on the 2-D leaves only; the others get no update and no state (Muon takes
    matrices only: its users give the rest to AdamW, whose state is not Muon's)."""

    def labels(params):
        return jax.tree.map(lambda p: "matrix" if p.ndim == 2 else "other", params)

    return optax.partition({"matrix": tx, "other": optax.set_to_zero()}, labels)


def _registry(name: str, label: str = "defaults", **kwargs: Any) -> Variant:
    def build(infshapes):
        extra = {"infshapes": infshapes} if name.startswith("mu_") else {}
        extra.update(FER_KWARGS if name == "fer" else {})
        tx = get_optimizer(name)(**{"learning_rate": LR, **extra, **kwargs})
        return _on_matrices(tx) if name == "torch.muon" else tx

    return Variant(name, label, build)


NOTABLE = {
    "torch.sgd": [_registry("torch.sgd", "momentum=0.9", momentum=0.9)],
    "torch.adam": [
        _registry("torch.adam", "amsgrad=True", amsgrad=True),
        _registry("torch.adam", "mu_dtype=bfloat16", mu_dtype=jnp.bfloat16),
    ],
    "torch.rmsprop": [
        _registry("torch.rmsprop", "centered, momentum=0.9", centered=True, momentum=0.9)
    ],
    "automagic_came_amp": [
        Variant("automagic_came_amp", "create_lora_optimizer", lambda _: create_lora_optimizer(LR)),
        Variant(
            "automagic_came_amp",
            "create_full_finetune_optimizer",
            lambda _: create_full_finetune_optimizer(LR),
        ),
    ],
    "fer": [
        Variant(
            "fer",
            "SGD momentum 0.9 base",
            lambda _: get_optimizer("fer")(
                LR, base_optimizer=lambda lr: torch_exact.sgd(lr, momentum=0.9), **FER_KWARGS
            ),
        )
    ],
    "mu_sgd": [_registry("mu_sgd", "momentum=0.9", momentum=0.9)],
}


def variants() -> list[Variant]:
    """Every registered optimizer with its defaults, then its notable variants."""
    return [v for name in list_optimizers() for v in [_registry(name), *NOTABLE.get(name, [])]]


def state_bytes(tx: optax.GradientTransformation, params: Any) -> int:
    """Bytes of every leaf of ``tx``'s state for ``params`` (abstract: nothing allocated)."""
    state = jax.eval_shape(tx.init, params)
    return sum(x.size * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(state))


def element_count(tree: str) -> int:
    """Parameter elements of one of the ``TREES``."""
    return sum(math.prod(x.shape) for x in jax.tree.leaves(_structs(TREES[tree][0])))


def bytes_per_element(variant: Variant, tree: str) -> float:
    shapes, base_shapes = TREES[tree]
    params = _structs(shapes)
    infshapes = infer_infshapes(_structs(base_shapes), params)
    return state_bytes(variant.build(infshapes), params) / element_count(tree)


def fer_bytes_per_sample(num_classes: int = 10) -> float:
    """Bytes FER's state adds per training sample (``num_classes`` classes)."""
    params = _structs(TREES["mlp"][0])

    def total(num_samples):
        kwargs = {**FER_KWARGS, "num_classes": num_classes, "num_samples": num_samples}
        return state_bytes(get_optimizer("fer")(LR, **kwargs), params)

    return (total(1001) - total(1)) / 1000


def measure() -> list[tuple[Variant, dict[str, float]]]:
    return [(v, {tree: bytes_per_element(v, tree) for tree in TREES}) for v in variants()]


def markdown(rows: list[tuple[Variant, dict[str, float]]]) -> str:
    counts = {tree: element_count(tree) for tree in TREES}
    head = ["optimizer", "variant", *(f"{TREE_TITLES[t]} ({counts[t]:,} el.)" for t in TREES)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for variant, values in rows:
        cells = [f"`{variant.name}`", variant.label, *(f"{values[t]:.2f}" for t in TREES)]
        lines.append("| " + " | ".join(cells) + " |")
    per_sample = fer_bytes_per_sample(10)
    notes = [
        "",
        "Bytes of optimizer state per parameter element (float32 params), from "
        "`jax.eval_shape(tx.init, params)`. Counted: every state leaf (moments, factored "
        "statistics, lr masks, anchors, counters and other scalars), size x itemsize; "
        "zero-size placeholders count 0; params and gradients are not counted. "
        "`torch.muon` holds state for the 2-D leaves only (the biases, which it does not "
        "take, count as elements without state).",
        "",
        "`fer`'s memory is per training sample, not per parameter: with "
        f"{FER_KWARGS['num_classes']} classes and {FER_KWARGS['num_samples']} samples it is "
        "negligible here; it adds "
        f"{per_sample:.0f} B per sample with 10 classes "
        f"(e.g. {per_sample * 60000 / 2**20:.1f} MiB for 60,000 samples), "
        "on top of its base optimizer's state.",
    ]
    return "\n".join(lines + notes) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="also write the markdown table to this file")
    args = parser.parse_args(argv)
    text = markdown(measure())
    print(text, end="")
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
