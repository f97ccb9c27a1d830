r"""Coordinate check: do activations keep their scale as the width grows?

The standard muP sanity test (``mup.coord_check``): train models of increasing width for
a few steps and record, at every step, the mean absolute coordinate
:math:`\overline{|x|}` of every layer's output. Under muP the curves are flat in the
width; under the standard parametrization with Adam they grow roughly linearly, which
is the instability that makes the best learning rate shift with width. A wrong muP
implementation (a missing :class:`~jaxopt_adv.mup.MuReadout`, a Flax layout mix-up)
shows up here as a slope.

Outputs are captured with ``nnx.capture(..., method_outputs=nnx.Intermediate)``: every
NNX module whose class defines ``__call__`` itself (``nnx.Linear``, :class:`ReLU
<jaxopt_adv.models.ReLU>`, :class:`~jaxopt_adv.mup.MuReadout`, the model) and every
value a model ``sow``\ s as ``nnx.Intermediate``.

References:
  Yang et al., "Tensor Programs V: Tuning Large Neural Networks via Zero-Shot
  Hyperparameter Transfer", NeurIPS 2021; the coord check of the ``mup`` README,
  ``mup.coord_check.get_coord_data`` / ``plot_coord_data`` (``mup==1.0.0``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxopt_adv._common import check
from jaxopt_adv.mup.infshape import param_path

__all__ = ["CoordRecord", "coord_check", "plot_coord_check"]


class CoordRecord(NamedTuple):
    """Mean absolute coordinate of one module output at one width and step."""

    width: int
    step: int  # 0: at initialisation; t: after t updates
    module: str  # "layers/1" (its __call__), "layers/1:name" (other methods, sown names)
    l1: float  # mean |x| over the output's elements


def _output_name(path: str) -> str:
    """``"layers/1/__call__/0"`` -> ``"layers/1"``; other method or sown names kept."""
    parts = path.split("/")[:-1]  # drop the tuple index of the captured value
    name = parts.pop() if parts else ""
    module = "/".join(parts)
    return module if name == "__call__" else f"{module}:{name}"


def _coordinates(intermediates: Any) -> dict[str, jax.Array]:
    """``{output name: mean |x|}`` of every captured floating-point array."""
    flat = jax.tree_util.tree_flatten_with_path(intermediates)[0]
    coordinates = {}
    for path, value in flat:
        if jnp.issubdtype(jnp.result_type(value), jnp.floating):
            keys = tuple(k for k in path if getattr(k, "name", None) != "value")
            coordinates[_output_name(param_path(keys))] = jnp.mean(jnp.abs(value))
    return coordinates


def coord_check(
    make_model: Callable[[int], nnx.Module],
    make_optimizer: Callable[[nnx.Module], optax.GradientTransformation],
    loss_fn: Callable[[nnx.Module, Any], jax.Array],
    batches: Sequence[Any],
    widths: Sequence[int],
    *,
    steps: int = 3,
) -> list[CoordRecord]:
    r"""Record :math:`\overline{|x|}` of every module output over a few training steps.

    For each width: ``model = make_model(width)``, ``tx = make_optimizer(model)``; then
    for ``t = 0 .. steps``: run ``loss_fn(model, batches[t])`` recording every output,
    then take one optimizer step on that batch. Step ``t`` is thus measured after ``t``
    updates, on a batch not yet trained on (mup's ``get_coord_data`` records during the
    training forward pass the same way).

    Args:
      make_model: ``width -> nnx.Module``, initialised as it will be trained (for muP:
        with :func:`~jaxopt_adv.mup.mup_rescale_init` applied).
      make_optimizer: ``model -> optax transform`` (muP: its infshapes come from the
        model's parameters and the base shapes).
      loss_fn: ``(model, batch) -> scalar loss``.
      batches: at least ``steps + 1`` batches.
      widths: the widths to compare.
      steps: static; number of updates, ``>= 1``.

    Returns:
      One :class:`CoordRecord` per (width, step, module output).

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> from flax import nnx
      >>> from jaxopt_adv.mup import MuMLP
      >>> def loss_fn(model, batch):
      ...     return optax.softmax_cross_entropy_with_integer_labels(model(batch[0]), batch[1]).mean()
      >>> batches = [(jnp.ones((4, 8)), jnp.zeros(4, jnp.int32))] * 2
      >>> records = coord_check(lambda w: MuMLP(8, (w,), 3, rngs=nnx.Rngs(0)),
      ...                       lambda model: optax.adam(1e-3), loss_fn, batches, [16, 32], steps=1)
      >>> sorted({r.module for r in records})
      ['', 'layers/1', 'layers/2']
    """
    check(steps >= 1, f"Invalid steps value: {steps} (steps must be >= 1)")
    check(len(batches) > steps, f"coord_check needs {steps + 1} batches, got {len(batches)}")
    capture = nnx.capture(loss_fn, nnx.Intermediate, method_outputs=nnx.Intermediate)

    @nnx.jit
    def measure_and_train(
        model: nnx.Module, optimizer: nnx.Optimizer, batch: Any
    ) -> dict[str, jax.Array]:
        # one compiled function per width: measure on the batch, then train on it (the
        # update after the last measurement is never looked at)
        coordinates = _coordinates(capture(model, batch)[1])
        optimizer.update(model, nnx.grad(loss_fn)(model, batch))
        return coordinates

    records = []
    for width in widths:
        model = make_model(width)
        optimizer = nnx.Optimizer(model, make_optimizer(model), wrt=nnx.Param)
        for step in range(steps + 1):
            for module, l1 in measure_and_train(model, optimizer, batches[step]).items():
                records.append(CoordRecord(int(width), step, module, float(l1)))
    return records


def plot_coord_check(
    records: Sequence[CoordRecord], path: str | None = None, *, title: str = "coordinate check"
) -> Any:
    r"""Plot :math:`\overline{|x|}` against width, one panel per step, one line per output.

    matplotlib is imported here (the ``examples`` extra), without ``pyplot``: the figure
    renders with the Agg backend and no global backend is changed.

    Args:
      records: the output of :func:`coord_check`.
      path: optional file to save the figure to (PNG, SVG, ... by extension).
      title: the figure title.

    Returns:
      The ``matplotlib.figure.Figure``.

    Example:
      >>> from jaxopt_adv.mup import CoordRecord, plot_coord_check
      >>> records = [CoordRecord(w, 0, "layers/1", 1.0) for w in (64, 128)]
      >>> len(plot_coord_check(records).axes)
      1
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps = sorted({r.step for r in records})
    modules = sorted({r.module for r in records})
    figure = Figure(figsize=(3.2 * len(steps), 3.2), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(steps), sharey=True, squeeze=False)[0]
    for axis, step in zip(axes, steps, strict=True):
        for module in modules:
            points = sorted(
                (r.width, r.l1) for r in records if r.step == step and r.module == module
            )
            widths, values = np.array(points).T
            axis.plot(widths, values, marker="o", label=module or "(model)")
        axis.set(xscale="log", yscale="log", xlabel="width", title=f"step {step}")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("mean |x|")
    axes[-1].legend(fontsize="small")
    figure.suptitle(title)
    if path is not None:
        figure.savefig(path, dpi=100)
    return figure
