"""The epoch loop: learning, history, accumulation, clipping, evaluation, exact resume."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

import jaxopt_adv
from jaxopt_adv.train import batch_indices, fit
from tests.helpers.quick import quick_environment
from tests.train.models import loss_fn, make_data, make_model

ROOT = Path(__file__).resolve().parents[2]


def test_fit_learns_and_records_history():
    model = make_model()
    x, y = make_data(96)
    state, history = fit(
        model,
        jaxopt_adv.torch.adam(3e-2),
        loss_fn,
        (x, y),
        epochs=6,
        batch_size=16,
        eval_data=make_data(48, seed=1),
        progress=False,
    )
    assert int(state.step) == 36
    assert len(history.steps["loss"]) == 36 and len(history.epochs["train_loss"]) == 6
    for key in ("grad_norm", "lr", "step_time", "accuracy"):
        assert len(history.steps[key]) == 36
    assert history.epochs["train_loss"][-1] < 0.7 * history.epochs["train_loss"][0]
    assert history.epochs["eval_accuracy"][-1] > 0.8
    assert {"epoch_time", "eval_loss", "train_accuracy"} <= set(history.epochs)
    model.eval()  # the trained weights were written back into the model
    np.testing.assert_allclose(
        loss_fn(model, make_data(48, seed=1))[0], history.epochs["eval_loss"][-1], rtol=1e-5
    )


def test_batches_depend_only_on_seed_and_epoch():
    a, b = batch_indices(50, 8, 0, 3), batch_indices(50, 8, 0, 3)
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    assert len(a) == 6 and len(np.unique(np.concatenate(a))) == 48
    assert not np.array_equal(a[0], batch_indices(50, 8, 0, 4)[0])


def test_accumulation_equals_one_larger_batch():
    """Two accumulated micro-batches of 8 equal one step on their 16 examples (mean loss)."""
    x, y = make_data(16)

    def run(batch_size, accumulate):
        model = make_model()
        model.eval()  # no dropout / batch statistics: the loss is a plain mean
        state, _ = fit(
            model,
            optax.sgd(0.1),
            loss_fn,
            (x, y),
            epochs=1,
            batch_size=batch_size,
            accumulate_steps=accumulate,
            progress=False,
        )
        return state.params

    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        run(8, 2),
        run(16, 1),
    )


def test_clip_is_applied_first():
    x, y = make_data(16)
    model_a, model_b = make_model(), make_model()
    model_a.eval()
    model_b.eval()
    clip = optax.clip_by_global_norm(1e-3)
    fit(model_a, optax.sgd(1.0), loss_fn, (x, y), batch_size=16, clip=clip, progress=False)
    fit(model_b, optax.sgd(1.0), loss_fn, (x, y), batch_size=16, progress=False)
    start = make_model()
    moved_a = np.abs(model_a.out.kernel[...] - start.out.kernel[...]).max()
    moved_b = np.abs(model_b.out.kernel[...] - start.out.kernel[...]).max()
    assert moved_a <= 1.01e-3 < moved_b


def test_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        fit(make_model(), optax.sgd(0.1), loss_fn, make_data(8), batch_size=16, progress=False)
    with pytest.raises(ValueError, match="first"):
        x, y = make_data(8)
        fit(make_model(), optax.sgd(0.1), loss_fn, (x, y[:4]), progress=False)


@pytest.mark.slow
def test_resume_in_a_new_process_is_bit_exact(tmp_path):
    """10 steps straight == 5 steps, checkpoint, restore in a new process, 5 more steps
    (every process compiles quickly, ``tests/helpers/quick.py``: the same settings)."""
    pythonpath = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = quick_environment(PYTHONPATH=pythonpath)

    def run(directory, max_steps, out):
        cmd = [
            sys.executable,
            "-m",
            "tests.train.resume_run",
            str(directory),
            str(max_steps),
            str(out),
        ]
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
        return np.load(out)

    straight = run(tmp_path / "straight", 10, tmp_path / "straight.npz")
    run(tmp_path / "resumed", 5, tmp_path / "first_half.npz")
    assert sorted(p.name for p in (tmp_path / "resumed").iterdir()) == ["step_00000005"]
    resumed = run(tmp_path / "resumed", 10, tmp_path / "resumed.npz")
    assert straight.files == resumed.files
    for key in straight.files:
        np.testing.assert_array_equal(straight[key], resumed[key], err_msg=key)
    # and the run did move: the halves differ
    first_half = np.load(tmp_path / "first_half.npz")
    assert any(not np.array_equal(first_half[k], straight[k]) for k in straight.files)
