"""Checkpoint integrity: flipped bits are caught by the SHA-256 digests, empty trees and
odd directory entries are handled, and a failed save leaves nothing behind."""

from __future__ import annotations

import contextlib
import errno
import json
import resource
import signal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from etils import epath

from jaxopt_adv.train import (
    CheckpointError,
    latest_checkpoint,
    restore_checkpoint,
    save_checkpoint,
)
from jaxopt_adv.train.checkpoint import FORMAT_WITHOUT_DIGESTS
from tests.helpers.bit_exact import assert_bit_exact


def _tree(leaf: np.ndarray) -> dict:
    """A small optimizer state around one big leaf ``w`` (leaf 3 of the tree)."""
    params = {"b": jnp.ones(3), "w": jnp.asarray(leaf)}
    return {"params": params, "opt_state": optax.sgd(0.1, momentum=0.9).init(params)}


W_PATH = "leaf 3 (['params'] ['w'])"


def _data_file(path):
    """The biggest file of a checkpoint: the one holding the big leaf's bytes."""
    return max((f for f in path.rglob("*") if f.is_file()), key=lambda f: f.stat().st_size)


def _assert_flips_are_caught(path, tree, positions):
    data_file = _data_file(path)
    pristine = data_file.read_bytes()
    for position in positions:
        for mask in (0x01, 0x80, 0xFF):  # the lowest bit, the highest bit, the whole byte
            flipped = bytearray(pristine)
            flipped[position] ^= mask
            data_file.write_bytes(bytes(flipped))
            with pytest.raises(CheckpointError) as error:
                restore_checkpoint(path, tree)
            assert W_PATH in str(error.value), (position, mask, str(error.value))
    data_file.write_bytes(pristine)
    assert_bit_exact(restore_checkpoint(path, tree), tree)


def test_flipped_bits_in_a_stored_array_raise_naming_the_leaf(tmp_path):
    """Random bits do not compress: zstd stores them verbatim, so each flip below hits
    the bytes of one chosen element of ``w``."""
    bits = np.random.default_rng(0).integers(0, 2**32, (256, 256), dtype=np.uint32)
    tree = _tree(bits)
    path = save_checkpoint(tmp_path / "ck", tree)
    data, raw = _data_file(path).read_bytes(), bits.tobytes()
    positions = []
    for element in (0, 1, 4_000, 32_768, 50_000, 65_535):
        at = data.find(raw[4 * element : 4 * element + 16])
        assert at >= 0 and data.find(raw[4 * element : 4 * element + 16], at + 1) < 0
        positions += [at, at + 3]  # the element's first and last byte
    _assert_flips_are_caught(path, tree, positions)


def test_flipped_bits_in_a_compressed_array_raise_naming_the_leaf(tmp_path):
    """Normal float32 values are zstd-compressed; a flip inside the compressed payload
    decodes to other values (silently, without the digest); one in the zstd frame's
    magic number (the file's first bytes) fails to decode, which names the leaf too."""
    tree = _tree(np.random.default_rng(1).standard_normal((512, 512)).astype(np.float32))
    path = save_checkpoint(tmp_path / "ck", tree)
    data = _data_file(path).read_bytes()
    assert len(data) > 512 * 512 and data[:4] == b"\x28\xb5\x2f\xfd"  # one zstd frame
    _assert_flips_are_caught(path, tree, [0] + [len(data) * k // 8 for k in range(1, 8)])


def _layout_file(path):
    return path / "layout" / "metadata"


def test_checkpoints_without_digests_still_restore(tmp_path):
    """A ``jaxopt_adv.checkpoint/2`` checkpoint (written before the digests) is this
    format without its ``sha256`` record; a current one without it is refused."""
    tree = _tree(np.arange(1_000, dtype=np.float32))
    path = save_checkpoint(tmp_path / "ck", tree)
    layout = json.loads(_layout_file(path).read_text())
    del layout["sha256"]
    _layout_file(path).write_text(json.dumps(layout))
    with pytest.raises(CheckpointError, match="digests are damaged"):
        restore_checkpoint(path, tree)
    _layout_file(path).write_text(json.dumps({**layout, "format": FORMAT_WITHOUT_DIGESTS}))
    assert_bit_exact(restore_checkpoint(path, tree), tree)


def test_a_damaged_digest_record_raises(tmp_path):
    tree = _tree(np.arange(1_000, dtype=np.float32))
    path = save_checkpoint(tmp_path / "ck", tree)
    layout = json.loads(_layout_file(path).read_text())
    layout["sha256"]["leaf_00003"] = "0" * 64
    _layout_file(path).write_text(json.dumps(layout))
    with pytest.raises(CheckpointError, match=r"SHA-256.*\['params'\] \['w'\]"):
        restore_checkpoint(path, tree)


@pytest.mark.parametrize(
    "tree",
    [{}, {"empty": jnp.zeros((0, 3))}, optax.sgd(0.1).init({"w": jnp.ones(3)})],
    ids=["no-leaves", "zero-size-leaf", "stateless-optimizer"],
)
def test_a_tree_without_arrays_round_trips(tmp_path, tree):
    path = save_checkpoint(tmp_path / "ck", tree)
    assert_bit_exact(restore_checkpoint(path, jax.eval_shape(lambda: tree)), tree)
    with pytest.raises(CheckpointError, match="different tree"):
        restore_checkpoint(path, {"w": jnp.ones(3)})


def test_latest_checkpoint_skips_non_ascii_digits(tmp_path):
    save_checkpoint(tmp_path / "step_00000005", {"w": jnp.ones(3)})
    for name in ("step_²", "step_٩٩", "step_5²"):  # str.isdigit() holds for all three
        (tmp_path / name).mkdir()
    assert latest_checkpoint(tmp_path) == tmp_path / "step_00000005"


def test_latest_checkpoint_ignores_symlinks(tmp_path):
    runs = tmp_path / "run"
    save_checkpoint(runs / "step_00000005", {"w": jnp.ones(3)})
    outside = save_checkpoint(tmp_path / "elsewhere" / "step_00000009", {"w": jnp.zeros(3)})
    (runs / "step_00000099").symlink_to(outside, target_is_directory=True)
    (runs / "step_00000098").symlink_to(runs / "step_00000005", target_is_directory=True)
    assert latest_checkpoint(runs) == runs / "step_00000005"


def _failing_layout_write(exception: BaseException):
    """``exception`` when orbax writes the JSON record, while its threads write the arrays."""

    @contextlib.contextmanager
    def failing(monkeypatch):
        path_type = type(epath.Path("/"))
        write_text = path_type.write_text

        def write_or_fail(self, *args, **kwargs):
            if self.parent.name.startswith("layout"):
                raise exception
            return write_text(self, *args, **kwargs)

        with monkeypatch.context() as patch:
            patch.setattr(path_type, "write_text", write_or_fail)
            yield

    return failing


@contextlib.contextmanager
def _files_limited_to_64_kib(monkeypatch):
    """A real failing write() inside tensorstore's array writer (EFBIG)."""
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (65_536, limits[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)


FULL_DISK = OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize(
    ("failing", "raised"),
    [
        (_failing_layout_write(FULL_DISK), CheckpointError),
        (_files_limited_to_64_kib, CheckpointError),
        (_failing_layout_write(KeyboardInterrupt()), KeyboardInterrupt),
    ],
    ids=["disk-full", "file-too-large", "interrupt"],
)
def test_a_failed_save_leaves_nothing_behind(tmp_path, monkeypatch, failing, raised):
    small = {"w": jnp.arange(3.0)}
    before = [save_checkpoint(tmp_path / f"step_0000000{step}", small) for step in (1, 2)]
    # big enough to be still being written when the JSON record fails
    big = {"w": jnp.asarray(np.random.default_rng(0).standard_normal(2**21, np.float32))}
    with failing(monkeypatch), pytest.raises(raised) as error:
        save_checkpoint(tmp_path / "step_00000003", big)
    if raised is CheckpointError:
        assert "could not save" in str(error.value) and error.value.__cause__ is not None
    assert sorted(tmp_path.iterdir()) == before
    assert latest_checkpoint(tmp_path) == before[-1]
    for path in before:
        assert_bit_exact(restore_checkpoint(path, small), small)
    path = save_checkpoint(tmp_path / "step_00000003", big)  # the disk has room again
    assert_bit_exact(restore_checkpoint(path, big), big)
