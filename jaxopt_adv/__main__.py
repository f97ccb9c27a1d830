"""``python -m jaxopt_adv``: the ``jaxopt-adv`` command."""

import sys

from jaxopt_adv.app.cli import main

if __name__ == "__main__":
    sys.exit(main())
