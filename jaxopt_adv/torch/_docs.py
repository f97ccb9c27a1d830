"""The argument descriptions the torch twins share, written once and filled into each
docstring that leaves them out.

:func:`shared_arg_docs` decorates a factory: every parameter of its signature that its
docstring's ``Args:`` section does not describe, and that :data:`SHARED_ARGS` does, gets
the shared description, in signature order. ``help()``, Sphinx and the doctests see the
whole section.
"""

from __future__ import annotations

import inspect
import re
import textwrap
from collections.abc import Callable
from typing import TypeVar

Function = TypeVar("Function", bound=Callable)

SHARED_ARGS = {
    "b1": "torch ``betas[0]``, in ``[0, 1)``.",
    "b2": "torch ``betas[1]``, in ``[0, 1)``.",
    "eps": "added outside the square root, ``>= 0``.",
    "maximize": "static; maximise instead of minimise.",
    "mu_dtype": "optional dtype of the first moment.",
    "torch_default_dtype": (
        '``"float32"`` (default), ``"float64"`` or ``None``: the '
        "``torch.get_default_dtype()`` of the torch run whose rounding of the step scalars "
        "to reproduce (see :mod:`jaxopt_adv.torch`); ``None``: the more accurate forms."
    ),
    "weight_decay": "coupled L2 coefficient, ``>= 0``.",
}
_WIDTH = 92


def _args_section(lines: list[str]) -> tuple[int, int, int]:
    """Where the ``Args:`` section's entries of a docstring's ``lines`` start and end,
    and the entries' indentation."""
    for start, line in enumerate(lines):
        if line.strip() == "Args:":
            end = start + 1
            while end < len(lines) and lines[end].strip():
                end += 1
            return start + 1, end, len(line) - len(line.lstrip()) + 2
    raise ValueError("the docstring has no Args: section")


def _entries(lines: list[str], indent: int) -> dict[str, list[str]]:
    """The ``Args:`` entries by name, each with its continuation lines."""
    entries: dict[str, list[str]] = {}
    name = None
    for line in lines:
        found = re.match(rf" {{{indent}}}(\w+):", line)
        if found:
            name = found.group(1)
            entries[name] = []
        if name is None:
            raise ValueError(f"an Args: line outside an entry: {line!r}")
        entries[name].append(line)
    return entries


def shared_arg_docs(function: Function) -> Function:
    """Fill ``function``'s ``Args:`` section with the :data:`SHARED_ARGS` it leaves out.

    Raises:
      ValueError: an entry names no parameter of ``function``.
    """
    lines = inspect.getdoc(function).splitlines()
    start, end, indent = _args_section(lines)
    own = _entries(lines[start:end], indent)
    parameters = inspect.signature(function).parameters
    strays = sorted(set(own) - set(parameters))
    if strays:
        raise ValueError(f"{function.__qualname__}: Args: describes no parameter {strays}")
    section = []
    for name in parameters:
        if name in own:
            section += own[name]
        elif name in SHARED_ARGS:
            first = " " * indent + f"{name}: "
            section += textwrap.wrap(
                SHARED_ARGS[name],
                _WIDTH,
                initial_indent=first,
                subsequent_indent=" " * (indent + 2),
            )
    function.__doc__ = "\n".join(lines[:start] + section + lines[end:])
    return function
