"""Train a linear classifier on images: `python train.py --help`."""
import sys

if __name__ == "__main__":
    try:
        from lintorch.config import parse_args
        args = parse_args()                      # no torch yet: usage errors answer at once
        from lintorch.run import main
        sys.exit(main(args))
    except KeyboardInterrupt:                    # Ctrl-C while torch is still importing
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
