"""The `lintorch` console script and `python -m lintorch`: `lintorch COMMAND [flags]`, one subcommand per
command module. Each subcommand is that module's own parser and main(argv), the same as
`python -m lintorch.COMMAND` (and `python train.py` for train). Nothing here imports torch."""
import importlib
import sys

COMMANDS = {
    "train": ("lintorch.train", "train a linear classifier (python train.py)"),
    "evaluate": ("lintorch.evaluate", "accuracy, per class and the confusion matrix of a trained run"),
    "predict": ("lintorch.predict", "classify image files with a trained run"),
    "extract": ("lintorch.extract", "write a data set's features to a feature folder"),
    "gradcheck": ("lintorch.gradcheck", "check lintorch's hand-written gradients three ways"),
    "doctor": ("lintorch.doctor", "verify lintorch on this machine's GPU (or CPU)"),
    "bench": ("lintorch.bench", "time lintorch against plain PyTorch"),
}


def usage():
    from . import __version__
    w = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{w}}  {text}" for name, (_, text) in COMMANDS.items())
    return (f"usage: lintorch COMMAND [flags]   (lintorch {__version__})\n\ncommands:\n{rows}\n\n"
            f"`lintorch COMMAND --help` lists a command's flags.")


def main(argv=None):
    """-> exit status: the command's own, or 2 for an unknown command (one line)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from . import __version__
        print(f"lintorch {__version__}")
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"lintorch: error: no command {name!r}; choose from {', '.join(COMMANDS)} (see lintorch --help)",
              file=sys.stderr)
        return 2
    from . import cli
    cli.PROG = f"lintorch {name}"           # usage errors and --help name the command as it was typed
    return importlib.import_module(COMMANDS[name][0]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
