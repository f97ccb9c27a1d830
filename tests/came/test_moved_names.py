"""The names that moved out of ``jaxopt_adv.came`` (to ``jaxopt_adv.automagic`` and
``jaxopt_adv.tam``) still resolve there, to the same objects, with a DeprecationWarning."""

from __future__ import annotations

import pytest

import jaxopt_adv.automagic
import jaxopt_adv.came
import jaxopt_adv.tam

MOVED = [(name, jaxopt_adv.automagic) for name in jaxopt_adv.automagic.__all__] + [
    (name, jaxopt_adv.tam) for name in jaxopt_adv.tam.__all__
]


@pytest.mark.parametrize(("name", "home"), MOVED, ids=[name for name, _ in MOVED])
def test_a_moved_name_resolves_to_its_new_home_with_a_warning(name, home):
    with pytest.warns(DeprecationWarning, match=f"{home.__name__}.{name}"):
        old = getattr(jaxopt_adv.came, name)
    assert old is getattr(home, name)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_thing"):
        jaxopt_adv.came.no_such_thing  # noqa: B018


def test_came_exports_only_came():
    assert sorted(jaxopt_adv.came.__all__) == ["ScaleByCameState", "came", "scale_by_came"]
