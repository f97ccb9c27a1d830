"""A float32 gradient whose square overflows: the RMSprop checks that torch.optim.RMSprop's
order ``(1 - alpha) * g * g`` is kept (tests/torch_exact/test_rmsprop.py and the fused
kernel's tests/fast/test_parity.py)."""

from __future__ import annotations

import numpy as np
import torch

from tests.harness import gradient_stream


def huge_gradient_stream():
    """The harness's stream with a float32 gradient of 3e19 on the first step: its square
    overflows float32, ``(1 - alpha) * g * g`` (torch's order) does not."""
    stream = gradient_stream(20)
    stream[0]["matrix"][0, 0] = 3e19
    return stream


HUGE_PARAMS = np.array([1.0, -1.0, 0.5], np.float32)
HUGE_GRADIENT = np.array([3e19, -2.0, 0.5], np.float32)


def torch_rmsprop_step(alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """torch's params and ``square_avg`` after one float32 step on ``HUGE_GRADIENT``."""
    param = torch.tensor(HUGE_PARAMS, requires_grad=True)
    param.grad = torch.tensor(HUGE_GRADIENT)
    optimizer = torch.optim.RMSprop([param], lr=0.01, alpha=alpha)
    optimizer.step()
    return param.detach().numpy(), optimizer.state[param]["square_avg"].numpy()
