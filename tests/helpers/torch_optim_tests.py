"""The two tests every ``tests/torch_exact/test_<optimizer>.py`` has, written once: parity
with the torch class over a table of keyword cases, and torch's error for each bad
hyperparameter. A test module binds them to its own names (``test_parity =
case_parity_test(...)``); pytest collects them as the module's tests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import optax
import pytest
import torch

from tests.harness import PRECISIONS, run_parity

Kwargs = dict[str, Any]
StateMap = Mapping[str, str] | Callable[[Kwargs], Mapping[str, str]]


def case_parity_test(
    factory: Callable[..., optax.GradientTransformation],
    torch_class: type[torch.optim.Optimizer],
    cases: Mapping[str, Kwargs],
    *,
    learning_rate: float | None = None,
    state_map: StateMap | None = None,
    to_torch: Callable[[Kwargs], Kwargs] = dict,
    torch_default_dtype: bool = False,
) -> Callable[..., None]:
    """``run_parity`` of ``factory(learning_rate, **kwargs)`` against
    ``torch_class(params, lr=learning_rate, **to_torch(kwargs))`` for every case.

    Args:
      factory: ours; ``torch_class``: torch's.
      cases: ``{case id: keyword arguments}``.
      learning_rate: both sides' learning rate; ``None``: both defaults.
      state_map: our state field -> torch's state key, or a function of the case's
        keyword arguments giving it.
      to_torch: the case's keyword arguments as torch takes them (e.g.
        ``tests.harness.torch_betas``).
      torch_default_dtype: run under every ``(dtype, torch default dtype)`` of
        ``PRECISIONS`` and pass the default to ``factory``; else float64 and float32.
    """

    def run(case: str, dtype: str, torch_default: str | None) -> None:
        kwargs = dict(cases[case])
        torch_kwargs = to_torch(kwargs)
        args = []
        if learning_rate is not None:
            args, torch_kwargs["lr"] = [learning_rate], learning_rate
        if torch_default is not None:
            kwargs["torch_default_dtype"] = torch_default
        ours = factory(*args, **kwargs)
        states = state_map(kwargs) if callable(state_map) else state_map
        run_parity(
            ours,
            lambda p: torch_class(p, **torch_kwargs),
            dtype=dtype,
            state_map=states,
            torch_default=torch_default,
        )

    if torch_default_dtype:

        @pytest.mark.parametrize("dtype, torch_default", PRECISIONS)
        @pytest.mark.parametrize("case", cases)
        def test_with_torch_default(case: str, dtype: str, torch_default: str) -> None:
            run(case, dtype, torch_default)

        return test_with_torch_default

    @pytest.mark.parametrize("dtype", ["float64", "float32"])
    @pytest.mark.parametrize("case", cases)
    def test(case: str, dtype: str) -> None:
        run(case, dtype, None)

    return test


def rejection_test(
    factory: Callable[..., Any], entries: list[tuple[Kwargs, str]]
) -> Callable[..., None]:
    """A test that ``factory(**kwargs)`` raises a ``ValueError`` matching ``message`` for
    every ``(kwargs, message)`` of ``entries``."""

    @pytest.mark.parametrize("kwargs, message", entries)
    def test(kwargs: Kwargs, message: str) -> None:
        with pytest.raises(ValueError, match=message):
            factory(**kwargs)

    return test
