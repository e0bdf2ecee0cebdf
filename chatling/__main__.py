"""``python -m chatling`` is the ``chatling`` command."""

import sys

from chatling.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
