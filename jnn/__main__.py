"""``python -m jnn``: the jnn command line (see :mod:`jnn.cli`)."""

import sys

from jnn.cli import main

if __name__ == "__main__":
    sys.exit(main())
