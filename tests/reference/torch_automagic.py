"""A minimal torch Automagic-CameAMP with the corrected ("fixed") semantics, written from
spec ``automagic_cameamp.md`` sections 3 and 5.4 (one param group), for parity tests.

The seed's step order (spec 3.2), with the fixes of spec 5.4: CAME's confidence uses
``(u - m)^2`` (factored over the last two axes; none for ndim < 2), TAM keeps the smoothed
correlation and puts the low-rank emphasis on it, SPD decays toward a fixed anchor, a
schedule rescales the mask persistently (``max(lr / lr_max, 0.1)``), the frequency
penalty is a true high-pass and the rank penalty shrinks the singular values beyond 10.
OrthoGrad is skipped for one-element tensors (always parallel to their weight).
The expensive penalties are gated (spec section 10 of the 2026-12 revision): the frequency
penalty runs on the steps with ``(t - 1) % frequency_every == 0`` and the rank penalty on
those with ``(t - 1) % rank_every == 0`` (t counts from 1, so step 1 is always penalised);
on the other steps they add nothing.
The pre-processing helpers come from the other references in this folder.
"""

from __future__ import annotations

import math

import torch

from tests.reference.torch_agr import regularize
from tests.reference.torch_edge import edge_strength
from tests.reference.torch_penalties import frequency_penalty, rank_penalty
from tests.reference.torch_tam import correlation


def _approx_rsqrt(row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
    """``1 / sqrt(row_i col_j / mean(row))`` over the last two axes."""
    r = (row / row.mean(dim=-1, keepdim=True)).rsqrt().unsqueeze(-1)
    c = col.rsqrt().unsqueeze(-2)
    return r * c


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x.norm() / math.sqrt(x.numel())


class AutomagicCameAMP(torch.optim.Optimizer):
    def __init__(
        self,
        params,
        lr=1e-6,
        *,
        min_lr=1e-7,
        max_lr=1e-3,
        lr_bump=3e-6,
        betas=(0.8, 0.999, 0.9999),
        eps=(1e-30, 1e-16),
        clip_threshold=1.0,
        beta1_decay=0.9995,
        beta1_floor=0.4,
        tam_momentum=0.9,
        tam_decay=0.9,
        tam_correlation="auto",
        tam_threshold=1000,
        low_rank_emphasis=1.2,
        warmup_steps=500,
        weight_decay=5e-4,
        anchor="zeros",
        edge_suppression=True,
        edge_threshold=0.6,
        edge_penalty=0.1,
        background_regularization=True,
        spatial_awareness=True,
        frequency_strength=0.05,
        detail_preservation=0.8,
        lora_rank_penalty=True,
        rank_penalty_strength=0.01,
        frequency_every=10,
        rank_every=10,
        mask_dtype=torch.float32,
    ):
        super().__init__(params, {"lr": lr})
        self.o = dict(locals())
        del self.o["self"], self.o["params"]
        self.t = 0

    def _init(self, p):
        o, state = self.o, self.state[p]
        state["m"] = torch.zeros_like(p)
        state["s"] = torch.zeros_like(p)
        if p.ndim >= 2:
            for name, shape in (("row", p.shape[:-1]), ("col", p.shape[:-2] + p.shape[-1:])):
                state["v_" + name] = torch.zeros(shape, dtype=p.dtype)
                state["r_" + name] = torch.zeros(shape, dtype=p.dtype)
            state["sv"] = torch.ones(p.shape[:-1] + (1,), dtype=p.dtype)
            state["h"] = torch.zeros_like(p)
        else:
            state["v"] = torch.zeros_like(p)
            state["sv"] = torch.ones((), dtype=p.dtype)
        state["mask"] = torch.full(p.shape, o["lr"], dtype=o["mask_dtype"])
        state["polarity"] = torch.zeros(p.shape, dtype=torch.bool)
        state["anchor"] = p.detach().clone() if o["anchor"] == "init" else torch.zeros_like(p)

    @torch.no_grad()
    def step(self):
        o = self.o
        group = self.param_groups[0]
        params = [p for p in group["params"] if p.grad is not None]
        if not self.state or "lr_max" not in self.__dict__:
            self.lr_max = o["lr"]
            for p in params:
                self._init(p)
        self.t += 1
        t, w = self.t, o["warmup_steps"]
        early = t < w // 2
        warm = t < w
        b1, b2, b3 = o["betas"]
        eps1, eps2 = o["eps"]
        group_lr = group["lr"]
        if warm:
            increase = max(group_lr - self.lr_max, 0.0)
            self.lr_max = max(self.lr_max, group_lr)
            ratio = 1.0
        else:
            self.lr_max = max(self.lr_max, group_lr)
            ratio = max(group_lr / self.lr_max, 0.1)

        raw = [p.grad for p in params]
        processed = regularize(
            raw,
            scope="tree",
            edge=o["edge_suppression"],
            edge_threshold=o["edge_threshold"],
            edge_scale=o["edge_penalty"],
            eps=1e-10,
            cap_alpha=True,  # no element of the group is zeroed (see torch_agr)
        )
        frequency_due = (t - 1) % o["frequency_every"] == 0
        rank_due = (t - 1) % o["rank_every"] == 0
        for p, g_raw, g1 in zip(params, raw, processed, strict=True):
            st = self.state[p]
            if (
                frequency_due
                and o["spatial_awareness"]
                and p.ndim == 2
                and o["frequency_strength"] > 0
            ):
                g1 = frequency_penalty(g1, o["frequency_strength"], 0.3, "highpass")
            if (
                rank_due
                and o["lora_rank_penalty"]
                and p.ndim == 2
                and o["rank_penalty_strength"] > 0
            ):
                # in float64: p - P_10(p) cancels (the tail is ~1e-3 of p), so a float32
                # reconstruction would make the reference, not the optimizer, the noisy side
                penalty = rank_penalty(
                    torch.zeros_like(g1, dtype=torch.float64),
                    p.double(),
                    o["rank_penalty_strength"],
                    10,
                    "tail",
                )
                g1 = g1 + penalty.to(g1.dtype)

            # CAME scaling
            sq = g1 * g1 + eps1
            if p.ndim >= 2:
                st["v_row"].mul_(b2).add_(sq.mean(dim=-1), alpha=1 - b2)
                st["v_col"].mul_(b2).add_(sq.mean(dim=-2), alpha=1 - b2)
                u = g1 * _approx_rsqrt(st["v_row"], st["v_col"])
            else:
                st["v"].mul_(b2).add_(sq, alpha=1 - b2)
                u = g1 / st["v"].sqrt()
            u = u / max(1.0, (_rms(u) / o["clip_threshold"]).item())

            # momentum: TAM early, decaying EMA after
            m = st["m"]
            if early:
                c = correlation(m, u, o["tam_correlation"], o["tam_threshold"])
                st["s"] = o["tam_decay"] * st["s"] + (1 - o["tam_decay"]) * c
                e = o["low_rank_emphasis"] if (o["lora_rank_penalty"] and p.ndim == 2) else 1.0
                d = ((1 + e * st["s"]) / 2 + eps1) * u
                m = o["tam_momentum"] * m + d
            else:
                beta1_t = max(b1 * o["beta1_decay"] ** t, o["beta1_floor"])
                m = beta1_t * m + (1 - beta1_t) * u
            st["m"] = m

            # confidence (official CAME: factored, none for ndim < 2)
            if p.ndim >= 2:
                res = (u - m) ** 2 + eps2
                st["r_row"].mul_(b3).add_(res.mean(dim=-1), alpha=1 - b3)
                st["r_col"].mul_(b3).add_(res.mean(dim=-2), alpha=1 - b3)
                big_u = m * _approx_rsqrt(st["r_row"], st["r_col"])
            else:
                big_u = m

            # direction control
            if early:
                cdir = big_u.abs() * torch.sign(g1)
                if o["edge_suppression"] and p.ndim >= 2:
                    st["h"] = 0.9 * st["h"] + 0.1 * edge_strength(
                        cdir, o["edge_threshold"], o["edge_penalty"]
                    )
                    cdir = cdir * torch.clamp(1 - st["h"], 0.1, 1.0)
                if p.numel() > 1:  # OrthoGrad (spec 3.5c)
                    wv, cv = p.reshape(-1), cdir.reshape(-1)
                    if wv.norm() > 1e-30:
                        c_orth = cv - (wv @ cv) / (wv @ wv + 1e-30) * wv
                        if c_orth.norm() > 1e-30:
                            cdir = (c_orth * (cv.norm() / (c_orth.norm() + 1e-30))).reshape(p.shape)
            else:
                mask = (big_u * g1 > 0).to(p.dtype)
                mask = mask / max(mask.mean().item(), 1e-3)
                if o["background_regularization"] and g1.numel() > 1 and g1.var() < 1e-6:
                    mask = mask * 0.5
                cdir = big_u * mask

            # Automagic lr mask
            if warm:
                polarity = g1 > 0
                if o["spatial_awareness"]:
                    factor = torch.clamp(o["detail_preservation"] * st["sv"], 0.5, 1.5)
                    bump = (o["lr_bump"] * factor).to(o["mask_dtype"])
                else:
                    bump = torch.tensor(o["lr_bump"], dtype=o["mask_dtype"])
                agree = st["polarity"] == polarity
                mask_lr = st["mask"] + torch.where(agree, bump, -bump) + increase
                st["mask"] = torch.clamp(mask_lr, o["min_lr"], o["max_lr"])
                st["polarity"] = polarity
                lr_eff = st["mask"]
            else:
                lr_eff = st["mask"] * ratio
            if o["spatial_awareness"] and p.ndim >= 2:
                if p.shape[-1] > 1:
                    var = g1.var(dim=-1, keepdim=True)
                else:
                    var = torch.ones_like(st["sv"])
                st["sv"] = 0.9 * st["sv"] + 0.1 * var

            delta = cdir * lr_eff.to(p.dtype)

            # selective projection decay toward the fixed anchor, during warm-up
            a = st["anchor"]
            condition = -(g_raw * (p - a)).sum()
            if warm and condition < 0:
                p_tilde = p - delta
                norm_new, norm_old = (p_tilde - a).norm(), (p - a).norm()
                ratio_spd = torch.clamp((norm_new - norm_old) / (norm_new + 1e-8), 0.0, 1.0)
                lam = o["weight_decay"]
                if o["lora_rank_penalty"] and p.ndim == 2:
                    k = min(p.shape)
                    lam = lam * (1 + sum(math.exp(-0.1 * i) for i in range(k)) / k)
                p.copy_(p_tilde - lam * ratio_spd * (p_tilde - a))
            else:
                p.sub_(delta)
