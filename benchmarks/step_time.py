"""Optimizer step time against optax and torch.optim, and the memory floor.

The benchmark lives in :mod:`jaxopt_adv.app.bench` and is the ``jaxopt-adv bench``
command; this script runs it with the same flags (see ``jaxopt-adv bench --help``):

  python benchmarks/step_time.py --sizes 1e6,1e7,5e7 --leaves 1,200 --rounds 2
"""

import sys

from jaxopt_adv.app.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
