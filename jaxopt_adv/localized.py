"""Deprecated: localized learning's names live in :mod:`jaxopt_adv.local`.

``from jaxopt_adv.localized import X`` still works, with a ``DeprecationWarning``; write
``from jaxopt_adv.local import X``.
"""

from jaxopt_adv._moved import moved_getattr

__getattr__ = moved_getattr(__name__, "jaxopt_adv.local", "jaxopt_adv.local.localized")
