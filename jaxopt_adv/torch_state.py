r"""torch optimizer and LR-scheduler checkpoints as optax states, and back.

:func:`load_torch_optimizer_state` turns ``torch_optimizer.state_dict()`` into the state
of the matching :mod:`jaxopt_adv.torch` transform, so a run saved by torch resumes in
JAX step for step; :func:`export_torch_optimizer_state` writes a state as a dict that
``torch_optimizer.load_state_dict`` accepts (``param_groups`` with the hyperparameters,
``state`` per parameter index with torch's key names and dtypes), so a JAX run resumes
in torch. :func:`load_torch_scheduler_state` / :func:`export_torch_scheduler_state` do
the same for ``torch.optim.lr_scheduler`` (``last_epoch``; ReduceLROnPlateau's ``best``,
``num_bad_epochs`` and ``cooldown_counter``).

**Which transform.** ``tx`` is built by a :mod:`jaxopt_adv.torch` factory (``sgd``,
``adam``, ``adamw``, ``adamax``, ``nadam``, ``radam``, ``rmsprop``, ``adagrad``,
``adadelta``, ``asgd``, ``rprop``, ``adafactor``, ``sparse_adam``, ``muon``; ``lbfgs``
is refused: its state is one flat history, not torch's per-step lists), possibly inside
``optax.chain`` (with gradient clipping, say) or, for several torch parameter groups,
``optax.partition`` with one such factory per label; a
:class:`jaxopt_adv.fast.FusedOptimizer` (``flat_state`` included) works too. The
hyperparameters are read from the factory's arguments; on load they must equal the
checkpoint's (the learning rate excepted: torch's schedulers change it), so that a
state_dict of another optimizer is refused.

**Which parameter is which.** torch numbers the parameters group after group, in the
order they were given. Here, by default, the leaves of ``params`` in
``jax.tree.leaves`` order are torch's parameters ``0, 1, ...``; with ``optax.partition``
the groups are the partition's labels in the order of its ``transforms`` mapping and
each group's parameters its leaves in ``jax.tree.leaves`` order. ``order`` (a pytree like
``params`` of torch indices) and ``layout`` (a pytree of ``"torch"``, ``"linear"``:
the leaf is torch's 2-D weight transposed, or ``"conv"``: OIHW as HWIO) say otherwise;
:func:`jaxopt_adv.interop.torch_param_order` computes both for an NNX model whose weights
:func:`jaxopt_adv.interop.load_torch_state_dict` loads.

Loading never imports torch (values may be tensors or arrays); exporting does, to make
tensors.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_adv import interop
from jaxopt_adv import torch as torch_exact
from jaxopt_adv.torch._twin import TorchTwin, twin_of
from jaxopt_adv.torch.asgd import asgd_coefficients
from jaxopt_adv.torch_state_keys import OURS_ONLY, SPECS, Field, Spec

__all__ = [
    "export_torch_optimizer_state",
    "load_torch_optimizer_state",
]

_LAYOUTS = ("torch", "linear", "conv")


# ------------------------------------------------------------------ walking the state


class _Group(NamedTuple):
    """One torch parameter group: its transform's twin, where its state sits, its leaves."""

    twin: TorchTwin
    path: tuple  # keys from the whole state down to the twin's state
    leaves: list[int]  # leaf positions (jax.tree.leaves(params)) in the group


def _closure(fn: Callable, name: str) -> Any:
    """The value ``fn`` closes over as ``name`` (optax's chain / partition), or ``None``."""
    code = getattr(fn, "__code__", None)
    cells = getattr(fn, "__closure__", None) or ()
    if code is None:
        return None
    values = dict(zip(code.co_freevars, cells, strict=False))
    return values[name].cell_contents if name in values else None


def _twins(update: Callable, state: Any, path: tuple) -> list[tuple[TorchTwin, tuple]]:
    """Every decorated factory's transform inside ``update`` (through ``optax.chain``)."""
    twin = twin_of(optax.GradientTransformation(None, update))
    if twin is not None:
        return [(twin, path)]
    update_fns = _closure(update, "update_fns")
    if isinstance(update_fns, (list, tuple)) and isinstance(state, tuple):
        found = []
        for i, fn in enumerate(update_fns):
            found += _twins(fn, state[i], (*path, i))
        return found
    return []


def _unwrap(tx: Any) -> tuple[optax.GradientTransformation, Callable, Callable]:
    """The optax transform of ``tx`` and the conversions to and from its state layout."""
    to_tree = getattr(tx, "to_tree_state", None)
    if to_tree is not None and hasattr(tx, "tx"):  # a jaxopt_adv.fast.FusedOptimizer
        if tx.inject_hyperparams:
            raise ValueError("a FusedOptimizer built with inject_hyperparams is not supported")
        return tx.tx, to_tree, tx.from_tree_state
    return tx, (lambda s, p: s), (lambda s, p: s)


def _groups(tx: optax.GradientTransformation, state: Any, params: Any) -> list[_Group]:
    """torch's parameter groups of ``tx``: one, or one per ``optax.partition`` label."""
    n = len(jax.tree.leaves(params))
    transforms = _closure(tx.update, "transforms")
    if isinstance(state, optax.PartitionState) and isinstance(transforms, Mapping):
        labels_of = _closure(tx.update, "param_labels")
        labels = labels_of(params) if callable(labels_of) else labels_of
        leaf_labels = jax.tree.structure(params).flatten_up_to(jax.tree.broadcast(labels, params))
        groups = []
        for label, inner in transforms.items():
            path = ("inner_states", label, "inner_state")
            found = _twins(inner.update, _get(state, path), path)
            members = [i for i, lab in enumerate(leaf_labels) if lab == label]
            groups.append(_Group(*_single(found, f"label {label!r}"), members))
        return groups
    return [_Group(*_single(_twins(tx.update, state, ()), "the transform"), list(range(n)))]


def _single(found: list, where: str) -> tuple[TorchTwin, tuple]:
    if len(found) != 1:
        raise ValueError(
            f"{where} holds {len(found)} jaxopt_adv.torch optimizers, expected exactly one "
            "(built by a jaxopt_adv.torch factory, alone or in optax.chain; several torch "
            "param groups are an optax.partition of them; optax.inject_hyperparams is not "
            "supported)"
        )
    twin, path = found[0]
    if twin.torch_class not in SPECS:
        raise ValueError(
            f"torch.optim.{twin.torch_class} checkpoints are not supported: its state "
            "(closures' search histories) has no per-parameter layout to convert"
        )
    return twin, path


def _get(state: Any, path: tuple) -> Any:
    for key in path:
        state = (
            state[key]
            if isinstance(key, int) or isinstance(state, Mapping)
            else getattr(state, key)
        )
    return state


def _set(state: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    key, rest = path[0], path[1:]
    if isinstance(state, Mapping):
        return {**state, key: _set(state[key], rest, value)}
    if isinstance(key, int):
        items = list(state)
        items[key] = _set(items[key], rest, value)
        return type(state)(*items) if hasattr(state, "_fields") else type(state)(items)
    return state._replace(**{key: _set(getattr(state, key), rest, value)})


def _map_nodes(state: Any, fn: Callable[[Any], Any]) -> Any:
    """``state`` with every NamedTuple node replaced by ``fn(node)`` (children first)."""
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        return fn(type(state)(*(_map_nodes(c, fn) for c in state)))
    if isinstance(state, (tuple, list)):
        return type(state)(_map_nodes(c, fn) for c in state)
    if type(state) is dict:  # optax.partition's states; a params container is left as is
        return {k: _map_nodes(v, fn) for k, v in state.items()}
    return state


def _nodes(state: Any, cls: type) -> list[Any]:
    found: list[Any] = []
    _map_nodes(state, lambda node: found.append(node) if isinstance(node, cls) else None)
    return found


def _count(state: Any, spec: Spec) -> int | None:
    """The steps taken, from the algorithm's (or its schedule's) ``count``."""
    for cls in dict.fromkeys(f.state_type for f in spec.fields):
        for node in _nodes(state, cls):
            if "count" in node._fields:
                return int(node.count)
    for node in _nodes(state, optax.ScaleByScheduleState):
        return int(node.count)
    return None


# ------------------------------------------------------------------ layouts


def _leaf_options(tree: Any, params: Any, name: str, default: Any, allowed=None) -> list:
    if tree is None:
        return [default] * len(jax.tree.leaves(params))
    values = jax.tree.structure(params).flatten_up_to(tree)
    if allowed is not None:
        for v in values:
            if v not in allowed:
                raise ValueError(f"{name}: {v!r} is not one of {allowed}")
    return values


def _to_jax(value: np.ndarray, layout: str, key: str) -> np.ndarray:
    """A torch state tensor in our leaf's layout (Adafactor's factors swap roles)."""
    if layout == "linear" and value.ndim == 2:
        return value.T
    if layout == "conv" and value.ndim == 4:
        if key in ("row_var", "col_var"):
            raise ValueError("Adafactor's factored state of a conv kernel cannot be converted")
        return value.transpose(2, 3, 1, 0)
    return value


def _to_torch(value: np.ndarray, layout: str) -> np.ndarray:
    if layout == "linear" and value.ndim == 2:
        return value.T
    if layout == "conv" and value.ndim == 4:
        return value.transpose(3, 2, 0, 1)
    return value


def _field_key(field: Field, layout: str) -> str:
    """torch's key for our ``field`` of a leaf: a transposed matrix swaps rows and columns."""
    swap = {"row_var": "col_var", "col_var": "row_var"}
    return swap.get(field.torch_key, field.torch_key) if layout == "linear" else field.torch_key


# ------------------------------------------------------------------ hyperparameters


def _plain(value: Any) -> Any:
    """A hyperparameter as torch keeps it (Python numbers, tuples)."""
    if isinstance(value, (tuple, list)):
        return tuple(_plain(v) for v in value)
    if isinstance(value, (jax.Array, np.ndarray, np.generic)) and np.ndim(value) == 0:
        array = np.asarray(value)
        return array.item()
    return value


def _torch_group(twin: TorchTwin, lr: Any) -> dict[str, Any]:
    """torch's ``param_groups`` entry (without ``params``) for ``twin``."""
    args = twin.arguments
    group: dict[str, Any] = {"lr": lr}
    for name, value in args.items():
        if name in OURS_ONLY or name in ("learning_rate", "b2"):
            continue
        if name == "b1":
            group["betas"] = (_plain(value), _plain(args["b2"]))
        else:
            group[name] = _plain(value)
    if "momentum" in group and group["momentum"] is None:
        group["momentum"] = 0
    if twin.torch_class == "AdamW":
        group["decoupled_weight_decay"] = True
    group.update(SPECS[twin.torch_class].flags)
    return group


def _lr_at(twin: TorchTwin, count: int) -> float:
    lr = twin.arguments["learning_rate"]
    return _plain(lr(count)) if callable(lr) else _plain(lr)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, tuple) or isinstance(b, tuple):
        a, b = tuple(a), tuple(b)
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=0.0) or a == b
    return a == b


def _check_group(torch_group: Mapping, twin: TorchTwin, g: int) -> None:
    """The checkpoint's group must be this optimizer's, with these hyperparameters."""
    ours = _torch_group(twin, None)
    flags = SPECS[twin.torch_class].flags
    for key, value in ours.items():
        if key == "lr" or key in flags:
            continue
        if key not in torch_group:
            raise ValueError(
                f"param_groups[{g}] has no {key!r}: not a torch.optim.{twin.torch_class} "
                f"state_dict (its keys: {sorted(k for k in torch_group if k != 'params')})"
            )
        theirs = _plain(torch_group[key])
        if (
            value is not None
            and not isinstance(value, jax.core.Tracer)
            and not _same(value, theirs)
        ):
            raise ValueError(
                f"param_groups[{g}][{key!r}] is {theirs!r} in the checkpoint but "
                f"{value!r} in the torch.optim.{twin.torch_class} transform"
            )


# ------------------------------------------------------------------ parameter order


def _torch_indices(groups: list[_Group], params: Any, order: Any) -> list[int]:
    """torch's index of every leaf (group after group by default)."""
    n = len(jax.tree.leaves(params))
    if order is not None:
        indices = [int(i) for i in _leaf_options(order, params, "order", None)]
        if sorted(indices) != list(range(n)):
            raise ValueError(f"order must number the {n} leaves 0..{n - 1}, got {indices}")
        return indices
    indices = [-1] * n
    running = 0
    for group in groups:
        for leaf in group.leaves:
            indices[leaf] = running
            running += 1
    return indices


def _members(group: _Group, indices: list[int]) -> list[tuple[int, int]]:
    """``(torch index, leaf)`` of a group's parameters, by torch index."""
    return sorted((indices[leaf], leaf) for leaf in group.leaves)


# ------------------------------------------------------------------ optimizer state


def _entries(state: Mapping, torch_index: int) -> Mapping | None:
    """The checkpoint's state of one parameter (keys may have become strings)."""
    if torch_index in state:
        return state[torch_index]
    return state.get(str(torch_index))


def _unique(sub: Any, cls: type) -> Any:
    nodes = _nodes(sub, cls)
    if len(nodes) > 1:
        raise ValueError(f"{cls.__name__} occurs {len(nodes)} times in one group's state")
    return nodes[0] if nodes else None


def _present(sub: Any, spec: Spec) -> list[Field]:
    """The fields of ``spec`` this state holds (an option may leave some out)."""
    return [
        f
        for f in spec.fields
        if (node := _unique(sub, f.state_type)) is not None and getattr(node, f.name) is not None
    ]


def _group_step(entries: list[Mapping | None], g: int) -> int | None:
    steps = {int(np.asarray(interop.to_numpy(e["step"]))) for e in entries if e and "step" in e}
    if len(steps) > 1:
        raise ValueError(f"param_groups[{g}]'s parameters are at different steps {sorted(steps)}")
    return steps.pop() if steps else None


def load_torch_optimizer_state(
    state_dict: Mapping[str, Any],
    tx: Any,
    params: Any,
    *,
    order: Any = None,
    layout: Any = None,
) -> optax.OptState:
    """The optax state of ``tx`` that continues a torch optimizer from its ``state_dict()``.

    Args:
      state_dict: ``torch_optimizer.state_dict()`` (tensors or arrays), e.g. read back
        with ``torch.load``.
      tx: the matching transform (see the module docstring): a :mod:`jaxopt_adv.torch`
        factory's, alone, in ``optax.chain`` or per label in ``optax.partition``, or a
        :class:`jaxopt_adv.fast.FusedOptimizer`.
      params: the parameters (the model's weights as loaded from torch); their leaves in
        torch's parameter order unless ``order`` says otherwise.
      order: optional pytree like ``params`` of torch parameter indices.
      layout: optional pytree like ``params`` of ``"torch"`` / ``"linear"`` / ``"conv"``.

    Returns:
      ``tx.init(params)`` with the checkpoint's step counts and per-parameter tensors
      (cast to the state's dtypes); ``tx.update`` then takes torch's next step. The
      learning-rate schedule's count is the optimizer's step (SGD and Muon keep none:
      load the scheduler's with :func:`load_torch_scheduler_state`).

    Raises:
      ValueError: a state_dict of another optimizer (its hyperparameter or state keys),
        other hyperparameters (the lr excepted), another number of groups or of
        parameters per group, another shape, or a transform that is not supported.

    Example:
      >>> import jax.numpy as jnp, numpy as np, optax
      >>> import jaxopt_adv
      >>> tx = jaxopt_adv.torch.sgd(0.1, momentum=0.9)
      >>> checkpoint = {"state": {0: {"momentum_buffer": np.ones(2)}},
      ...               "param_groups": [{"lr": 0.1, "momentum": 0.9, "dampening": 0,
      ...                                 "weight_decay": 0, "nesterov": False,
      ...                                 "maximize": False, "params": [0]}]}
      >>> state = load_torch_optimizer_state(checkpoint, tx, jnp.zeros(2))
      >>> optax.tree.get(state, "trace")
      Array([1., 1.], dtype=float32)
    """
    base, _, from_tree = _unwrap(tx)
    state = base.init(params)
    groups = _groups(base, state, params)
    torch_groups = list(state_dict["param_groups"])
    if len(torch_groups) != len(groups):
        raise ValueError(
            f"the state_dict has {len(torch_groups)} param_groups, the transform {len(groups)}"
            " (several groups map to optax.partition, one label per group)"
        )
    indices = _torch_indices(groups, params, order)
    layouts = _leaf_options(layout, params, "layout", "torch", _LAYOUTS)
    torch_state = state_dict["state"]
    treedef = jax.tree.structure(params)
    for g, (group, torch_group) in enumerate(zip(groups, torch_groups, strict=True)):
        _check_group(torch_group, group.twin, g)
        members = _members(group, indices)
        theirs = sorted(int(i) for i in torch_group["params"])
        if [i for i, _ in members] != theirs:
            raise ValueError(
                f"param_groups[{g}] holds parameters {theirs}, the transform's group "
                f"{[i for i, _ in members]} ({len(theirs)} vs {len(members)} parameters)"
            )
        sub = _load_group(_get(state, group.path), torch_state, group, members, layouts, g, treedef)
        state = _set(state, group.path, sub)
    return from_tree(state, params)


def _load_group(
    sub: Any,
    torch_state: Mapping,
    group: _Group,
    members: list[tuple[int, int]],
    layouts: list[str],
    g: int,
    treedef: Any,
) -> Any:
    """One group's state ``sub`` with the checkpoint's values."""
    torch_class = group.twin.torch_class
    spec = SPECS[torch_class]
    fields = _present(sub, spec)
    entries = [_entries(torch_state, i) for i, _ in members]
    known = {"step", *spec.scalars, *(f.torch_key for f in spec.fields)}
    for (i, _), entry in zip(members, entries, strict=True):
        unexpected = sorted(set(entry or ()) - known)
        if unexpected:
            raise ValueError(
                f"state[{i}] has keys {unexpected}: not a torch.optim.{torch_class} state_dict"
            )
    values: dict[tuple[type, str], dict[int, np.ndarray]] = {}
    for f in fields:
        for (i, leaf), entry in zip(members, entries, strict=True):
            key = _field_key(f, layouts[leaf])
            if not entry or key not in entry:
                if (
                    entry
                    and not f.torch_key.startswith("momentum")
                    and f.torch_key
                    not in (
                        "row_var",
                        "col_var",
                        "variance",
                        "max_exp_avg_sq",
                    )
                ):
                    raise ValueError(f"state[{i}] has no {key!r} (torch.optim.{torch_class})")
                continue
            # a copy: a live state_dict's tensors are torch's buffers, updated in place
            copied = np.array(interop.to_numpy(entry[key]))
            values.setdefault((f.state_type, f.name), {})[leaf] = _to_jax(
                copied, layouts[leaf], key
            )
    step = _group_step(entries, g)
    if spec.step == "none":
        step = 1 if any(values.values()) else 0

    def replace(node: Any) -> Any:
        changes = {}
        for (cls, name), leaves in values.items():
            if isinstance(node, cls):
                changes[name] = _replace_leaves(getattr(node, name), leaves, g, treedef)
        if isinstance(node, (*{f.state_type for f in spec.fields}, optax.ScaleByScheduleState)):
            if "count" in node._fields and step is not None:
                changes["count"] = jnp.asarray(step, node.count.dtype)
        if isinstance(node, torch_exact.ScaleByNadamState) and step:
            first = next(e for e in entries if e and "mu_product" in e)
            product = np.array(interop.to_numpy(first["mu_product"]))
            changes["mu_product"] = jnp.asarray(product, node.mu_product.dtype)
        return node._replace(**changes) if changes else node

    return _map_nodes(sub, replace)


def _replace_leaves(tree: Any, values: dict[int, np.ndarray], g: int, treedef: Any) -> Any:
    """``tree`` (a per-parameter field, laid out like the params) with some leaves replaced."""
    items = treedef.flatten_up_to(tree)
    for leaf, value in values.items():
        old = items[leaf]
        if not hasattr(old, "shape"):
            raise ValueError(f"param_groups[{g}]: the state has no tensor for leaf {leaf}")
        if tuple(value.shape) != tuple(old.shape):
            raise ValueError(
                f"param_groups[{g}]: a tensor of shape {tuple(value.shape)} for a state leaf "
                f"of shape {tuple(old.shape)} (params in another order or layout?)"
            )
        items[leaf] = jnp.asarray(value, old.dtype)
    return treedef.unflatten(items)


def _torch() -> Any:
    try:
        return importlib.import_module("torch")
    except ImportError as error:  # pragma: no cover - torch is a test dependency
        raise ImportError("exporting a torch checkpoint needs torch installed") from error


def export_torch_optimizer_state(
    opt_state: optax.OptState,
    tx: Any,
    params: Any,
    *,
    order: Any = None,
    layout: Any = None,
    step: int | None = None,
) -> dict[str, Any]:
    """``opt_state`` as a dict that ``torch_optimizer.load_state_dict`` accepts.

    Args:
      opt_state: the state of ``tx``.
      tx: as for :func:`load_torch_optimizer_state`.
      params: the parameters (for the tree structure and the leaves' order).
      order: optional pytree like ``params`` of torch parameter indices.
      layout: optional pytree like ``params`` of ``"torch"`` / ``"linear"`` / ``"conv"``.
      step: the number of steps taken, for the optimizers whose state keeps no count
        (RMSprop, Adadelta, Rprop without a schedule); otherwise read from the state.

    Returns:
      ``{"state": {index: {key: tensor}}, "param_groups": [{..., "params": [...]}]}``
      with torch's keys, ``step`` as a scalar tensor in torch's scalar dtype (float32
      unless torch's default dtype is float64; an int for SparseAdam), the other tensors
      in the state's dtypes, and each group's ``lr`` the one in force for the next step.
      Parameters at step 0 have no entry, as in torch.

    Raises:
      ValueError: as :func:`load_torch_optimizer_state`; and a missing ``step``.

    Example:
      >>> import jax.numpy as jnp
      >>> import jaxopt_adv
      >>> tx = jaxopt_adv.torch.adamw(1e-3)
      >>> params = {"w": jnp.ones(2)}
      >>> state = tx.update({"w": jnp.ones(2)}, tx.init(params), params)[1]
      >>> checkpoint = export_torch_optimizer_state(state, tx, params)
      >>> sorted(checkpoint["state"][0]), checkpoint["param_groups"][0]["betas"]
      (['exp_avg', 'exp_avg_sq', 'step'], (0.9, 0.999))
    """
    torch = _torch()
    scalar = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
    base, to_tree, _ = _unwrap(tx)
    state = to_tree(opt_state, params)
    groups = _groups(base, state, params)
    indices = _torch_indices(groups, params, order)
    layouts = _leaf_options(layout, params, "layout", "torch", _LAYOUTS)
    treedef = jax.tree.structure(params)
    torch_state: dict[int, dict[str, Any]] = {}
    param_groups = []
    for group in groups:
        sub = _get(state, group.path)
        spec = SPECS[group.twin.torch_class]
        count = _count(sub, spec)
        if count is None:  # plain SGD keeps no state at all, as torch's
            count = 0 if spec.step == "none" else step
        if count is None:
            raise ValueError(
                f"the torch.optim.{group.twin.torch_class} state keeps no step count: "
                "pass step= (the number of steps taken)"
            )
        lr = _lr_at(group.twin, count) * _plateau_scale(state)
        torch_group = _torch_group(group.twin, lr)
        members = _members(group, indices)
        param_groups.append({**torch_group, "params": [i for i, _ in members]})
        if count == 0:
            continue
        scalars = _scalars(sub, group.twin, count)
        for i, leaf in members:
            entry: dict[str, Any] = {}
            if spec.step == "tensor":
                entry["step"] = torch.tensor(float(count), dtype=scalar)
            elif spec.step == "int":
                entry["step"] = count
            for name, value in scalars.items():
                entry[name] = torch.tensor(value, dtype=scalar)
            for f in _present(sub, spec):
                if f.torch_key == "momentum_buffer" and torch_group.get("momentum", 1) == 0:
                    continue
                item = treedef.flatten_up_to(getattr(_unique(sub, f.state_type), f.name))[leaf]
                if item is None:
                    continue
                value = np.array(_to_torch(np.asarray(item), layouts[leaf]))
                entry[_field_key(f, layouts[leaf])] = torch.from_numpy(value)
            torch_state[i] = entry
    return {"state": torch_state, "param_groups": param_groups}


def _plateau_scale(state: Any) -> float:
    """The factor a ``reduce_lr_on_plateau`` in the chain applies to the lr (1 without)."""
    plateaus = _nodes(state, torch_exact.ReduceLROnPlateauState)
    return float(plateaus[0].scale) if len(plateaus) == 1 else 1.0


def _scalars(sub: Any, twin: TorchTwin, count: int) -> dict[str, float]:
    """NAdam's ``mu_product``, ASGD's ``eta`` and ``mu`` after ``count`` steps."""
    nadam = _unique(sub, torch_exact.ScaleByNadamState)
    if twin.torch_class == "NAdam" and nadam is not None:
        return {"mu_product": float(nadam.mu_product)}
    if twin.torch_class == "ASGD":
        args = twin.arguments
        eta, mu = asgd_coefficients(
            args["learning_rate"], args["lambd"], args["alpha"], args["t0"], jnp.int32(count)
        )
        return {"eta": float(eta), "mu": float(mu)}
    return {}
