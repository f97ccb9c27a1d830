"""The TAM / AdaTAM parity configurations (pytorch_optimizer's TAM and AdaTAM) that the
JAX transforms' tests (tests/tam/test_tam.py) and the kernel's (tests/fast/test_tam.py)
share: our state fields -> torch's state keys, named hyperparameter sets, and our keyword
arguments as torch's."""

from __future__ import annotations

TAM_STATE = {"mu": "momentum_buffer", "s": "s"}
ADATAM_STATE = {"mu": "exp_avg", "nu": "exp_avg_sq", "s": "s"}

TAM_CASES = {
    "plain": {},
    "hyper_decoupled": {"b1": 0.5, "decay_rate": 0.3, "eps": 1e-3, "weight_decay": 0.1},
    "fixed_decay_maximize": {"weight_decay": 0.05, "fixed_decay": True, "maximize": True},
}
ADATAM_CASES = {
    "plain": {},
    "hyper_decoupled": {"b1": 0.5, "b2": 0.9, "decay_rate": 0.3, "eps": 1e-3, "weight_decay": 0.1},
    "coupled_maximize": {"weight_decay": 0.1, "decoupled_weight_decay": False, "maximize": True},
    "fixed_decay": {"weight_decay": 0.05, "fixed_decay": True},
}


def torch_kwargs(kwargs: dict, first: str = "momentum") -> dict:
    """Our ``b1`` (and ``b2``) as torch's ``momentum`` (TAM) or ``betas`` (AdaTAM)."""
    kwargs = dict(kwargs)
    b1 = kwargs.pop("b1", 0.9)
    if "decoupled_weight_decay" in kwargs:  # pytorch_optimizer's name
        kwargs["weight_decouple"] = kwargs.pop("decoupled_weight_decay")
    if first == "momentum":
        return {"momentum": b1, **kwargs}
    return {"betas": (b1, kwargs.pop("b2", 0.999)), **kwargs}
