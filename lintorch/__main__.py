"""`python -m lintorch COMMAND ...`: the `lintorch` console script (lintorch/commands.py)."""
import sys

from .commands import main

if __name__ == "__main__":
    sys.exit(main())
