"""Pieces the torch.optim.lr_scheduler parity tests share (tests/torch_exact/
test_lr_scheduler.py, test_lr_scheduler_more.py, test_swa_utils.py): torch's lr sequence
from its own scheduler, ours from an optax schedule under jit, their comparison, and a
harness torch factory whose ``optimizer.step()`` also steps the scheduler."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import torch

LR = 0.1  # the base learning rate of every scheduler test


def torch_values(make_scheduler, num_steps, optimizer_cls=torch.optim.SGD, **kwargs):
    """The lr (and momentum / beta1) torch uses at each optimizer step 0..num_steps-1."""
    param = torch.zeros(2, requires_grad=True)
    optimizer = optimizer_cls([param], **{"lr": LR, **kwargs})
    scheduler = make_scheduler(optimizer)
    lrs, momenta = [], []
    for t in range(num_steps):
        group = optimizer.param_groups[0]
        lrs.append(group["lr"])
        momenta.append(group["betas"][0] if "betas" in group else group.get("momentum"))
        param.grad = torch.ones(2)
        optimizer.step()
        if t < num_steps - 1:
            scheduler.step()
    return np.array(lrs), np.array(momenta, dtype=float)


def with_scheduler(optimizer_cls, make_scheduler, scheduler_steps=None, **kwargs):
    """A harness torch factory: ``optimizer.step()`` is followed by ``scheduler.step()``.

    ``scheduler_steps`` caps the scheduler steps (torch's OneCycleLR cannot compute the
    lr after its last step when its last phase is empty).
    """

    def factory(params):
        optimizer = optimizer_cls(params, **kwargs)
        scheduler = make_scheduler(optimizer)
        step = optimizer.step
        taken = [0]

        @functools.wraps(step)  # keeps torch's ``_wrapped_by_lr_sched`` marker
        def step_then_schedule(*args, **kw):
            out = step(*args, **kw)
            if scheduler_steps is None or taken[0] < scheduler_steps:
                scheduler.step()
                taken[0] += 1
            return out

        optimizer.step = step_then_schedule
        return optimizer

    return factory


def ours_values(schedule, num_steps):
    """The schedule under jit on int32 counts, as optax evaluates it."""
    counts = jnp.arange(num_steps, dtype=jnp.int32)
    return np.asarray(jax.jit(jax.vmap(schedule))(counts))


def assert_sequence_close(ours, reference, tolerance):
    """Pointwise relative error; exact where torch's value is exactly 0."""
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    assert ours.shape == reference.shape
    zero = reference == 0
    assert np.all(np.abs(ours[zero]) <= tolerance * np.max(np.abs(reference))), ours[zero]
    error = np.max(np.abs(ours - reference)[~zero] / np.abs(reference[~zero]), initial=0.0)
    assert error <= tolerance, f"relative error {error:.3e} > {tolerance:.0e}"
    return error


def plateau_losses(num_steps=60, seed=3):
    """Falls in stages with noisy plateaus in between: several reductions, cooldowns."""
    rng = np.random.default_rng(seed)
    level, losses = 10.0, []
    for t in range(num_steps):
        if t % 12 == 0:
            level *= 0.6
        losses.append(level * (1 + 0.02 * rng.normal()) + (t % 12 == 1) * 0.3)
    return losses
