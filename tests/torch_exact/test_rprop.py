"""torch.optim.Rprop parity for jaxopt_adv.torch.rprop."""

import optax
import torch

from jaxopt_adv.torch import rprop
from tests.harness import run_parity
from tests.helpers.torch_optim_tests import case_parity_test, rejection_test

STATE = {"prev": "prev", "step_size": "step_size"}
CASES = {
    "defaults": {},
    "etas_clamped": {"etas": (0.3, 1.5), "step_sizes": (1e-3, 0.2)},
    "maximize": {"maximize": True},
}


test_parity = case_parity_test(rprop, torch.optim.Rprop, CASES, learning_rate=0.05, state_map=STATE)


def test_schedule_read_once():
    """torch reads lr only when it creates the state: a schedule is read at step 0."""
    schedule = lambda t: 0.05 * 0.5**t  # noqa: E731
    run_parity(rprop(schedule), lambda p: torch.optim.Rprop(p, lr=0.05), schedule=schedule)


def test_optax_rprop_differs():
    report = run_parity(optax.rprop(0.05), lambda p: torch.optim.Rprop(p, lr=0.05), check=False)
    assert report.max_error > 1e-3


test_bad_hyperparameters = rejection_test(
    rprop,
    [
        ({"learning_rate": -1.0}, "Invalid learning rate"),
        ({"etas": (1.2, 0.5)}, r"Invalid etas\[0\] value"),
        ({"etas": (0.0, 1.2)}, r"Invalid etas\[0\] value"),
        ({"step_sizes": (1.0, 0.1)}, r"Invalid step_sizes\[1\] value"),
    ],
)
