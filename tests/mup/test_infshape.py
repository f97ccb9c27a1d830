"""infer_infshapes against mup.set_base_shapes (with and without delta), roles, overrides."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
import torch
from flax import nnx
from mup import set_base_shapes

from jaxopt_adv.mup import InfShape, MuMLP, infer_infshapes, mup_multipliers, param_path
from tests.mup.torch_models import TorchMuCNN, TorchMuMLP

torch.set_num_threads(1)


def shapes(tree_of_shapes):
    return {k: jax.ShapeDtypeStruct(s, jnp.float32) for k, s in tree_of_shapes.items()}


def torch_shapes(model: torch.nn.Module) -> dict:
    return shapes({k: tuple(p.shape) for k, p in model.named_parameters()})


def flax_shapes(model: torch.nn.Module) -> dict:
    """The same parameters in Flax's layout: Linear W.T, conv OIHW -> HWIO."""
    out = {}
    for name, p in model.named_parameters():
        s = tuple(p.shape)
        if len(s) == 4:
            s = (s[2], s[3], s[1], s[0])
        out[name] = s[::-1] if len(s) == 2 else s
    return shapes(out)


def assert_same_as_mup(model, infshapes, layout):
    for name, p in model.named_parameters():
        ours, theirs = infshapes[name], p.infshape
        assert ours.ninf == theirs.ninf(), name
        assert ours.width_mult == theirs.width_mult(), name
        if theirs.ninf() == 2:
            fan_in, fan_out = theirs.fanin_fanout()
            assert (ours.fan_in_mult, ours.fan_out_mult) == (
                fan_in.width_mult(),
                fan_out.width_mult(),
            ), name
        if layout == "torch":
            assert [b is not None for b in ours.base_dims] == [d.isinf() for d in theirs], name
            assert list(ours.dims) == theirs.shape(), name


@pytest.mark.parametrize("layout", ["flax", "torch"])
def test_matches_set_base_shapes_with_delta(layout):
    """base 64, delta 128; the target's second hidden layer stays at 64 (a width whose
    size equals its base: finite without the delta, infinite with multiplier 1 with it)."""
    torch.manual_seed(0)
    convert = torch_shapes if layout == "torch" else flax_shapes
    base = TorchMuMLP(20, (64, 64), 10)
    delta = TorchMuMLP(20, (128, 128), 10)
    model = TorchMuMLP(20, (256, 64), 10)
    set_base_shapes(model, base, delta=delta)
    infshapes = infer_infshapes(convert(base), convert(model), convert(delta), layout=layout)
    assert_same_as_mup(model, infshapes, layout)
    readout = infshapes["layers.4.weight"]
    assert readout.role == "output" and readout.ninf == 1 and readout.width_mult == 1.0
    # without the delta, the unchanged width looks finite: the readout is then "scalar"
    assert infer_infshapes(convert(base), convert(model), layout=layout)[
        "layers.4.weight"
    ].role == ("scalar")


@pytest.mark.parametrize("layout", ["flax", "torch"])
def test_matches_set_base_shapes_for_convolutions(layout):
    convert = torch_shapes if layout == "torch" else flax_shapes
    model, base = TorchMuCNN(32, 48), TorchMuCNN(8, 8)
    set_base_shapes(model, base)
    infshapes = infer_infshapes(convert(base), convert(model), layout=layout)
    assert_same_as_mup(model, infshapes, layout)
    assert [infshapes[k].role for k in ("conv1.weight", "conv2.weight", "readout.weight")] == [
        "input",
        "hidden",
        "output",
    ]


def test_roles_of_an_mlp():
    base = shapes({"in": (10, 64), "b": (64,), "h": (64, 64), "out": (64, 10), "ob": (10,)})
    target = shapes({"in": (10, 256), "b": (256,), "h": (256, 256), "out": (256, 10), "ob": (10,)})
    roles = {k: v.role for k, v in infer_infshapes(base, target).items()}
    assert roles == {"in": "input", "b": "bias", "h": "hidden", "out": "output", "ob": "scalar"}


def test_nnx_state_and_shapes_from_eval_shape():
    def make(width, mult=1.0):
        return MuMLP(4, (width, width), 3, width_mult=mult, rngs=nnx.Rngs(0))

    base = jax.eval_shape(lambda: nnx.state(make(8), nnx.Param))
    params = nnx.state(make(32, 4.0), nnx.Param)
    infshapes = infer_infshapes(base, params)
    assert isinstance(infshapes, nnx.State)
    assert infshapes["layers"][2]["kernel"] == InfShape((8, 8), (32, 32), "hidden", "flax")
    assert infshapes["layers"][4]["bias"].role == "scalar"
    pure = infer_infshapes(base, nnx.as_pure(params))
    paths = [param_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(pure)[0]]
    assert "layers/4/kernel" in paths and len(paths) == 6


# --------------------------------------------------------------------------------------
# layer_mapping.

BASE = shapes({"embed": (100, 64), "attn": (64, 8, 8), "norm": (64,), "head": (64, 100)})
TARGET = shapes({"embed": (100, 256), "attn": (256, 32, 16), "norm": (256,), "head": (256, 100)})


def test_layer_mapping_overrides_roles_by_path_regex():
    mapping = {"attn": "hidden", "^norm$": "scalar", "^head$": "scalar", "e": "input"}
    infshapes = infer_infshapes(BASE, TARGET, layer_mapping=mapping)
    assert {k: v.role for k, v in infshapes.items()} == {
        "embed": "input",
        "attn": "hidden",  # three infinite axes: only a mapping makes it usable
        "norm": "scalar",  # never scaled, although it has a width
        "head": "scalar",  # "^head$" and "e" both match: the first pattern wins
    }
    assert mup_multipliers(infshapes["norm"], "sgd") == (1.0, 1.0)
    assert mup_multipliers(infshapes["head"], "sgd") == (1.0, 1.0)  # inferred: (4.0, 0.25)
    # attn in Flax layout: fan-in axis -2 (heads, 8 -> 32), fan-out -1 (8 -> 16)
    assert mup_multipliers(infshapes["attn"], "adam") == (0.25, 4.0)
    assert mup_multipliers(
        infer_infshapes(BASE, TARGET, layer_mapping={"attn": "hidden"})["head"], "sgd"
    ) == (4.0, 0.25)


def test_more_than_two_infinite_axes_need_a_mapping():
    with pytest.raises(ValueError, match="'attn' has 3 infinite axes"):
        infer_infshapes(BASE, TARGET)


@pytest.mark.parametrize(
    "mapping, message",
    [
        ({"attn": "matrix"}, "role must be one of"),
        ({"attn": "hidden", "nothing_matches": "scalar"}, "match no parameter path"),
        ({"attn": "hidden", "[": "scalar"}, "not a regex"),
        ({"attn": "hidden", "norm": "hidden"}, "'norm' of shape \\(256,\\) cannot be 'hidden'"),
    ],
)
def test_bad_layer_mapping(mapping, message):
    with pytest.raises(ValueError, match=message):
        infer_infshapes(BASE, TARGET, layer_mapping=mapping)


# --------------------------------------------------------------------------------------
# Bad input.


@pytest.mark.parametrize(
    "base, target, delta, message",
    [
        ({"a": (4,)}, {"b": (4,)}, None, "only in base_params \\['a'\\], only in params \\['b'\\]"),
        ({"a": (4, 4)}, {"a": (4,)}, None, "'a' has shape \\(4, 4\\) in base_params"),
        ({"a": (4,)}, {"a": (8,)}, {"a": (4, 2)}, "in delta_params"),
        ({"a": (4, 3)}, {"a": (8, 5)}, {"a": (8, 3)}, "axis 1 is finite"),
    ],
)
def test_mismatched_trees(base, target, delta, message):
    delta = None if delta is None else shapes(delta)
    with pytest.raises(ValueError, match=message):
        infer_infshapes(shapes(base), shapes(target), delta)


def test_bad_layout_and_infshape_leaves():
    with pytest.raises(ValueError, match="Invalid layout"):
        infer_infshapes(shapes({"a": (4,)}), shapes({"a": (8,)}), layout="jax")
    infshapes = infer_infshapes(shapes({"a": (4,)}), shapes({"a": (8,)}))
    with pytest.raises(ValueError, match="params holds InfShape leaves"):
        infer_infshapes(shapes({"a": (4,)}), infshapes)
