"""Train a linear classifier on images: `python train.py --help`."""
import signal
import sys


def _import_quietly():
    """Import what training needs with Ctrl-C held back: an interrupt that lands inside torch's or
    numpy's C-level imports is swallowed or half-raised by them (exit 0, or an AttributeError),
    so it is only noted here and acted on once the imports are done."""
    pending = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        from lintorch.run import main
        import lintorch.recipe, lintorch.trainer, lintorch.monitor  # noqa: E401,F401  (imported by main later)
        import torch.utils.tensorboard  # noqa: F401
    finally:
        signal.signal(signal.SIGINT, old)
    if pending:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    return main


if __name__ == "__main__":
    try:
        from lintorch.config import parse_args
        args = parse_args()                      # no torch yet: usage errors answer at once
        main = _import_quietly()
        sys.exit(main(args))
    except KeyboardInterrupt:                    # Ctrl-C before the imports began
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
