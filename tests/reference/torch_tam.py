"""Minimal torch torque-aware momentum as Automagic-CameAMP uses it, from spec 3.4b.

Per tensor, with momentum ``m`` (starting at zero), state ``s`` (zeros) and update ``u``:

    c = corr(m, u)                                     # one of the rules below
    s <- decay * s + (1 - decay) * c
    "refactored" (863c5b5): s <- u*eps + 0.5*s*u; s <- s + 0.5*u   (s overwritten by d)
                            if ndim == 2: s <- emphasis * s;  m <- momentum * m + s
    "fixed":                e = emphasis if ndim == 2 else 1
                            d = ((1 + e*s) / 2 + eps) * u;    m <- momentum * m + d

corr rules: "dim0" = normalize(m, dim=0) * normalize(u, dim=0); "cosine" = one tensor cosine
<m,u> / ((|m| + 1e-10)(|u| + 1e-10)); "row_cosine" = the same per row of the last dim
(the tensor cosine for ndim < 2); "auto" = cosine if numel <= threshold, else row cosine if
ndim >= 2, else the global cosine: F.cosine_similarity(eps=1e-8) when numel > 1000,
otherwise the tensor cosine. The optimizer steps p <- p - lr * m. With
``start_at_gradient=True`` the momentum starts at the first ``u`` (pytorch_optimizer's TAM,
whose rule is "dim0"), so "fixed" is that TAM with any correlation rule.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _tensor_cosine(m: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    cos = (m * u).sum() / ((m.norm() + 1e-10) * (u.norm() + 1e-10))
    return cos.expand_as(m)


def _row_cosine(m: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    if m.dim() < 2:
        return _tensor_cosine(m, u)
    m2, u2 = m.reshape(-1, m.shape[-1]), u.reshape(-1, u.shape[-1])
    dot = (m2 * u2).sum(dim=1, keepdim=True)
    norms = (m2.norm(dim=1, keepdim=True) + 1e-10) * (u2.norm(dim=1, keepdim=True) + 1e-10)
    return (dot / norms).expand_as(m2).reshape(m.shape)


def correlation(m: torch.Tensor, u: torch.Tensor, rule: str, threshold: int = 1000):
    if rule == "dim0":
        return F.normalize(m, p=2.0, dim=0) * F.normalize(u, p=2.0, dim=0)
    if rule == "cosine":
        return _tensor_cosine(m, u)
    if rule == "row_cosine":
        return _row_cosine(m, u)
    assert rule == "auto", rule
    if m.numel() <= threshold:
        return _tensor_cosine(m, u)
    if m.dim() >= 2:
        return _row_cosine(m, u)
    if m.numel() > 1000:
        cos = F.cosine_similarity(m.reshape(1, -1), u.reshape(1, -1), eps=1e-8)
        return cos.reshape(()).expand_as(m)
    return _tensor_cosine(m, u)


class TorqueAwareMomentumSGD(torch.optim.Optimizer):
    def __init__(
        self,
        params,
        lr,
        momentum=0.9,
        decay_rate=0.9,
        eps=1e-8,
        rule="auto",
        threshold=1000,
        emphasis=1.0,
        variant="fixed",
        start_at_gradient=False,
    ):
        defaults = dict(
            lr=lr,
            momentum=momentum,
            decay_rate=decay_rate,
            eps=eps,
            rule=rule,
            threshold=threshold,
            emphasis=emphasis,
            variant=variant,
            start_at_gradient=start_at_gradient,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            decay, eps = group["decay_rate"], group["eps"]
            for p in group["params"]:
                u = p.grad
                state = self.state[p]
                if not state:
                    state["exp_avg"] = (
                        u.clone() if group["start_at_gradient"] else torch.zeros_like(p)
                    )
                    state["s"] = torch.zeros_like(p)
                m, s = state["exp_avg"], state["s"]
                c = correlation(m, u, group["rule"], group["threshold"])
                s.mul_(decay).add_(c, alpha=1.0 - decay)
                if group["variant"] == "refactored":
                    s.copy_(u * eps + 0.5 * s * u)
                    s.add_(u, alpha=0.5)
                    if u.dim() == 2:
                        s.mul_(group["emphasis"])
                    d = s
                else:
                    e = group["emphasis"] if u.dim() == 2 else 1.0
                    d = ((1.0 + e * s) / 2.0 + eps) * u
                m.mul_(group["momentum"]).add_(d)
                p.add_(m, alpha=-group["lr"])
