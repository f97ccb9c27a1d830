"""Checkpoints with orbax: any array tree (a ``TrainState``), atomically, verified on load.

A checkpoint is one orbax directory holding the arrays (by leaf index; orbax cannot store
zero-size arrays, which optimizers use as placeholders, so those are rebuilt from the
record) and a small JSON record of the tree's structure, leaf paths, shapes, dtypes and
the SHA-256 digest of each array's bytes. ``restore_checkpoint`` compares that record with
the target before reading any array, reads everything into fresh arrays, checks every
digest, and only then returns: a checkpoint that is missing, truncated, corrupt (a single
flipped bit included) or saved for a different model/optimizer raises
:class:`CheckpointError` (naming the leaves that differ) and nothing is half-loaded.

With ``jax.distributed``, every process calls :func:`save_checkpoint` (and
:func:`restore_checkpoint`) with the same tree at the same point: orbax writes (reads)
each process's shards, and an array sharded across processes is gathered to every
process for its digest (one all-gather per array).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

FORMAT = "jaxopt_adv.checkpoint/3"
# checkpoints written before the digests were recorded: restored without that check
FORMAT_WITHOUT_DIGESTS = "jaxopt_adv.checkpoint/2"


class CheckpointError(ValueError):
    """A checkpoint cannot be restored into the requested target."""


def _describe(tree: Any) -> dict[str, Any]:
    """Structure, leaf paths, shapes and dtypes of an array tree, as JSON-able data."""
    leaves, treedef = jax.tree.flatten(tree)
    return {
        "format": FORMAT,
        "treedef": str(treedef),
        "paths": _leaf_paths(tree),
        "leaves": [[list(x.shape), str(x.dtype)] for x in map(_as_array_like, leaves)],
    }


def _host_value(x: Any) -> Any:
    """``x`` with its values readable on this host: a PRNG key's key data; an array sharded
    across processes (``jax.distributed``) gathered from all of them (a collective: every
    process calls this for the same arrays in the same order)."""
    x = _as_array_like(x)
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        if x.is_fully_replicated:
            return x.addressable_data(0)
        return multihost_utils.process_allgather(x, tiled=True)
    return x


def _sha256(x: Any) -> str:
    """Hex SHA-256 of a host-readable array's values (:func:`_host_value`) as C-ordered
    bytes."""
    host = np.ascontiguousarray(x)  # gathers a sharded array; no copy for a host one
    return hashlib.sha256(host.reshape(-1).view(np.uint8)).hexdigest()


def _leaf_paths(tree: Any) -> list[str]:
    """Each leaf's path, naming the class of every NamedTuple or dataclass on the way
    (``[0] ScaleByAdamState.mu ['w']``): two optimizers' states often share field names."""
    keyed, treedef = jax.tree_util.tree_flatten_with_path(tree)
    paths = []
    for (keys, _), owners in zip(keyed, _ancestor_types(treedef), strict=True):
        if len(keys) != len(owners):  # a custom node without one key per child
            paths.append(jax.tree_util.keystr(keys))
            continue
        steps = [
            f"{owner.__name__}.{key.name}"
            if isinstance(key, jax.tree_util.GetAttrKey)
            else jax.tree_util.keystr((key,))
            for key, owner in zip(keys, owners, strict=True)
        ]
        paths.append(" ".join(steps))
    return paths


def _ancestor_types(treedef: Any) -> list[list[type]]:
    """For each leaf of ``treedef``, the types of the nodes above it, outermost first."""
    if treedef.node_data() is None:  # a leaf
        return [[]]
    node_type = treedef.node_data()[0]
    return [[node_type, *above] for child in treedef.children() for above in _ancestor_types(child)]


def _tree_difference(saved: list[str], expected: list[str]) -> str:
    """The leaves only one of two trees has, a few of each, one line per side."""
    lines = []
    for side, paths, other in (
        ("only in the checkpoint", saved, set(expected)),
        ("only in the target", expected, set(saved)),
    ):
        missing = [p for p in paths if p not in other]
        if missing:
            more = f", ... ({len(missing)} leaves)" if len(missing) > 3 else ""
            lines.append(f"  {side}: {', '.join(missing[:3])}{more}")
    return "\n".join(lines)


def _first_divergence(saved: str, expected: str, context: int = 80) -> str:
    """Both tree descriptions around the first character where they differ (the trees
    have the same leaves; a leafless node such as a stateless block's ``EmptyState``
    differs)."""
    at = next(
        (i for i, (a, b) in enumerate(zip(saved, expected, strict=False)) if a != b),
        min(len(saved), len(expected)),
    )
    start = max(at - context, 0)

    def excerpt(text: str) -> str:
        end = at + context
        return ("..." if start else "") + text[start:end] + ("..." if end < len(text) else "")

    return f"  saved:    {excerpt(saved)}\n  expected: {excerpt(expected)}"


def _as_array_like(x: Any) -> Any:
    return x if hasattr(x, "shape") and hasattr(x, "dtype") else np.asarray(x)


def _leaf_key(index: int) -> str:
    """The name orbax stores the leaf ``index`` of the tree under."""
    return f"leaf_{index:05d}"


def _stored_leaves(tree: Any) -> dict[str, Any]:
    """The leaves orbax stores: every non-empty one, keyed by its index in the tree."""
    return {
        _leaf_key(i): x
        for i, x in enumerate(jax.tree.leaves(tree))
        if np.prod(_as_array_like(x).shape) != 0
    }


def _digests(stored: dict[str, Any]) -> dict[str, str]:
    """The SHA-256 of each stored leaf, by its key (in threads: hashlib releases the GIL)."""
    values = [_host_value(x) for x in stored.values()]  # in order: may be collectives
    with ThreadPoolExecutor() as pool:
        return dict(zip(stored, pool.map(_sha256, values), strict=True))


def _empty_like(x: Any) -> jax.Array:
    """A zero-size array with the shape, dtype and (when known) sharding of ``x``."""
    sharding = getattr(x, "sharding", None)
    return jnp.zeros(x.shape, x.dtype, device=sharding)


def _checkpointer() -> ocp.Checkpointer:
    return ocp.Checkpointer(ocp.CompositeCheckpointHandler())


def save_checkpoint(path: str | os.PathLike, tree: Any) -> Path:
    """Save an array tree to the directory ``path`` (which must not exist yet).

    orbax writes to a temporary directory and renames it when complete; a save that fails
    (a full disk, an interrupt) removes that directory, so it leaves no checkpoint
    behind rather than a partial one, and the other checkpoints are untouched. The
    SHA-256 of every array's bytes is recorded, for :func:`restore_checkpoint` to check.

    Args:
      path: target directory, e.g. ``run/checkpoints/step_000100``.
      tree: any pytree of arrays (params, optimizer state, step, RNG keys, ...); a tree
        without arrays (``{}``, a stateless optimizer's state) is saved too.

    Returns:
      The checkpoint's path.

    Raises:
      CheckpointError: ``path`` exists, or the save failed (the cause is chained).
    """
    path = Path(path).absolute()
    if path.exists():
        raise CheckpointError(f"checkpoint {path} already exists; refusing to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = _stored_leaves(tree)
    layout = {**_describe(tree), "sha256": _digests(stored)}
    items = {"layout": ocp.args.JsonSave(layout)}
    if stored:  # orbax refuses an empty item
        items["state"] = ocp.args.StandardSave(stored)
    with _checkpointer() as checkpointer:
        temporary = Path(checkpointer.get_temporary_path(epath.Path(path)).get())
        running = set(threading.enumerate())
        try:
            checkpointer.save(path, args=ocp.args.Composite(**items))
        except Exception as error:
            _remove_failed_save(temporary, running)
            raise CheckpointError(f"could not save checkpoint {path}: {error}") from error
        except BaseException:  # an interrupt
            _remove_failed_save(temporary, running)
            raise
    return path


def _remove_failed_save(temporary: Path, running: set[threading.Thread]) -> None:
    """Remove the temporary directory of a failed save. orbax raises at the first item
    that fails while its threads still write the others: wait for them first."""
    for thread in set(threading.enumerate()) - running:
        if type(thread).__module__.startswith("orbax."):
            thread.join(timeout=60)
    shutil.rmtree(temporary, ignore_errors=True)


def restore_checkpoint(path: str | os.PathLike, target: Any) -> Any:
    """Restore the tree saved at ``path``; ``target`` gives its structure, shapes and dtypes.

    Every array read is checked against the SHA-256 recorded when it was saved.
    Checkpoints written before the digests were recorded (``jaxopt_adv.checkpoint/2``)
    still restore, with every other check but that one.

    Args:
      path: a directory written by :func:`save_checkpoint`.
      target: a tree like the saved one: concrete arrays or ``jax.ShapeDtypeStruct``
        (e.g. from ``jax.eval_shape``); its shardings are used for the restored arrays.

    Returns:
      A new tree with the saved values.

    Raises:
      CheckpointError: the checkpoint is missing, incomplete or unreadable, its bytes
        differ from the ones saved (naming the leaves), or it was saved for a tree of
        another structure, shape or dtype (e.g. another optimizer).
    """
    path = Path(path).absolute()
    if not path.is_dir():
        raise CheckpointError(f"no checkpoint at {path}")
    expected = _describe(target)
    abstract = _stored_leaves(jax.tree.map(ocp.utils.to_shape_dtype_struct, target))
    with _checkpointer() as checkpointer:
        try:
            saved = checkpointer.restore(
                path, args=ocp.args.Composite(layout=ocp.args.JsonRestore())
            )["layout"]
        except Exception as error:  # orbax raises many types for damaged directories
            raise CheckpointError(f"checkpoint {path} is incomplete or corrupt: {error}") from error
        _check_layout(path, saved, expected)
        digests = saved.get("sha256")
        if saved["format"] == FORMAT and not (
            isinstance(digests, dict) and digests.keys() == abstract.keys()
        ):
            raise CheckpointError(f"checkpoint {path} is corrupt: its digests are damaged")
        stored = _read_arrays(checkpointer, path, abstract, expected["paths"]) if abstract else {}
    if saved["format"] == FORMAT:
        _check_digests(path, digests, stored, expected["paths"])
    leaves, treedef = jax.tree.flatten(target)
    return treedef.unflatten(
        [
            stored[key] if (key := _leaf_key(i)) in stored else _empty_like(x)
            for i, x in enumerate(leaves)
        ]
    )


def _check_layout(path: Path, saved: Any, expected: dict[str, Any]) -> None:
    """Raise a :class:`CheckpointError` unless the saved record describes ``expected``'s tree."""
    if not isinstance(saved, dict) or saved.get("format") not in (FORMAT, FORMAT_WITHOUT_DIGESTS):
        raise CheckpointError(f"{path} is not a {FORMAT} checkpoint")
    if not {"treedef", "leaves"} <= saved.keys():
        raise CheckpointError(f"checkpoint {path} is corrupt: its tree record is damaged")
    if saved["treedef"] != expected["treedef"]:
        # "paths" is absent in checkpoints written before it was recorded
        difference = "paths" in saved and _tree_difference(saved["paths"], expected["paths"])
        raise CheckpointError(
            f"checkpoint {path} holds a different tree (another model or optimizer "
            "configuration?):\n"
            + (difference or _first_divergence(saved["treedef"], expected["treedef"]))
        )
    for i, (got, want) in enumerate(zip(saved["leaves"], expected["leaves"], strict=True)):
        if got != want:
            raise CheckpointError(
                f"checkpoint {path}: leaf {i} ({expected['paths'][i]}) is "
                f"{got[1]}{tuple(got[0])}, the target expects {want[1]}{tuple(want[0])}"
            )


def _read_arrays(
    checkpointer: ocp.Checkpointer, path: Path, abstract: dict[str, Any], paths: list[str]
) -> dict[str, jax.Array]:
    """Read the stored leaves into fresh arrays; orbax's errors become CheckpointErrors
    naming the leaves they mention."""
    try:
        stored = checkpointer.restore(
            path, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
        )["state"]
        return jax.block_until_ready(stored)
    except Exception as error:
        named = sorted({int(i) for i in re.findall(r"leaf_(\d+)", str(error))})
        leaves = ", ".join(f"leaf {i} ({paths[i]})" for i in named if i < len(paths))
        at = f", at {leaves}" if leaves else ""
        raise CheckpointError(f"checkpoint {path} is incomplete or corrupt{at}: {error}") from error


def _check_digests(
    path: Path, recorded: dict[str, str], stored: dict[str, Any], paths: list[str]
) -> None:
    """Raise a :class:`CheckpointError` naming the leaves whose bytes differ from the saved."""
    actual = _digests(stored)
    corrupt = [
        f"leaf {i} ({leaf})"
        for i, leaf in enumerate(paths)
        if (key := _leaf_key(i)) in stored and actual[key] != recorded[key]
    ]
    if corrupt:
        more = f", ... ({len(corrupt)} leaves)" if len(corrupt) > 3 else ""
        raise CheckpointError(
            f"checkpoint {path} is corrupt: the bytes read do not match the SHA-256 recorded "
            f"when it was saved, at {', '.join(corrupt[:3])}{more}"
        )


def latest_checkpoint(directory: str | os.PathLike, prefix: str = "step_") -> Path | None:
    """The complete checkpoint ``<directory>/<prefix><step>`` with the highest step, if any.

    Only directories of ``directory`` itself whose ``<step>`` is ASCII digits count;
    symbolic links are ignored (:func:`save_checkpoint` never writes one, and one could
    point outside ``directory``).
    """
    directory = Path(directory)
    if not directory.is_dir():
        return None
    name = re.compile(re.escape(prefix) + "([0-9]+)")  # ASCII: "²".isdigit(), not int()
    steps = []
    for child in directory.iterdir():
        if (match := name.fullmatch(child.name)) and child.is_dir() and not child.is_symlink():
            steps.append((int(match[1]), child))
    return max(steps)[1] if steps else None
