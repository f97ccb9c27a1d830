"""Shapes shared by the muP optimizer tests: infshapes for the harness parameters."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxopt_adv.mup import infer_infshapes
from tests.harness import PARAM_SHAPES

# Base shapes of the harness parameters, read in torch's layout [out, in, ...]: the
# matrix has m_out = 2.5, m_in = 2 (not a square scaling), the conv m_out = 3, m_in = 2
# with finite kernel axes, the vector m = 3.5, the scalar no width.
BASE_SHAPES = {"matrix": (2, 2), "vector": (2,), "conv": (1, 1, 3, 3), "scalar": ()}


def harness_infshapes(layout: str = "torch"):
    base = {k: jax.ShapeDtypeStruct(s, jnp.float64) for k, s in BASE_SHAPES.items()}
    target = {k: jax.ShapeDtypeStruct(s, jnp.float64) for k, s in PARAM_SHAPES.items()}
    return infer_infshapes(base, target, layout=layout)
