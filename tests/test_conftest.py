"""``tests/conftest.py``: the run order (the tests marked ``slow`` first, so that
pytest-xdist's work stealing never leaves one worker with a long test at the end) and
the ``quick_compilation`` fixture."""

from __future__ import annotations

import jax
import pytest

from tests.conftest import QUICK_COMPILATION, slow_first


class Item:
    """The part of a ``pytest.Item`` that ``slow_first`` reads."""

    def __init__(self, name: str, slow: bool):
        self.name = name
        self.slow = slow

    def get_closest_marker(self, name: str):
        return pytest.mark.slow.mark if name == "slow" and self.slow else None


def test_slow_items_come_first_each_group_in_its_order():
    items = [Item("a", False), Item("b", True), Item("c", False), Item("d", True)]
    assert [item.name for item in slow_first(items)] == ["b", "d", "a", "c"]


def test_this_run_starts_with_its_slow_tests(request):
    slow = [item.get_closest_marker("slow") is not None for item in request.session.items]
    assert slow == sorted(slow, reverse=True)


def test_quick_compilation_turns_most_xla_optimisations_off(request):
    assert not jax.config.read(QUICK_COMPILATION)
    request.getfixturevalue("quick_compilation")
    assert jax.config.read(QUICK_COMPILATION)
