r"""Move weights between a torch ``state_dict`` and a Flax NNX model, both ways.

Supported layers (NNX side -> torch keys under one prefix):

================================  =============================================  ==============================
NNX layer                         torch keys                                     conversion
================================  =============================================  ==============================
``nnx.Linear`` (and ours)         ``weight`` ``(out, in)``, ``bias``             ``kernel = weight.T``
``nnx.Conv`` 2-D (and ours)       ``weight`` OIHW, ``bias``                      ``kernel = weight`` as HWIO
``models.BatchNorm``,             ``weight``, ``bias``, ``running_mean``,        ``scale``, ``bias``, ``mean``,
``nnx.BatchNorm``                 ``running_var``, ``num_batches_tracked``       ``var``; the counter is ignored
``models.ChannelwiseScaling``     ``weight``, ``bias`` of shape ``(C,)``         ``scale``, ``bias``
================================  =============================================  ==============================

Layouts: the NNX models are NHWC (images) and features-last, torch's NCHW. Only the
*weights* need converting: a torch image batch is ``x.transpose(0, 2, 3, 1)`` before the
NNX model, and :class:`jaxopt_adv.models.Flatten` flattens in torch's ``(c, h, w)``
order, so a Linear layer after it takes torch's weight as it is. BatchNorm 1-d and 2-d
have the same keys; the per-channel vectors need no conversion.

Names: a mapping ``{torch_prefix: nnx_path}`` pairs a torch module (``"features.0"``, the
part of a key before its last dot; ``""`` for a bare layer) with an NNX layer (attribute
path, ``"."`` or ``"/"`` separated, list indices as numbers: ``"features.0"``). Without
one, :func:`default_mapping` pairs each torch module with the NNX layer of the same path,
then the rest in order: the torch modules in ``state_dict`` order with the NNX layers in
*definition* order (attribute assignment order in ``__init__``, list order), which is how
torch orders a ``state_dict``.

This module never imports torch: values may be torch tensors (anything with
``.detach().cpu().numpy()``), NumPy or JAX arrays, or nested lists. bfloat16 tensors
must be converted (``.float()``) first, NumPy has no bfloat16.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxopt_adv.models.batchnorm import BatchNorm, ChannelwiseScaling

__all__ = [
    "default_mapping",
    "export_torch_optimizer_state",
    "export_torch_scheduler_state",
    "export_torch_state_dict",
    "load_torch_optimizer_state",
    "load_torch_scheduler_state",
    "load_torch_state_dict",
    "to_numpy",
    "torch_param_order",
]

# torch keys a layer carries that have no NNX counterpart: accepted on import, exported.
_TORCH_ONLY_BATCHNORM_KEY = "num_batches_tracked"


@dataclasses.dataclass(frozen=True)
class _Field:
    """One array: its torch name, its NNX attribute and the two layout conversions."""

    torch_name: str
    nnx_name: str
    to_nnx: Callable[[np.ndarray], np.ndarray]
    to_torch: Callable[[np.ndarray], np.ndarray]


def _same(x: np.ndarray) -> np.ndarray:
    return x


def _linear_to_nnx(w: np.ndarray) -> np.ndarray:
    return w.T if w.ndim == 2 else w


def _conv_to_nnx(w: np.ndarray) -> np.ndarray:  # OIHW -> HWIO
    return w.transpose(2, 3, 1, 0) if w.ndim == 4 else w


def _conv_to_torch(w: np.ndarray) -> np.ndarray:  # HWIO -> OIHW
    return w.transpose(3, 2, 0, 1)


_WEIGHT_BIAS = (("weight", "scale"), ("bias", "bias"))
_BATCHNORM = (*_WEIGHT_BIAS, ("running_mean", "mean"), ("running_var", "var"))


def _layer_kind(module: Any) -> str | None:
    """The supported layer family of ``module``, or ``None``."""
    if isinstance(module, nnx.Linear):
        return "Linear"
    if isinstance(module, nnx.Conv) and module.kernel[...].ndim == 4:
        return "Conv2d"
    if isinstance(module, (BatchNorm, nnx.BatchNorm)):
        return "BatchNorm"
    if isinstance(module, ChannelwiseScaling):
        return "ChannelwiseScaling"
    return None


def _fields(module: Any) -> list[_Field]:
    """The arrays ``module`` holds, in torch's ``state_dict`` order (absent ones skipped)."""
    kind = _layer_kind(module)
    if kind == "Linear":
        candidates = [_Field("weight", "kernel", _linear_to_nnx, _linear_to_nnx)]
        candidates.append(_Field("bias", "bias", _same, _same))
    elif kind == "Conv2d":
        candidates = [_Field("weight", "kernel", _conv_to_nnx, _conv_to_torch)]
        candidates.append(_Field("bias", "bias", _same, _same))
    elif kind in ("BatchNorm", "ChannelwiseScaling"):
        pairs = _BATCHNORM if kind == "BatchNorm" else _WEIGHT_BIAS
        candidates = [_Field(t, n, _same, _same) for t, n in pairs]
    else:
        raise ValueError(
            f"unsupported layer type {type(module).__name__}: expected a Linear, 2-D Conv, "
            "BatchNorm or ChannelwiseScaling"
        )
    return [f for f in candidates if isinstance(getattr(module, f.nnx_name, None), nnx.Variable)]


def to_numpy(value: Any) -> np.ndarray:
    """A torch tensor (any device, with or without grad), JAX or NumPy array as NumPy.

    Args:
      value: anything with ``.detach().cpu().numpy()``, or an array-like.

    Returns:
      A NumPy array (a view where NumPy allows it).

    Example:
      >>> to_numpy([[1.0, 2.0]]).shape
      (1, 2)
    """
    if hasattr(value, "detach"):
        value = value.detach()
    if hasattr(value, "cpu"):
        value = value.cpu()
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        value = value.numpy()
    return np.asarray(value)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _path_string(path: Sequence[str]) -> str:
    return ".".join(path)


def _iter_layers(node: Any, path: tuple[str, ...], seen: set[int]) -> Iterator[tuple[str, Any]]:
    """Supported layers under ``node`` in definition order (a shared layer once)."""
    if id(node) in seen:
        return
    seen.add(id(node))
    if _layer_kind(node) is not None:
        yield _path_string(path), node
        return
    if isinstance(node, Mapping):
        children = [(str(k), v) for k, v in node.items()]
    elif isinstance(node, Sequence) and not isinstance(node, str):
        children = [(str(i), v) for i, v in enumerate(node)]
    elif isinstance(node, nnx.Module):
        children = [(k, v) for k, v in vars(node).items() if not k.startswith("_")]
    else:
        return
    for name, child in children:
        if isinstance(child, (nnx.Module, Mapping, list, tuple)):
            yield from _iter_layers(child, (*path, name), seen)


def _layers(model: nnx.Module) -> list[tuple[str, Any]]:
    return list(_iter_layers(model, (), set()))


def _resolve(model: nnx.Module, path: str) -> Any:
    """The object at ``path`` (``"a.b.0"`` or ``"a/b/0"``; ``""`` is the model)."""
    node = model
    if not path:
        return node
    for part in path.replace("/", ".").split("."):
        try:
            if isinstance(node, Mapping):
                node = node[part]
            elif part.isdigit() and isinstance(node, Sequence):
                node = node[int(part)]
            else:
                node = getattr(node, part)
        except (AttributeError, IndexError, KeyError):
            raise ValueError(f"nnx path {path!r}: no {part!r} in {type(node).__name__}") from None
    return node


def _torch_modules(keys: Sequence[str]) -> dict[str, list[str]]:
    """torch module prefix -> its parameter names, in ``state_dict`` order."""
    modules: dict[str, list[str]] = {}
    for key in keys:
        prefix, _, name = key.rpartition(".")
        modules.setdefault(prefix, []).append(name)
    return modules


def _expected_names(layer: Any) -> list[str]:
    names = [f.torch_name for f in _fields(layer)]
    if _layer_kind(layer) == "BatchNorm":
        names.append(_TORCH_ONLY_BATCHNORM_KEY)
    return names


def _check_pair(prefix: str, names: list[str], path: str, layer: Any) -> None:
    """A torch module's parameter names must be the NNX layer's (``num_batches_tracked``
    optional)."""
    expected = _expected_names(layer)
    required = [n for n in expected if n != _TORCH_ONLY_BATCHNORM_KEY]
    if not set(required) <= set(names) <= set(expected):
        raise ValueError(
            f"torch module {prefix!r} with keys {names} does not match nnx layer "
            f"{path!r} ({_layer_kind(layer)}, expects {expected}); pass an explicit mapping"
        )


def _numeric_inversion(prefixes: Sequence[str]) -> tuple[str, str] | None:
    """Two prefixes in an order torch never writes (``"layers.12"`` before ``"layers.3"``,
    as in a text-sorted ``state_dict``), or ``None``.

    torch lists a ``Sequential`` / ``ModuleList``'s children in index order, so among the
    children of one parent a numbered name never follows a larger number.
    """
    largest: dict[tuple[str, ...], tuple[int, str]] = {}
    for prefix in prefixes:
        parts = prefix.split(".") if prefix else []
        for depth, part in enumerate(parts):
            if not part.isdigit():
                continue
            parent = tuple(parts[:depth])
            seen = largest.get(parent)
            if seen is not None and int(part) < seen[0]:
                return seen[1], prefix
            if seen is None or int(part) > seen[0]:
                largest[parent] = (int(part), prefix)
    return None


def default_mapping(
    model: nnx.Module, state_dict: Mapping[str, Any], *, strict: bool = True
) -> dict[str, str]:
    """Pair torch modules with NNX layers, by name first: ``{torch_prefix: nnx_path}``.

    The torch modules are the key prefixes of ``state_dict``; the NNX layers the
    supported layers of ``model``, named by attribute path (``"layers.3"``). A torch
    module whose prefix is the path of an NNX layer pairs with it, whatever the order of
    the keys (a ``state_dict`` saved with sorted keys lists ``layers.12`` before
    ``layers.3``). The modules and layers left over pair in order: the torch modules in
    ``state_dict`` order, the NNX layers in *definition* order (attribute assignment order
    in ``__init__``, list order), which is how torch orders a ``state_dict``. (NNX's own
    traversal, ``nnx.iter_modules``, sorts attribute names alphabetically, which is not
    torch's order; this one follows ``vars(module)``.) Each pair must agree on the
    parameter names (a torch ``Linear`` cannot pair with an NNX ``BatchNorm``);
    ``num_batches_tracked`` may be absent.

    Args:
      model: the NNX model.
      state_dict: torch-style ``{key: array}``.
      strict: static; when ``False``, left-over modules and layers that cannot pair in
        order (different numbers of them) are left out of the mapping, as
        ``load_torch_state_dict(..., strict=False)`` allows.

    Returns:
      The mapping, to pass to :func:`load_torch_state_dict` or
      :func:`export_torch_state_dict` (and to edit where the orders differ).

    Raises:
      ValueError: the left-over modules and layers differ in number (``strict``), their
        keys are not in torch's order (``layers.12`` before ``layers.3``: a text-sorted
        ``state_dict`` cannot pair by position), or a pair's parameter names differ; the
        message names both sides.

    Example:
      >>> import numpy as np
      >>> from flax import nnx
      >>> from jaxopt_adv.models import MLP
      >>> model = MLP(4, (3,), 2, rngs=nnx.Rngs(0))
      >>> sd = {"0.weight": np.zeros((3, 4)), "0.bias": np.zeros(3),
      ...       "2.weight": np.zeros((2, 3)), "2.bias": np.zeros(2)}
      >>> default_mapping(model, sd)
      {'0': 'layers.0', '2': 'layers.3'}
    """
    modules = _torch_modules(list(state_dict))
    layers = dict(_layers(model))
    mapping = {prefix: prefix for prefix in modules if prefix in layers}
    for prefix in mapping:
        _check_pair(prefix, modules[prefix], prefix, layers[prefix])
    left_modules = [prefix for prefix in modules if prefix not in mapping]
    left_layers = [path for path in layers if path not in mapping]
    if not left_modules or not left_layers or len(left_modules) != len(left_layers):
        if strict and (left_modules or left_layers):
            raise ValueError(
                f"cannot pair {len(modules)} torch modules {list(modules)} with "
                f"{len(layers)} nnx layers {list(layers)}: by name, left over are torch "
                f"{left_modules} and nnx {left_layers}; pass an explicit mapping"
            )
        return mapping
    inversion = _numeric_inversion(left_modules)
    if inversion is not None:
        raise ValueError(
            f"cannot pair torch modules {left_modules} with nnx layers {left_layers} in "
            f"order: the state_dict lists {inversion[0]!r} before {inversion[1]!r}, not in "
            "torch's module order (sorted keys?); pass an explicit mapping"
        )
    for prefix, path in zip(left_modules, left_layers, strict=True):
        _check_pair(prefix, modules[prefix], path, layers[path])
        mapping[prefix] = path
    return mapping


def load_torch_state_dict(
    model: nnx.Module,
    state_dict: Mapping[str, Any],
    mapping: Mapping[str, str] | None = None,
    *,
    strict: bool = True,
) -> None:
    r"""Copy a torch ``state_dict`` into an NNX model's parameters and batch statistics.

    For every pair ``torch_prefix -> nnx_path`` of ``mapping`` the layer's arrays are
    converted (Linear :math:`W^\top`, Conv2d OIHW :math:`\to` HWIO, BatchNorm vectors as
    they are; ``num_batches_tracked`` ignored), checked against the NNX shapes, cast to
    the NNX variables' dtypes and assigned in place. Everything is checked before
    anything is assigned: on error the model is unchanged.

    Args:
      model: the NNX model, modified in place.
      state_dict: ``{key: tensor or array}`` (``torch_model.state_dict()``).
      mapping: ``{torch_prefix: nnx_path}``; default :func:`default_mapping` (by name,
        then in order).
      strict: static; when ``True`` (torch's default), every ``state_dict`` key must be
        used and every supported NNX layer loaded. When ``False``, unmapped keys and
        unloaded layers are allowed (partial loads; without a mapping, the torch modules
        named as NNX layers load); a mapped layer must still be complete.

    Returns:
      ``None``; the model holds the torch values.

    Warning:
      An ``nnx.BatchNorm`` takes torch's statistics but goes on updating them its own way
      (``momentum`` weighs the old value, biased running variance); to keep training as
      torch does, use :class:`jaxopt_adv.models.BatchNorm`.

    Raises:
      ValueError: a key is missing (a mapped layer lacks one of its arrays) or unexpected
        (strict), a shape differs, an NNX layer is not loaded (strict), or a path does not
        exist. The message names the key.

    Example:
      >>> import numpy as np
      >>> from flax import nnx
      >>> from jaxopt_adv.models import Linear
      >>> layer = Linear(3, 2, rngs=nnx.Rngs(0))
      >>> weight = np.arange(6.0).reshape(2, 3)  # torch layout (out, in)
      >>> load_torch_state_dict(layer, {"weight": weight, "bias": np.zeros(2)})
      >>> layer.kernel.shape
      (3, 2)
    """
    arrays = {key: to_numpy(value) for key, value in state_dict.items()}
    if mapping is None:
        mapping = default_mapping(model, arrays, strict=strict)
    assignments: list[tuple[nnx.Variable, np.ndarray]] = []
    used: set[str] = set()
    loaded: set[int] = set()
    for prefix, path in mapping.items():
        layer = _resolve(model, path)
        for field in _fields(layer):
            key = _join(prefix, field.torch_name)
            if key not in arrays:
                raise ValueError(
                    f"missing key {key!r} in state_dict (for nnx {_join(path, field.nnx_name)!r})"
                )
            variable = getattr(layer, field.nnx_name)
            value = field.to_nnx(arrays[key])
            if value.shape != tuple(variable.shape):
                expected = field.to_torch(np.zeros(variable.shape)).shape
                raise ValueError(
                    f"shape mismatch for {key!r}: torch {arrays[key].shape}, but nnx "
                    f"{_join(path, field.nnx_name)!r} is {tuple(variable.shape)} "
                    f"(expects torch shape {expected})"
                )
            assignments.append((variable, value.astype(variable[...].dtype)))
            used.add(key)
        if _layer_kind(layer) == "BatchNorm":
            used.add(_join(prefix, _TORCH_ONLY_BATCHNORM_KEY))
        loaded.add(id(layer))
    if strict:
        unexpected = [key for key in arrays if key not in used]
        if unexpected:
            raise ValueError(f"unexpected keys in state_dict: {unexpected}")
        missing = [path for path, layer in _layers(model) if id(layer) not in loaded]
        if missing:
            raise ValueError(f"missing keys: nnx layers {missing} are not in the mapping")
    for variable, value in assignments:
        variable[...] = jnp.asarray(value)


def export_torch_state_dict(
    model: nnx.Module, mapping: Mapping[str, str] | None = None
) -> dict[str, np.ndarray]:
    r"""An NNX model's parameters and batch statistics as a torch-style ``state_dict``.

    The inverse of :func:`load_torch_state_dict`: Linear kernels transposed to
    ``(out, in)``, Conv kernels HWIO :math:`\to` OIHW, BatchNorm ``scale, bias, mean,
    var`` as ``weight, bias, running_mean, running_var`` plus ``num_batches_tracked = 0``
    (int64; torch reads it only for ``momentum=None``).

    Args:
      model: the NNX model.
      mapping: ``{torch_prefix: nnx_path}`` naming the torch modules; default: every
        supported layer under its own NNX path (``"features.0"``), which are the keys of
        a torch model with the same attribute names.

    Returns:
      ``{key: np.ndarray}`` in mapping order; load into torch with
      ``torch_model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})``.

    Example:
      >>> from flax import nnx
      >>> from jaxopt_adv.models import SmallCNN
      >>> model = SmallCNN(1, (2,), 3, image_size=4, rngs=nnx.Rngs(0))
      >>> {k: v.shape for k, v in export_torch_state_dict(model).items()}  # doctest: +NORMALIZE_WHITESPACE
      {'features.0.weight': (2, 1, 3, 3), 'features.1.weight': (2,), 'features.1.bias': (2,),
       'features.1.running_mean': (2,), 'features.1.running_var': (2,),
       'features.1.num_batches_tracked': (), 'classifier.weight': (3, 8),
       'classifier.bias': (3,)}
    """
    if mapping is None:
        mapping = {path: path for path, _ in _layers(model)}
    state_dict: dict[str, np.ndarray] = {}
    for prefix, path in mapping.items():
        layer = _resolve(model, path)
        for field in _fields(layer):
            value = np.asarray(getattr(layer, field.nnx_name)[...])
            state_dict[_join(prefix, field.torch_name)] = np.array(field.to_torch(value))
        if _layer_kind(layer) == "BatchNorm":
            state_dict[_join(prefix, _TORCH_ONLY_BATCHNORM_KEY)] = np.array(0, np.int64)
    return state_dict


def torch_param_order(model: Any, mapping: Mapping[str, str] | None = None) -> tuple[Any, Any]:
    """``(order, layout)`` for ``nnx.state(model, nnx.Param)``: torch's parameter index and
    layout of each leaf, for the torch model whose weights
    :func:`jaxopt_adv.interop.load_torch_state_dict` loads with ``mapping``.

    Args:
      model: the Flax NNX model.
      mapping: ``{torch_prefix: nnx_path}`` in torch's module order (as
        :func:`jaxopt_adv.interop.default_mapping` returns it); default: the NNX layers in
        definition order, as :func:`jaxopt_adv.interop.export_torch_state_dict` names them.

    Returns:
      Two pytrees like ``nnx.state(model, nnx.Param)``: ints (torch's ``weight`` before
      ``bias``, module after module) and ``"linear"`` / ``"conv"`` / ``"torch"``.

    Example:
      >>> from flax import nnx
      >>> from jaxopt_adv.models import MLP
      >>> import jax
      >>> order, layout = torch_param_order(MLP(4, (3,), 2, rngs=nnx.Rngs(0)))
      >>> jax.tree.leaves(order)  # bias, kernel, bias, kernel
      [1, 0, 3, 2]
      >>> jax.tree.leaves(layout)
      ['torch', 'linear', 'torch', 'linear']
    """
    if mapping is None:
        mapping = {path: path for path, _ in _layers(model)}
    table: dict[tuple[str, str], tuple[int, str]] = {}
    for path in mapping.values():
        layer = _resolve(model, path)
        kind = _layer_kind(layer)
        for field in _fields(layer):
            if field.torch_name not in ("weight", "bias"):
                continue
            layout = "torch"
            if field.nnx_name == "kernel":
                layout = "linear" if kind == "Linear" else "conv"
            key = (path.replace("/", "."), field.nnx_name)
            table[key] = (len(table), layout)
    params = nnx.state(model, nnx.Param)

    def entry(path: tuple, _: Any, part: int) -> Any:
        names = [str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey)]
        key = (".".join(names[:-1]), names[-1])
        if key not in table:
            raise ValueError(f"nnx parameter {'.'.join(names)!r} is not in the mapping")
        return table[key][part]

    order = jax.tree_util.tree_map_with_path(lambda p, x: entry(p, x, 0), params)
    layout = jax.tree_util.tree_map_with_path(lambda p, x: entry(p, x, 1), params)
    return order, layout


# the optimizer and scheduler checkpoints: jaxopt_adv.torch_state (it reads the layers above)
from jaxopt_adv.torch_scheduler_state import (  # noqa: E402
    export_torch_scheduler_state,
    load_torch_scheduler_state,
)
from jaxopt_adv.torch_state import (  # noqa: E402
    export_torch_optimizer_state,
    load_torch_optimizer_state,
)
