"""torch-SGD momentum whose buffer a subclass reshapes before the step: the base of the
Cautious and edge-damping references.

Per tensor: ``b_1 = g``, then ``b <- momentum * b + g``; the step is
``p <- p - lr * direction(copy of b)``.
"""

from __future__ import annotations

import torch


class ShapedMomentumSGD(torch.optim.Optimizer):
    """Subclasses define :meth:`direction` and may add per-tensor state in
    :meth:`init_state`; their hyperparameters go into ``defaults`` (with ``lr`` and
    ``momentum``)."""

    def init_state(self, p: torch.Tensor, state: dict) -> None:
        """Adds a subclass's state for ``p`` at the first step (none by default)."""

    def direction(self, update, g, p, state, group) -> torch.Tensor:
        """The step direction from ``update`` (a copy of the buffer, free to change)."""
        raise NotImplementedError

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                g = p.grad
                state = self.state[p]
                if not state:
                    state["momentum_buffer"] = g.clone()
                    self.init_state(p, state)
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(g)
                update = state["momentum_buffer"].clone()
                p.add_(self.direction(update, g, p, state, group), alpha=-group["lr"])
