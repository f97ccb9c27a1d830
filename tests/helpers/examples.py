"""Running a script of ``examples/`` as a user would, from the repository root."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from tests.helpers.quick import quick_environment

ROOT = Path(__file__).resolve().parents[2]


def run_example(script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python examples/<script> *args``; raises ``CalledProcessError`` when it fails.

    The output is captured as text; ``timeout`` bounds the run in seconds. XLA compiles
    quickly there (:func:`tests.helpers.quick.quick_environment`): the tests check what
    the scripts print and write, far above the last bits those settings change.
    """
    return subprocess.run(
        [sys.executable, f"examples/{script}", *args],
        cwd=ROOT,
        env=quick_environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )


def load_example(script: str, name: str) -> ModuleType:
    """``examples/<script>`` imported as the module ``name`` (its ``main`` not run)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
