"""Minimal torch gradient correction (GC-W, GC-ODE) written from spec 2.3.

A ``torch.optim.Optimizer`` that wraps a base torch optimizer over the same parameters.
Per tensor, at its step ``t`` (0-based), with raw gradient ``g``:

    GC-ODE  p.grad = g + alpha * (g - prev_grad)          if t > 0   (else g)
    base    base.step();  u = p_after - p_before          (the base's update, lr included)
    GC-W    a = clamp(a - beta * cos(g, prev_update), lo, hi)          if t > 0
            u = (1 + a) * u;  p = p_before + u
    store   prev_grad = g, prev_update = u

``cos(x, y) = <x, y> / max(|x| |y|, eps)``, and 0 when either norm is 0.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def cosine(x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    norms = x.norm() * y.norm()
    if norms == 0:
        return torch.zeros((), dtype=x.dtype)
    return (x * y).sum() / torch.clamp(norms, min=eps)


class GradientCorrection(torch.optim.Optimizer):
    def __init__(
        self,
        params,
        base: Callable[[list[torch.Tensor]], torch.optim.Optimizer],
        *,
        use_gcw: bool = True,
        use_gcode: bool = True,
        gcw_lr: float = 0.01,
        gcode_alpha: float = 0.1,
        gcw_bounds: tuple[float, float] = (-0.5, 0.5),
        eps: float = 1e-12,
    ) -> None:
        defaults = dict(gcw_lr=gcw_lr, gcode_alpha=gcode_alpha, gcw_bounds=gcw_bounds, eps=eps)
        super().__init__(params, defaults)
        self.base = base([p for group in self.param_groups for p in group["params"]])
        self.use_gcw = use_gcw
        self.use_gcode = use_gcode

    @torch.no_grad()
    def step(self) -> None:
        raw, before = {}, {}
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["prev_grad"] = torch.zeros_like(p)
                    state["prev_update"] = torch.zeros_like(p)
                    state["a"] = torch.zeros((), dtype=p.dtype)
                raw[p] = p.grad.clone()
                before[p] = p.clone()
                if self.use_gcode and state["step"] > 0:
                    p.grad.add_(raw[p] - state["prev_grad"], alpha=group["gcode_alpha"])
        self.base.step()
        for group in self.param_groups:
            low, high = group["gcw_bounds"]
            for p in group["params"]:
                state = self.state[p]
                g, u = raw[p], p - before[p]
                if self.use_gcw:
                    if state["step"] > 0:
                        cos = cosine(g, state["prev_update"], group["eps"])
                        state["a"] = (state["a"] - group["gcw_lr"] * cos).clamp(low, high)
                    u = (1 + state["a"]) * u
                    p.copy_(before[p] + u)
                state["prev_grad"] = g
                state["prev_update"] = u
                state["step"] += 1
