"""``jaxopt-adv compare --tune``: every optimizer trains, the vmapped grid is the separate
runs, the chosen rate is the grid's best on validation; the figures' styles.

Every test here runs under the ``quick_code_generation`` fixture (XLA:CPU's simpler code
generator, its optimisations on): the runs are compared with runs of the same settings, and
compiling each optimizer's training programs is most of the file's run time (the ``tuned``
run of every optimizer: 76 -> 52 CPU s).
"""

import json
import struct

import numpy as np
import pytest

from jaxopt_adv.app import compare, recipes, report
from jaxopt_adv.app.cli import main
from jaxopt_adv.datasets import load_dataset
from jaxopt_adv.local import get_boundary
from jaxopt_adv.registry import list_optimizers

pytestmark = pytest.mark.usefixtures("quick_code_generation")

GRID = (1e-3, 3e-3, 1e-2)
EPOCHS = 2


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """One tiny ``--optimizers all --tune`` run on digits: its records and folder."""
    out = tmp_path_factory.mktemp("tuned")
    status = main(
        ["compare", "--data", "digits", "--epochs", str(EPOCHS), "--seeds", "1",
         "--optimizers", "all", "--tune", "--lr-grid", ",".join(map(str, GRID)),
         "--no-torch", "--no-progress", "--out", str(out)]
    )  # fmt: skip
    assert status == 0
    return json.loads((out / "results.json").read_text()), out


@pytest.mark.slow
def test_all_trains_every_registered_optimizer(tuned):
    records, out = tuned
    names = [r["optimizer"] for r in records]
    assert set(list_optimizers()) | {"localized_learning"} <= set(names)
    assert len(names) == len(set(names))
    for record in records:
        assert record["lr_grid"] == list(GRID) and record["tuned"]
        assert record["grid_extensions"] == 0  # a grid the user gave is never extended
        assert 0.0 <= record["test_accuracy"] <= 1.0 and 0.0 <= record["val_accuracy"] <= 1.0
    assert (out / "lr_sensitivity.png").read_bytes()[:4] == b"\x89PNG"
    assert any(r["learning_rate"] in (GRID[0], GRID[-1]) for r in records)  # edges chosen


@pytest.mark.slow
def test_chosen_rate_is_the_grid_best_on_validation(tuned):
    records, _ = tuned
    for record in records:
        losses = [np.inf if v is None else v for v in record["grid_val_loss"]]
        assert record["learning_rate"] == GRID[int(np.argmin(losses))], record["optimizer"]
    accuracy = [r["test_accuracy"] for r in records]
    assert accuracy == sorted(accuracy, reverse=True)  # best first
    assert records[0]["best"] and not records[-1]["best"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["torch.adamw", "fer"])
def test_vmapped_grid_equals_separate_runs(tuned, name):
    records, _ = tuned
    record = next(r for r in records if r["optimizer"] == name)
    data = load_dataset("digits")
    splits = compare.split_data(data, "mlp")
    recipe = recipes.make_recipe(name, data, "mlp", len(splits.y_train), EPOCHS)
    trainer = compare.Trainer(recipe, splits, EPOCHS, batch_size=128)
    separate = [trainer.run([compare.Member(0, lr)]).val_loss[-1, 0] for lr in GRID]
    np.testing.assert_allclose(separate, record["grid_val_loss"], rtol=1e-4)


@pytest.mark.slow
def test_lbfgs_grid_members_do_not_interact(tuned):
    """Vmapped, L-BFGS's while_loops (iterations, line search) run until every rate's has
    stopped: each rate of the grid trains as it does alone in a program of the same size.
    (Not alone in a program of one: XLA rounds a program of one member differently, and
    full-batch strong-Wolfe decisions amplify that to 2% of the validation loss at 1e-2.)"""
    records, _ = tuned
    record = next(r for r in records if r["optimizer"] == "torch.lbfgs")
    data = load_dataset("digits")
    splits = compare.split_data(data, "mlp")
    recipe = recipes.make_recipe("torch.lbfgs", data, "mlp", len(splits.y_train), EPOCHS)
    trainer = compare.Trainer(recipe, splits, EPOCHS, batch_size=128)
    alone = [trainer.run([compare.Member(0, lr)] * len(GRID)).val_loss[-1, 0] for lr in GRID]
    np.testing.assert_allclose(alone, record["grid_val_loss"], rtol=1e-6)


def test_default_grid_is_seven_points_around_the_rate():
    grid = compare.lr_grid(1e-3)
    assert len(grid) == 7 and grid[3] == pytest.approx(1e-3)
    np.testing.assert_allclose(np.diff(np.log10(grid)), 0.5)


def test_default_grid_grows_past_its_best_end(monkeypatch):
    """A default grid far too low for SGD: the best rate is its top, so the grid grows by
    two rates upwards (at most twice) and the choice is the best of the grown grid."""
    center = 1e-4
    monkeypatch.setitem(compare.TUNED_LEARNING_RATES, "torch.sgd", center)
    data = load_dataset("digits")
    config = compare.CompareConfig(data="digits", epochs=EPOCHS, seeds=1, tune=True)
    splits = compare.split_data(data, "mlp")
    record, _ = compare.train_optimizer("torch.sgd", config, data, splits, lambda line: None)
    extensions = record["grid_extensions"]
    points = compare.GRID_POINTS + compare.EXTENSION_POINTS * extensions
    assert extensions >= 1
    np.testing.assert_allclose(record["lr_grid"], compare.lr_grid(center, 2 * points - 7)[-points:])
    losses = [np.inf if v is None else v for v in record["grid_val_loss"]]
    best = int(np.argmin(losses))
    assert record["learning_rate"] == record["lr_grid"][best]
    assert best < len(losses) - 1 or extensions == compare.GRID_EXTENSIONS


def test_grid_extension_is_two_rates_past_the_best_end():
    grid = [1e-3, 1e-2, 1e-1]
    np.testing.assert_allclose(compare.grid_extension(grid, 0), [1e-4, 1e-5])
    np.testing.assert_allclose(compare.grid_extension(grid, 2), [1.0, 10.0])
    assert compare.grid_extension(grid, 1) == []


def test_every_name_has_a_tuned_default_rate():
    assert set(recipes.all_names()) <= set(compare.TUNED_LEARNING_RATES)


def test_line_styles_are_distinct():
    styles = report.line_styles(30)
    keys = {(s["color"], s["linestyle"], s["marker"]) for s in styles}
    assert len(keys) == 30
    assert len({s["color"] for s in styles[:20]}) == 20  # no reused colour up to 20 lines


def png_size(path) -> tuple[int, int]:
    return struct.unpack(">II", path.read_bytes()[16:24])


def test_torch_overlay_is_a_grid_of_panels(tmp_path):
    steps = np.linspace(2.0, 0.5, 30)
    pairs = {f"torch.opt{i}": {"jax": steps, "torch": steps} for i in range(11)}
    records = [
        {"optimizer": name, "test_accuracy": 0.9, "test_accuracy_std": 0.0,
         "curves": {"train_loss": [1.0, 0.5], "test_accuracy": [0.8, 0.9]}}
        for name in pairs
    ]  # fmt: skip
    figures = dict(report._figures(records, pairs, "test"))
    figures["torch_overlay.png"](tmp_path / "overlay.png")
    width, height = png_size(tmp_path / "overlay.png")
    assert width <= 1700 and height >= 0.5 * width  # 4 columns, 3 rows, not one row of 11


def test_localized_learning_switches_to_oja_after_sgd():
    """The row trains as examples/local_rules.py does: SGD on every layer, then Oja's rule
    on the first hidden layer for the last fifth of the epochs. Oja's rule from the first
    step (as compare once fed it) drove the network to chance accuracy on mnist5k (10%
    at this rate; on digits it does not)."""
    data, epochs = load_dataset("mnist5k"), 5
    splits = compare.split_data(data, "mlp")
    recipe = recipes.make_recipe("localized_learning", data, "mlp", len(splits.y_train), epochs)
    trainer = compare.Trainer(recipe, splits, epochs, batch_size=128)
    state = recipe.optimizer(0.1).init(trainer.initial(0)[0])
    boundary = [int(get_boundary(recipe.at_epoch_start(state, e))) for e in range(epochs)]
    assert boundary == [0, 0, 0, 0, 1]
    run = trainer.run([compare.Member(0, 0.1)])
    assert run.test_accuracy[-1, 0] > 0.85, run.test_accuracy[:, 0]
