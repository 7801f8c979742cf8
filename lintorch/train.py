"""The train command: `python train.py`, `lintorch train` and `python -m lintorch.train` all land
here. Its flags are lintorch.config's; the work is lintorch.training.run's.

Arguments are parsed before torch is imported (usage errors and --help answer at once); the
imports training needs then happen with Ctrl-C held back, since an interrupt that lands inside
torch's or numpy's C-level imports is swallowed or half-raised by them (exit 0, or an
AttributeError): it is only noted there and acted on once the imports are done (exit 130).
"""
import signal
import sys


def _import_quietly():
    """-> lintorch.training.run.main, imported (with what it imports later) while SIGINT is only recorded."""
    pending = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        from .training.run import main
        from .output import monitor  # noqa: F401
        from .training import recipe, trainer  # noqa: F401  (imported by main later)
        import torch.utils.tensorboard  # noqa: F401
    finally:
        signal.signal(signal.SIGINT, old)
    if pending:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    return main


def main(argv=None):
    """The command line; -> exit status (0 ok, 1 diverged, 2 bad input, 130/143 interrupted)."""
    try:
        from .config import parse_args
        args = parse_args(argv)              # no torch yet: usage errors answer at once
        return _import_quietly()(args)
    except KeyboardInterrupt:                # Ctrl-C before the imports began
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
