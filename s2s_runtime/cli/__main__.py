"""`python -m s2s_runtime.cli`: the `s2s` command."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
