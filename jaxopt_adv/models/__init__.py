"""torch's layers and two small networks (an MLP, a CNN) in Flax NNX, with torch's semantics.

Layers (:mod:`~jaxopt_adv.models.layers`, :mod:`~jaxopt_adv.models.batchnorm`):
``Linear``, ``Conv2d``, ``MaxPool2d``, ``Flatten``, ``ReLU``, ``Softmax``, ``LogSoftmax``,
``Dropout``, ``BatchNorm`` (torch's momentum and unbiased running variance),
``ChannelwiseScaling``; criteria (:mod:`~jaxopt_adv.models.criteria`):
``class_nll_loss``, ``mse_loss``; ready models: ``MLP``, ``SmallCNN``.

Images are NHWC, features last. Weights move to and from torch with
:mod:`jaxopt_adv.interop`.
"""

from jaxopt_adv.models import layers
from jaxopt_adv.models.batchnorm import BatchNorm, ChannelwiseScaling
from jaxopt_adv.models.cnn import SmallCNN
from jaxopt_adv.models.criteria import class_nll_loss, mse_loss
from jaxopt_adv.models.layers import *  # noqa: F403 (the layers, as layers.__all__ lists them)
from jaxopt_adv.models.mlp import MLP

__all__ = [
    "MLP",
    "BatchNorm",
    "ChannelwiseScaling",
    "SmallCNN",
    "class_nll_loss",
    "mse_loss",
    *layers.__all__,
]
