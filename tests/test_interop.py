"""torch state_dict <-> Flax NNX: round trips, forward parity, and every error path.

Compiled with ``quick_compilation`` (``tests/helpers/quick.py``: why that is safe here).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from torch import nn

from jaxopt_adv.interop import (
    default_mapping,
    export_torch_state_dict,
    load_torch_state_dict,
    to_numpy,
)
from jaxopt_adv.models import MLP, BatchNorm, ChannelwiseScaling, Conv2d, Linear, SmallCNN
from jaxopt_adv.models.torch_twins import TorchMLP, TorchSmallCNN
from tests.harness import precision
from tests.helpers.twins import CNN_ARGS, MLP_ARGS, inputs, make_pair, randomize_batchnorm

pytestmark = pytest.mark.usefixtures("quick_compilation")

torch.set_num_threads(1)

# max |flax - torch| / max |torch| of a forward output
FORWARD_TOLERANCE = {"float64": 1e-12, "float32": 1e-5}


def relative_error(ours, reference) -> float:
    ours = np.asarray(ours, np.float64)
    reference = np.asarray(reference, np.float64)
    assert ours.shape == reference.shape, (ours.shape, reference.shape)
    return float(np.max(np.abs(ours - reference)) / np.max(np.abs(reference)))


# --- round trips ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_torch_to_nnx_to_torch_is_exact(kind):
    reference, model = make_pair(kind, "float32")
    exported = export_torch_state_dict(model)
    original = reference.state_dict()
    assert list(exported) == list(original)  # same keys, same order
    for key, value in original.items():
        if key.endswith("num_batches_tracked"):
            assert exported[key].dtype == np.int64 and exported[key] == 0
        else:
            np.testing.assert_array_equal(exported[key], value.numpy(), err_msg=key)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_nnx_to_torch_to_nnx_is_exact(kind):
    if kind == "mlp":
        source = MLP(*MLP_ARGS, rngs=nnx.Rngs(5))
        target = MLP(*MLP_ARGS, rngs=nnx.Rngs(6))
        reference = TorchMLP(*MLP_ARGS)
    else:
        source = SmallCNN(*CNN_ARGS, image_size=8, rngs=nnx.Rngs(5))
        source(jnp.asarray(inputs("cnn", "float32")[1]))  # non-trivial batch statistics
        target = SmallCNN(*CNN_ARGS, image_size=8, rngs=nnx.Rngs(6))
        reference = TorchSmallCNN(*CNN_ARGS, image_size=8)
    # through a real torch model: strict load, then read back
    reference.load_state_dict(
        {k: torch.from_numpy(v) for k, v in export_torch_state_dict(source).items()}
    )
    load_torch_state_dict(target, reference.state_dict())
    for state_type in (nnx.Param, nnx.BatchStat):
        ours = jax.tree.leaves(nnx.state(target, state_type))
        expected = jax.tree.leaves(nnx.state(source, state_type))
        assert len(ours) == len(expected)
        assert state_type is nnx.BatchStat or len(ours) > 0
        for a, b in zip(ours, expected, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_layouts_of_single_layers():
    """Linear (out, in) -> kernel (in, out); Conv2d OIHW -> HWIO, checked element-wise."""
    linear = nn.Linear(3, 2)
    ours = Linear(3, 2, rngs=nnx.Rngs(0))
    load_torch_state_dict(ours, linear.state_dict())
    np.testing.assert_array_equal(ours.kernel[...], linear.weight.detach().numpy().T)

    conv = nn.Conv2d(2, 5, (3, 4))
    ours = Conv2d(2, 5, (3, 4), rngs=nnx.Rngs(0))
    load_torch_state_dict(ours, conv.state_dict())  # a bare layer: torch prefix "", path ""
    kernel = np.asarray(ours.kernel[...])
    weight = conv.weight.detach().numpy()
    assert kernel.shape == (3, 4, 2, 5)
    assert kernel[2, 1, 0, 4] == weight[4, 0, 2, 1]


# --- forward parity ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("kind", "mode"), [("mlp", "eval"), ("cnn", "train"), ("cnn", "eval")])
def test_forward_parity(kind, mode, dtype):
    with precision(dtype):
        reference, model = make_pair(kind, dtype)
        x_torch, x_nnx = inputs(kind, dtype)
        getattr(reference, mode)()
        getattr(model, mode)()
        expected = reference(torch.from_numpy(x_torch)).detach().numpy()
        out = model(jnp.asarray(x_nnx))
        assert out.dtype == jnp.dtype(dtype)
        error = relative_error(out, expected)
        assert error <= FORWARD_TOLERANCE[dtype], error
        # the running statistics moved identically in train mode (and not at all in eval)
        bn_stats = {k: v for k, v in export_torch_state_dict(model).items() if "running" in k}
        for key, value in bn_stats.items():
            stat_error = relative_error(value, reference.state_dict()[key].numpy())
            assert stat_error <= FORWARD_TOLERANCE[dtype], (key, stat_error)


def test_forward_parity_on_28x28_images():
    reference, model = make_pair("cnn", "float32", image_size=28)
    x_torch, x_nnx = inputs("cnn", "float32", batch=4, image_size=28)
    expected = reference(torch.from_numpy(x_torch)).detach().numpy()
    assert relative_error(model(jnp.asarray(x_nnx)), expected) <= 1e-5


def test_nnx_native_layers_are_supported():
    """nnx.Linear / nnx.Conv / nnx.BatchNorm take torch weights too (eval-mode parity)."""

    class NativeNet(nnx.Module):
        def __init__(self, rngs):
            self.conv = nnx.Conv(1, 3, (3, 3), padding="VALID", rngs=rngs)
            self.norm = nnx.BatchNorm(3, use_running_average=True, rngs=rngs)
            self.head = nnx.Linear(3 * 4 * 4, 2, rngs=rngs)

        def __call__(self, x):
            x = self.norm(self.conv(x))
            return self.head(jnp.moveaxis(x, -1, 1).reshape(x.shape[0], -1))

    torch.manual_seed(1)
    reference = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(48, 2))
    randomize_batchnorm(reference)
    reference.eval()
    model = NativeNet(nnx.Rngs(0))
    assert default_mapping(model, reference.state_dict()) == {"0": "conv", "1": "norm", "3": "head"}
    load_torch_state_dict(model, reference.state_dict())
    x_torch, x_nnx = inputs("cnn", "float32", batch=3, image_size=6)
    expected = reference(torch.from_numpy(x_torch)).detach().numpy()
    assert relative_error(model(jnp.asarray(x_nnx)), expected) <= 1e-5


# --- mappings ---------------------------------------------------------------------------


def test_explicit_mapping_when_the_orders_differ():
    class Swapped(nn.Module):  # registers the head first: the default pairing fails
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(16, 10)
            self.hidden = nn.Linear(64, 32)
            self.middle = nn.Linear(32, 16)

        def forward(self, x):
            return self.head(torch.relu(self.middle(torch.relu(self.hidden(x)))))

    torch.manual_seed(2)
    reference = Swapped()
    model = MLP(*MLP_ARGS, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="'head'.*does not match|shape mismatch"):
        load_torch_state_dict(model, reference.state_dict())
    mapping = {"hidden": "layers.0", "middle": "layers/3", "head": "layers.6"}
    load_torch_state_dict(model, reference.state_dict(), mapping)
    model.eval()
    x = np.random.default_rng(0).normal(size=(5, 64)).astype(np.float32)
    expected = reference(torch.from_numpy(x)).detach().numpy()
    assert relative_error(model(jnp.asarray(x)), expected) <= 1e-5
    exported = export_torch_state_dict(model, mapping)
    assert set(exported) == set(reference.state_dict())


def test_default_mapping_pairs_in_definition_order():
    reference = TorchSmallCNN(*CNN_ARGS, image_size=8)
    model = SmallCNN(*CNN_ARGS, image_size=8, rngs=nnx.Rngs(0))
    assert default_mapping(model, reference.state_dict()) == {
        "features.0": "features.0",
        "features.1": "features.1",
        "features.4": "features.4",
        "features.5": "features.5",
        "classifier": "classifier",
    }


def test_batchnorm_counter_is_optional_and_channelwise_scaling_maps():
    class Seed(nnx.Module):  # the seed's BatchNormalization + ChannelwiseScaling
        def __init__(self):
            self.norm = BatchNorm(3, affine=False)
            self.scaling = ChannelwiseScaling(3)

    state = {
        "norm.running_mean": np.array([1.0, 2.0, 3.0]),
        "norm.running_var": np.array([4.0, 5.0, 6.0]),
        "scaling.weight": np.array([7.0, 8.0, 9.0]),
        "scaling.bias": np.array([0.1, 0.2, 0.3]),
    }
    model = Seed()
    load_torch_state_dict(model, state)  # no num_batches_tracked: fine
    np.testing.assert_allclose(model.norm.var[...], [4.0, 5.0, 6.0])
    np.testing.assert_allclose(model.scaling.scale[...], [7.0, 8.0, 9.0])
    assert model.norm.var[...].dtype == jnp.float32  # cast to the model's dtype
    exported = export_torch_state_dict(model)
    assert list(exported) == [
        "norm.running_mean",
        "norm.running_var",
        "norm.num_batches_tracked",
        "scaling.weight",
        "scaling.bias",
    ]


def test_accepts_tensors_with_grad_jax_arrays_and_lists():
    weight = torch.ones(2, 3, requires_grad=True)
    assert to_numpy(weight).shape == (2, 3)
    layer = Linear(3, 2, rngs=nnx.Rngs(0))
    load_torch_state_dict(layer, {"weight": weight, "bias": jnp.array([1.0, 2.0])})
    load_torch_state_dict(layer, {"weight": [[1.0, 2.0, 3.0]] * 2, "bias": [3.0, 4.0]})
    np.testing.assert_array_equal(layer.bias[...], [3.0, 4.0])
    np.testing.assert_array_equal(layer.kernel[...][:, 0], [1.0, 2.0, 3.0])


def deep_pair():
    """14 Linear(8, 8) layers (``layers.0`` ... ``layers.39``, same names both sides), the
    torch state_dict with its keys sorted as text (``layers.12`` before ``layers.3``)."""
    torch.manual_seed(3)
    reference = TorchMLP(8, (8,) * 13, 8).eval()
    model = MLP(8, (8,) * 13, 8, rngs=nnx.Rngs(0))
    model.eval()
    state = reference.state_dict()
    return reference, model, {key: state[key] for key in sorted(state)}


def test_layers_pair_by_name_when_the_keys_are_sorted_as_text():
    reference, model, sorted_state = deep_pair()
    assert list(sorted_state)[2:4] == ["layers.12.bias", "layers.12.weight"]
    mapping = default_mapping(model, sorted_state)
    assert mapping == {prefix: prefix for prefix in mapping} and len(mapping) == 14
    load_torch_state_dict(model, sorted_state)
    x = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    expected = reference(torch.from_numpy(x)).detach().numpy()
    assert relative_error(model(jnp.asarray(x)), expected) <= 1e-5


def test_partial_load_by_name_without_a_mapping():
    """strict=False, no mapping: the torch modules named as NNX layers load, the others
    stay as they were."""
    reference, model, sorted_state = deep_pair()
    before = export_torch_state_dict(model)
    loaded = ("layers.3", "layers.12", "layers.39")
    part = {k: v for k, v in sorted_state.items() if k.rpartition(".")[0] in loaded}
    part["extra.weight"] = torch.zeros(3)  # an unknown module: ignored, as torch does
    with pytest.raises(ValueError, match=r"cannot pair .* left over are torch \['extra'\]"):
        load_torch_state_dict(model, part)
    load_torch_state_dict(model, part, strict=False)
    for key, value in export_torch_state_dict(model).items():
        expected = part[key].numpy() if key in part else before[key]
        np.testing.assert_array_equal(value, expected, err_msg=key)


def test_sorted_keys_of_other_names_do_not_pair_by_position():
    """Names that match no NNX layer pair in order, which a text-sorted state_dict has
    lost: a clear error instead of equal-shaped layers loaded into the wrong places."""
    _, model, sorted_state = deep_pair()
    renamed = {f"net.{key}": value for key, value in sorted_state.items()}
    with pytest.raises(ValueError, match=r"lists 'net.layers.27' before 'net.layers.3'"):
        load_torch_state_dict(model, renamed)
    in_torch_order = {k: renamed[k] for k in sorted(renamed, key=lambda k: int(k.split(".")[2]))}
    load_torch_state_dict(model, in_torch_order)  # torch's order: pairs by position


# --- errors -----------------------------------------------------------------------------


def model_and_state():
    reference = TorchSmallCNN(*CNN_ARGS, image_size=8)
    model = SmallCNN(*CNN_ARGS, image_size=8, rngs=nnx.Rngs(0))
    return model, {k: v.numpy() for k, v in reference.state_dict().items()}


def test_shape_mismatch_names_the_key_and_leaves_the_model_unchanged():
    model, state = model_and_state()
    before = export_torch_state_dict(model)
    state["classifier.weight"] = np.zeros((10, 31), np.float32)
    with pytest.raises(
        ValueError, match=r"'classifier.weight'.*\(10, 31\).*expects torch shape \(10, 32\)"
    ):
        load_torch_state_dict(model, state)
    for key, value in export_torch_state_dict(model).items():
        np.testing.assert_array_equal(value, before[key])  # conv layers were not written


def test_missing_key_is_named():
    model, state = model_and_state()
    del state["features.5.running_var"]
    with pytest.raises(ValueError, match=r"missing key 'features.5.running_var'"):
        load_torch_state_dict(model, state, default_mapping(model, model_and_state()[1]))
    with pytest.raises(ValueError, match=r"'features.5'.*does not match"):
        load_torch_state_dict(model, state)


def test_unexpected_key_is_named_unless_not_strict():
    model, state = model_and_state()
    mapping = default_mapping(model, state)
    state["extra.weight"] = np.zeros(3)
    with pytest.raises(ValueError, match=r"unexpected keys in state_dict: \['extra.weight'\]"):
        load_torch_state_dict(model, state, mapping)
    load_torch_state_dict(model, state, mapping, strict=False)


def test_partial_load_needs_strict_false():
    model, state = model_and_state()
    only_head = {k: v for k, v in state.items() if k.startswith("classifier")}
    mapping = {"classifier": "classifier"}
    with pytest.raises(ValueError, match=r"missing keys: nnx layers \['features.0'"):
        load_torch_state_dict(model, only_head, mapping)
    load_torch_state_dict(model, only_head, mapping, strict=False)
    np.testing.assert_array_equal(model.classifier.kernel[...], only_head["classifier.weight"].T)


def test_layer_count_mismatch_and_bad_path():
    model, state = model_and_state()
    del state["classifier.weight"], state["classifier.bias"]
    with pytest.raises(ValueError, match=r"cannot pair 4 torch modules .* with 5 nnx layers"):
        load_torch_state_dict(model, state)
    with pytest.raises(ValueError, match=r"nnx path 'features.9'"):
        load_torch_state_dict(model, state, {"features.0": "features.9"})
    with pytest.raises(ValueError, match=r"nnx path 'head'"):
        export_torch_state_dict(model, {"x": "head"})
    with pytest.raises(ValueError, match=r"unsupported layer type ReLU"):
        load_torch_state_dict(model, state, {"features.0": "features.2"})
