"""The ``jaxopt-adv`` command: ``compare`` optimizers on real data, ``list``, ``bench``.

Needs the ``examples`` extra (matplotlib, mlxtend, scikit-learn, rich); torch is optional
(the comparison with torch and the torch columns of ``bench``).
"""
