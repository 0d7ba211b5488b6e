"""``python -m dmulog``: the same as the ``dmulog`` command."""

import sys

from dmulog.cli import main

if __name__ == "__main__":
    sys.exit(main())
