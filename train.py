"""Train a linear classifier on images: `python train.py --help`."""
import sys

from lintorch.config import parse_args
from lintorch.run import main

if __name__ == "__main__":
    sys.exit(main(parse_args()))
