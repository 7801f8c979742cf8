"""Train a linear classifier on images: `python train.py --help` (the same command as `lintorch train`)."""
import sys

if __name__ == "__main__":
    from lintorch.train import main
    sys.exit(main())
