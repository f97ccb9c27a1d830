r"""Width shapes for muP: which dimensions of each parameter are "infinite" (widths).

muP scales a parameter's learning rate, weight decay and initialisation by how its
dimensions grow with the model's width. :func:`infer_infshapes` compares the parameter
shapes of a *base* model (the width the hyperparameters were tuned at) with the target
model, exactly as ``mup.set_base_shapes`` does in PyPI ``mup``:

* a dimension is **infinite** (a width) when its size differs between the base and the
  target (or, when a ``delta`` model is given, between the base and the delta);
* its **width multiplier** is ``target_dim / base_dim`` (1 for a finite dimension);
* the number of infinite dimensions classifies the parameter: two -> matrix-like
  (hidden weights), one -> vector-like (input weights, biases, the readout weight),
  none -> scalar-like (the readout bias, fixed-size layers).

Layouts: a Flax ``Dense`` kernel is ``[in, out]`` and a Flax conv kernel HWIO, so the
fan-in is axis ``-2`` and the fan-out axis ``-1`` (``layout="flax"``, the default);
torch's ``[out, in, ...]`` puts the fan-in on axis 1 and the fan-out on axis 0
(``layout="torch"``). A port that reuses torch's index on Flax kernels silently scales by
the fan-*out* multiplier: the two differ on every expansion layer.

References:
  Yang, Hu, Babuschkin, Sidor, Liu, Farhi, Ryder, Pachocki, Chen, Gao, "Tensor Programs
  V: Tuning Large Neural Networks via Zero-Shot Hyperparameter Transfer", NeurIPS 2021
  (arXiv 2203.03466); mirrors ``mup.infshape`` and ``mup.shape`` (``mup==1.0.0``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx

__all__ = [
    "LAYOUTS",
    "ROLES",
    "InfShape",
    "infer_infshapes",
    "param_path",
    "paths_and_leaves",
]

LAYOUTS = ("flax", "torch")
# Roles a parameter can play; ``layer_mapping`` overrides the inferred one by path regex.
ROLES = ("input", "hidden", "output", "bias", "scalar")
_ROLE_CLASS = {
    "input": "vector",
    "hidden": "matrix",
    "output": "vector",
    "bias": "vector",
    "scalar": "scalar",
}


@dataclasses.dataclass(frozen=True)
class InfShape:
    """The width shape of one parameter: base sizes, target sizes, role and layout.

    Not a pytree node: a tree of ``InfShape`` mirrors the parameter tree leaf for leaf.

    Attributes:
      base_dims: per axis, the base size of an infinite (width) dimension, or ``None``
        for a finite one (as in ``mup.infshape.InfDim``).
      dims: per axis, the size in the target model.
      role: one of :data:`ROLES` (``"hidden"`` is matrix-like; ``"input"``, ``"output"``
        and ``"bias"`` are vector-like; ``"scalar"`` is scalar-like).
      layout: ``"flax"`` (fan-in axis -2, fan-out -1) or ``"torch"`` (fan-in 1, fan-out 0).

    Example:
      >>> shape = InfShape(base_dims=(64, 64), dims=(256, 128), role="hidden", layout="flax")
      >>> shape.fan_in_mult, shape.fan_out_mult, shape.param_class
      (4.0, 2.0, 'matrix')
    """

    base_dims: tuple[int | None, ...]
    dims: tuple[int, ...]
    role: str
    layout: str = "flax"

    @property
    def ninf(self) -> int:
        """Number of infinite dimensions."""
        return sum(d is not None for d in self.base_dims)

    @property
    def param_class(self) -> str:
        """``"matrix"``, ``"vector"`` or ``"scalar"``: the class muP's rules are keyed by."""
        return _ROLE_CLASS[self.role]

    def axis_mult(self, axis: int) -> float:
        """Width multiplier ``dim / base_dim`` of one axis (1.0 for a finite axis)."""
        base = self.base_dims[axis]
        return 1.0 if base is None else self.dims[axis] / base

    @property
    def fan_in_axis(self) -> int:
        """The fan-in axis of a weight (``ndim >= 2``) in this layout."""
        return 1 if self.layout == "torch" else len(self.dims) - 2

    @property
    def fan_out_axis(self) -> int:
        """The fan-out axis of a weight (``ndim >= 2``) in this layout."""
        return 0 if self.layout == "torch" else len(self.dims) - 1

    @property
    def fan_in_mult(self) -> float:
        """:math:`m_{in}`, the fan-in width multiplier (1.0 for fewer than two axes)."""
        return self.axis_mult(self.fan_in_axis) if len(self.dims) >= 2 else 1.0

    @property
    def fan_out_mult(self) -> float:
        """:math:`m_{out}`, the fan-out width multiplier (1.0 for fewer than two axes)."""
        return self.axis_mult(self.fan_out_axis) if len(self.dims) >= 2 else 1.0

    @property
    def torch_axes(self) -> tuple[int, ...]:
        """This parameter's axes in the order of its torch twin ``[out, in, *rest]``.

        The identity in torch's layout; in Flax's ``[*rest, in, out]`` (Dense ``[in, out]``,
        conv HWIO against torch's OIHW) the last two axes come first, swapped.
        """
        ndim = len(self.dims)
        if self.layout == "torch" or ndim < 2:
            return tuple(range(ndim))
        return (ndim - 1, ndim - 2, *range(ndim - 2))

    @property
    def width_mult(self) -> float:
        """mup's ``InfShape.width_mult()``: the multiplier of the "main" infinite axis.

        mup's main axis is the *last* infinite axis of the torch tensor
        (:attr:`torch_axes`): the fan-in of a weight whose fan-in and fan-out are widths,
        the unique width of a vector-like parameter, and, for a ``[3, w1, w2]`` torch
        tensor with two widths, ``w2``. 1.0 without an infinite axis.
        """
        infinite = [axis for axis in self.torch_axes if self.base_dims[axis] is not None]
        return self.axis_mult(infinite[-1]) if infinite else 1.0


def _is_param_leaf(x: Any) -> bool:
    return isinstance(x, (nnx.Variable, InfShape))


def param_path(path: tuple[Any, ...]) -> str:
    """A JAX key path as the string ``layer_mapping`` patterns match: ``"layers/0/kernel"``.

    Dict keys, sequence indices and attribute names are joined with ``/``, so a Flax NNX
    ``State`` and the plain nested dict ``nnx.as_pure`` makes of it give the same paths.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> [param_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(
      ...     {"layers": [{"kernel": jnp.zeros(2)}]})[0]]
      ['layers/0/kernel']
    """
    parts = []
    for key in path:
        for attr in ("key", "idx", "name"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def paths_and_leaves(tree: Any) -> tuple[list[str], list[Any], Any]:
    """``(paths, leaves, treedef)`` of a parameter tree; ``nnx.Variable``\\ s and
    :class:`InfShape`\\ s count as leaves."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_param_leaf)
    return [param_path(p) for p, _ in flat], [leaf for _, leaf in flat], treedef


def _shape(leaf: Any) -> tuple[int, ...]:
    return tuple(leaf.shape) if hasattr(leaf, "shape") else tuple(np.shape(leaf))


def _shapes(tree: Any, name: str) -> tuple[dict[str, tuple[int, ...]], Any]:
    paths, leaves, treedef = paths_and_leaves(tree)
    if any(isinstance(leaf, InfShape) for leaf in leaves):
        raise ValueError(f"{name} holds InfShape leaves; pass parameters or their shapes")
    return dict(zip(paths, map(_shape, leaves), strict=True)), treedef


def _check_same_paths(base: dict, other: dict, base_name: str, other_name: str) -> None:
    if base.keys() != other.keys():
        raise ValueError(
            f"{base_name} and {other_name} hold different parameters: only in {base_name} "
            f"{sorted(base.keys() - other.keys())}, only in {other_name} "
            f"{sorted(other.keys() - base.keys())}"
        )
    for path, shape in base.items():
        if len(shape) != len(other[path]):
            raise ValueError(
                f"parameter {path!r} has shape {shape} in {base_name} but "
                f"{other[path]} in {other_name}"
            )


def _base_dims(
    path: str, base: tuple[int, ...], target: tuple[int, ...], delta: tuple[int, ...] | None
) -> tuple[int | None, ...]:
    """mup's ``zip_infshape``: infinite where base and delta (or target) sizes differ."""
    if delta is None:
        return tuple(None if b == t else b for b, t in zip(base, target, strict=True))
    dims = tuple(None if b == d else b for b, d in zip(base, delta, strict=True))
    for axis, (bd, b, t) in enumerate(zip(dims, base, target, strict=True)):
        if bd is None and b != t:
            raise ValueError(
                f"parameter {path!r}: axis {axis} is finite (same size {b} in base_params "
                f"and delta_params) but has size {t} in params"
            )
    return dims


def _infer_role(path: str, base_dims: tuple[int | None, ...], layout: str) -> str:
    """The role the shapes imply (matrix-like needs exactly two infinite axes)."""
    infinite = [axis for axis, base in enumerate(base_dims) if base is not None]
    ndim = len(base_dims)
    if not infinite:
        return "scalar"
    if len(infinite) == 2:
        return "hidden"
    if len(infinite) > 2:
        raise ValueError(
            f"parameter {path!r} has {len(infinite)} infinite axes {infinite}; muP defines "
            "at most two (mup raises NotImplementedError): give its role in layer_mapping"
        )
    if ndim == 1:
        return "bias"
    fan_in_axis = 1 if layout == "torch" else ndim - 2
    return "output" if infinite[0] == fan_in_axis else "input"


def _mapped_roles(paths: list[str], layer_mapping: Mapping[str, str]) -> dict[str, str]:
    """``{path: role}`` from ``{regex: role}``; the first pattern that matches wins."""
    compiled = []
    for pattern, role in layer_mapping.items():
        if role not in ROLES:
            raise ValueError(f"layer_mapping[{pattern!r}] = {role!r}: role must be one of {ROLES}")
        try:
            compiled.append((pattern, re.compile(pattern), role))
        except re.error as error:
            raise ValueError(f"layer_mapping pattern {pattern!r} is not a regex: {error}") from None
    roles, used = {}, set()
    for path in paths:
        for pattern, regex, role in compiled:
            if regex.search(path):
                roles[path] = role
                used.add(pattern)
                break
    unused = [pattern for pattern, _, _ in compiled if pattern not in used]
    if unused:
        raise ValueError(f"layer_mapping patterns {unused} match no parameter path of {paths}")
    return roles


def infer_infshapes(
    base_params: Any,
    params: Any,
    delta_params: Any = None,
    *,
    layer_mapping: Mapping[str, str] | None = None,
    layout: str = "flax",
) -> Any:
    r"""The :class:`InfShape` of every parameter, from base-width and target-width shapes.

    Only shapes are read, so the base (and delta) model never has to be materialised:
    ``jax.eval_shape(lambda: nnx.state(Model(width=64, rngs=nnx.Rngs(0)), nnx.Param))``
    gives them for free.

    Args:
      base_params: parameters (or ``jax.ShapeDtypeStruct``\ s) of the model at its base
        width, the width the hyperparameters were tuned at.
      params: the target model's parameters (a pytree, an ``nnx.State`` or a plain dict).
      delta_params: optional parameters of a model at another width, only to decide which
        axes are widths (mup's ``delta``): needed when some width of the target equals
        its base size, which would otherwise look finite.
      layer_mapping: static; ``{regex: role}`` overriding the inferred role of every
        parameter whose path (:func:`param_path`, e.g. ``"layers/4/kernel"``) the regex
        matches (``re.search``; the first matching pattern wins). Roles: ``"input"``,
        ``"output"``, ``"bias"`` (vector-like), ``"hidden"`` (matrix-like, needs two
        axes), ``"scalar"`` (never scaled). Every pattern must match some parameter.
      layout: static; ``"flax"`` (kernels ``[..., in, out]``: Dense ``[in, out]``, conv
        HWIO) or ``"torch"`` (``[out, in, ...]``, e.g. shapes from a ``state_dict``).

    Returns:
      A pytree shaped like ``params`` with an :class:`InfShape` per parameter.

    Raises:
      ValueError: the trees hold different parameters or ranks, a finite axis changes
        size, a parameter has more than two infinite axes and no mapped role, or
        ``layer_mapping`` / ``layout`` is invalid.

    Example:
      >>> import jax.numpy as jnp
      >>> base = {"hidden": jnp.zeros((64, 64)), "readout": jnp.zeros((64, 10))}
      >>> target = {"hidden": jnp.zeros((256, 256)), "readout": jnp.zeros((256, 10))}
      >>> shapes = infer_infshapes(base, target)
      >>> shapes["hidden"].role, shapes["readout"].role, shapes["readout"].width_mult
      ('hidden', 'output', 4.0)
    """
    if layout not in LAYOUTS:
        raise ValueError(f"Invalid layout: {layout!r} (must be one of {LAYOUTS})")
    base, _ = _shapes(base_params, "base_params")
    target, treedef = _shapes(params, "params")
    _check_same_paths(base, target, "base_params", "params")
    delta = None
    if delta_params is not None:
        delta, _ = _shapes(delta_params, "delta_params")
        _check_same_paths(base, delta, "base_params", "delta_params")
    paths = list(target)
    roles = _mapped_roles(paths, layer_mapping or {})
    infshapes = []
    for path in paths:
        base_dims = _base_dims(
            path, base[path], target[path], None if delta is None else delta[path]
        )
        role = roles.get(path) or _infer_role(path, base_dims, layout)
        if role == "hidden" and len(base_dims) < 2:
            raise ValueError(f"parameter {path!r} of shape {target[path]} cannot be 'hidden'")
        infshapes.append(InfShape(base_dims, target[path], role, layout))
    return treedef.unflatten(infshapes)
