"""benchmarks/state_memory.py runs, covers every registered optimizer, and its figures
agree with what the update rules must store."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from jaxopt_adv import list_optimizers

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "state_memory.py"


@pytest.fixture(scope="module")
def state_memory():
    spec = importlib.util.spec_from_file_location("state_memory", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def table(state_memory):
    """{(name, variant label): {tree: bytes per element}}, and elements per tree."""
    rows = {(v.name, v.label): values for v, values in state_memory.measure()}
    elements = {tree: state_memory.element_count(tree) for tree in state_memory.TREES}
    return rows, elements


def state_bytes(table, name, label="defaults"):
    """{tree: total state bytes}"""
    rows, elements = table
    return {tree: round(rows[name, label][tree] * elements[tree]) for tree in elements}


def test_every_registered_optimizer_has_a_row(table):
    rows, _ = table
    assert {name for name, label in rows if label == "defaults"} == set(list_optimizers())


def test_figures_follow_from_the_update_rules(table):
    rows, elements = table
    for tree, n in elements.items():
        # beyond the param-shaped buffers, only a few scalars (count, ...)
        assert state_bytes(table, "torch.sgd")[tree] <= 16  # no momentum: no buffer
        assert 0 <= state_bytes(table, "torch.sgd", "momentum=0.9")[tree] - 4 * n <= 16
        assert 0 <= state_bytes(table, "torch.adam")[tree] - 8 * n <= 16  # mu, nu
        assert 0 <= state_bytes(table, "torch.adam", "amsgrad=True")[tree] - 12 * n <= 16
        assert 0 <= state_bytes(table, "torch.adam", "mu_dtype=bfloat16")[tree] - 6 * n <= 16
        # the full fine-tune preset adds exactly SPD's float32 anchor (the initial weights)
        full = state_bytes(table, "automagic_came_amp", "create_full_finetune_optimizer")
        lora = state_bytes(table, "automagic_came_amp", "create_lora_optimizer")
        assert full[tree] - lora[tree] == 4 * n
    # CAME: float32 momentum plus factored (row + column) statistics, half of Adam's
    came, adam = rows["came", "defaults"], rows["torch.adam", "defaults"]
    assert 4 < came["matrix"] < 4.1 and came["matrix"] < 0.55 * adam["matrix"]
    # the README's figure for the LoRA preset on a 1024x1024 matrix (13 B, <= 17)
    assert 13 <= rows["automagic_came_amp", "create_lora_optimizer"]["matrix"] < 13.1


def test_fer_memory_is_per_sample(state_memory):
    # a float32 row of class probabilities and a bool "ever correct" flag per sample
    assert state_memory.fer_bytes_per_sample(10) == 10 * 4 + 1


def test_command_writes_the_table(state_memory, tmp_path, capsys):
    out = tmp_path / "state_memory.md"
    assert state_memory.main(["--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert out.read_text() == printed
    assert "| `torch.adam` | amsgrad=True | 12.00 | 12.00 | 12.00 |" in printed
    assert "Counted: every state leaf" in printed
