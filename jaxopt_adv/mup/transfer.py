r"""``ZeroShotTransferOptimizer``: a torch class's call shape over the muP optimizers.

The ``advanced_optimizers`` torch package has ``ZeroShotTransferOptimizer(params, model,
base_optimizer=AdamW, base_optimizer_kwargs={'lr': 1e-3}, mu_parametrization=None,
layer_mapping=None)``, which by default scales nothing, and when switched on applies
wrong rules (hidden layers at the full lr instead of lr / width multiplier, an extra
1/sqrt(m) on the hidden init, the output layer found by name). This factory keeps the call shape
and builds :func:`~jaxopt_adv.mup.mu_adamw`, :func:`~jaxopt_adv.mup.mu_adam` or
:func:`~jaxopt_adv.mup.mu_sgd` from it, with muP's rules (PyPI ``mup==1.0.0``).

References:
  Yang et al., "Tensor Programs V: Tuning Large Neural Networks via Zero-Shot
  Hyperparameter Transfer", NeurIPS 2021 (arXiv 2203.03466).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optax
from flax import nnx

from jaxopt_adv._common import check
from jaxopt_adv.mup.infshape import InfShape, infer_infshapes, paths_and_leaves
from jaxopt_adv.mup.nn import MuReadout
from jaxopt_adv.mup.optim import mu_adam, mu_adamw, mu_sgd

__all__ = ["BASE_OPTIMIZERS", "ZeroShotTransferOptimizer"]

BASE_OPTIMIZERS = {"adamw": mu_adamw, "adam": mu_adam, "sgd": mu_sgd}
# the torch-style keywords each base optimizer takes (lr -> learning_rate, betas -> b1, b2)
_TORCH_KWARGS = {
    "adamw": ("lr", "betas", "eps", "weight_decay", "decoupled_wd"),
    "adam": ("lr", "betas", "eps", "weight_decay"),
    "sgd": ("lr", "momentum", "dampening", "nesterov", "weight_decay"),
}


def _factory_kwargs(base_optimizer: str, torch_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """torch-style ``{'lr': ..., 'betas': (b1, b2), ...}`` as our factory's kwargs."""
    allowed = _TORCH_KWARGS[base_optimizer]
    unknown = sorted(set(torch_kwargs) - set(allowed))
    check(
        not unknown,
        f"base_optimizer_kwargs {unknown} are not arguments of {base_optimizer!r} "
        f"(allowed: {allowed})",
    )
    check("lr" in torch_kwargs, "base_optimizer_kwargs needs 'lr', as torch optimizers do")
    kwargs = dict(torch_kwargs)
    kwargs["learning_rate"] = kwargs.pop("lr")
    if "betas" in kwargs:
        kwargs["b1"], kwargs["b2"] = kwargs.pop("betas")
    return kwargs


def _infshapes(params: Any, mu_parametrization: Any, layer_mapping: Any) -> Any:
    """``mu_parametrization`` as an infshapes tree (see ZeroShotTransferOptimizer)."""
    if mu_parametrization is None:
        return infer_infshapes(params, params, layer_mapping=layer_mapping)
    leaves = paths_and_leaves(mu_parametrization)[1]
    if leaves and all(isinstance(leaf, InfShape) for leaf in leaves):
        check(
            layer_mapping is None,
            "layer_mapping applies when infshapes are inferred; pass it to infer_infshapes",
        )
        return mu_parametrization
    return infer_infshapes(mu_parametrization, params, layer_mapping=layer_mapping)


def _check_readouts(model: nnx.Module, infshapes: Any) -> None:
    """Every "output" parameter must belong to a MuReadout with the same ``m_in``."""
    modules = {"/".join(map(str, path)): node for path, node in nnx.iter_graph(model)}
    paths, shapes, _ = paths_and_leaves(infshapes)
    for path, infshape in zip(paths, shapes, strict=True):
        if infshape.role != "output" or infshape.width_mult == 1.0:
            continue
        owner = modules.get(path.rpartition("/")[0])
        check(
            isinstance(owner, MuReadout),
            f"{path!r} maps a width to a finite size (a readout) but its layer is "
            f"{type(owner).__name__}, not MuReadout: the muP optimizer alone is not muP "
            "(use jaxopt_adv.mup.MuReadout and mup_rescale_init)",
        )
        check(
            owner.width_mult == infshape.width_mult,
            f"MuReadout at {path!r} has width_mult={owner.width_mult}, but its shapes give "
            f"{infshape.width_mult}",
        )


def ZeroShotTransferOptimizer(  # noqa: N802 -- the torch class's name, kept for ports
    params: Any = None,
    model: nnx.Module | None = None,
    base_optimizer: str = "adamw",
    base_optimizer_kwargs: Mapping[str, Any] | None = None,
    mu_parametrization: Any = None,
    layer_mapping: Mapping[str, str] | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""A muP optimizer from the torch class's arguments (a factory, not a class).

    Args:
      params: the target model's parameters (a pytree or ``nnx.State``); default
        ``nnx.state(model, nnx.Param)``.
      model: optional NNX model. When given, every parameter that maps a width to a
        finite size (a readout) must belong to a :class:`~jaxopt_adv.mup.MuReadout`
        with the matching ``width_mult``; otherwise ``ValueError``, since the optimizer
        alone is not muP.
      base_optimizer: static; ``"adamw"`` (:func:`~jaxopt_adv.mup.mu_adamw`),
        ``"adam"`` (:func:`~jaxopt_adv.mup.mu_adam`) or ``"sgd"``
        (:func:`~jaxopt_adv.mup.mu_sgd`).
      base_optimizer_kwargs: torch-style keywords: ``lr`` (required), ``betas``, ``eps``,
        ``weight_decay`` (default 0, as in ``mup``), ``decoupled_wd`` (AdamW),
        ``momentum``, ``dampening``, ``nesterov`` (SGD). Default ``{'lr': 1e-3}``.
      mu_parametrization: the base: ``None`` (the model is its own base, every width
        multiplier is 1 and the result *is* the standard optimizer, as
        ``mup.set_base_shapes(model, None)``), base-width parameters or shapes (inferred
        with :func:`~jaxopt_adv.mup.infer_infshapes`), or a ready infshapes tree.
      layer_mapping: ``{param-path regex: role}`` overrides for the inference.

    Returns:
      The optax transform.

    Raises:
      ValueError: unknown optimizer or keyword, no ``lr``, neither params nor model, a
        readout that is not a matching MuReadout.

    Example:
      >>> import jax
      >>> from flax import nnx
      >>> from jaxopt_adv.mup import MuMLP, ZeroShotTransferOptimizer
      >>> model = MuMLP(8, (64, 64), 3, width_mult=4.0, rngs=nnx.Rngs(0))
      >>> base = jax.eval_shape(lambda: nnx.state(MuMLP(8, (16, 16), 3, rngs=nnx.Rngs(0)), nnx.Param))
      >>> tx = ZeroShotTransferOptimizer(
      ...     None, model, base_optimizer_kwargs={"lr": 1e-3, "weight_decay": 0.01},
      ...     mu_parametrization=base)
      >>> optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    References:
      Yang et al., "Tensor Programs V", NeurIPS 2021; ``mup.MuAdamW`` / ``MuAdam`` /
      ``MuSGD`` (``mup==1.0.0``).
    """
    check(
        base_optimizer in BASE_OPTIMIZERS,
        f"Invalid base_optimizer: {base_optimizer!r} (must be one of {tuple(BASE_OPTIMIZERS)})",
    )
    if params is None:
        check(model is not None, "ZeroShotTransferOptimizer needs params or a model")
        params = nnx.state(model, nnx.Param)
    kwargs = _factory_kwargs(base_optimizer, base_optimizer_kwargs or {"lr": 1e-3})
    infshapes = _infshapes(params, mu_parametrization, layer_mapping)
    if model is not None:
        _check_readouts(model, infshapes)
    return BASE_OPTIMIZERS[base_optimizer](infshapes=infshapes, **kwargs)
