"""CAME and the Automagic-CameAMP optimizer, as composable optax blocks.

* :func:`came` / :func:`scale_by_came` -- official CAME (factored second moment and
  confidence over the last two axes, RMS clipping, decoupled weight decay).
"""

from jaxopt_adv.came.came import ScaleByCameState, came, scale_by_came

__all__ = ["ScaleByCameState", "came", "scale_by_came"]
