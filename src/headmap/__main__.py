"""``python -m headmap``: the headmap command line, the same as the ``headmap`` script."""

import sys

from headmap.cli import main

if __name__ == "__main__":
    sys.exit(main())
