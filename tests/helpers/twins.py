"""Torch models and their Flax NNX twins holding the same weights, and matching inputs."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx
from torch import nn

from jaxopt_adv.interop import load_torch_state_dict
from jaxopt_adv.models import MLP, SmallCNN
from jaxopt_adv.models.torch_twins import TorchMLP, TorchSmallCNN

MLP_ARGS = (64, (32, 16), 10)
CNN_ARGS = (1, (4, 8), 10)


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial affine parameters and running statistics in every torch BatchNorm."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            c = module.num_features
            with torch.no_grad():
                module.weight.copy_(1 + 0.5 * torch.randn(c, generator=generator))
                module.bias.copy_(0.5 * torch.randn(c, generator=generator))
                module.running_mean.copy_(0.3 * torch.randn(c, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(c, generator=generator))
                module.num_batches_tracked.fill_(7)


def make_pair(kind: str, dtype: str, image_size: int = 8):
    """A torch model (seeded init) and the NNX twin holding its weights (import)."""
    torch.manual_seed(0)
    torch_dtype = getattr(torch, dtype)
    param_dtype = jnp.dtype(dtype)
    if kind == "mlp":
        reference = TorchMLP(*MLP_ARGS).to(torch_dtype)
        model = MLP(*MLP_ARGS, param_dtype=param_dtype, rngs=nnx.Rngs(1))
    else:
        reference = TorchSmallCNN(*CNN_ARGS, image_size=image_size).to(torch_dtype)
        randomize_batchnorm(reference)
        model = SmallCNN(
            *CNN_ARGS, image_size=image_size, param_dtype=param_dtype, rngs=nnx.Rngs(1)
        )
    load_torch_state_dict(model, reference.state_dict())
    return reference, model


def inputs(kind: str, dtype: str, batch: int = 16, image_size: int = 8):
    rng = np.random.default_rng(3)
    if kind == "mlp":
        x = rng.normal(size=(batch, MLP_ARGS[0]))
        return x.astype(dtype), x.astype(dtype)
    x = rng.normal(size=(batch, 1, image_size, image_size)).astype(dtype)  # NCHW
    return x, x.transpose(0, 2, 3, 1)  # torch NCHW, NNX NHWC
