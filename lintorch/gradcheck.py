"""python -m lintorch.gradcheck: lintorch's hand-written backward passes checked three ways
(against torch autograd on independent references, finite differences and torch's gradcheck),
as a table: lintorch.check_function run on each of lintorch.verify.gradients' cases. This module parses
its arguments before torch is imported, so --help and usage errors answer at once. Its names
(run_checks, hinge_kinks, ...) are lintorch.verify.gradients', imported on first use.

    python -m lintorch.gradcheck [--device cpu|cuda] [--seed N] [--properties]

--properties adds, as rows of the same table, each Function's second derivatives (gradgradcheck),
forward mode (jvp against reverse mode), vmap, torch.compile(fullgraph=True) against eager (the
softmax total; backend aot_eager) and, where CUDA is present, CUDA against the CPU
(lintorch.verify.properties).
"""
import sys


def __getattr__(name):           # lintorch.gradcheck.run_checks & co.: lintorch.verify.gradients', lazily
    from .verify import gradients
    return getattr(gradients, name)


def get_args_parser():
    from .cli import ArgumentParser, number
    p = ArgumentParser(prog="python -m lintorch.gradcheck",
                       description="Check lintorch's hand-written gradients three ways and print a table.")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="device to run the checks on")
    p.add_argument("--seed", type=number(int, 0, high=2 ** 63 - 1), default=0, help="seed for the random inputs")
    p.add_argument("--properties", action="store_true",
                   help="also check second order, forward mode, vmap, torch.compile and devices")
    return p


def _main(args):
    import torch
    from .verify.gradients import Report, run_checks, run_properties
    from .errors import UserError
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for CUDA, but torch.cuda.is_available() is False here")
    rows = run_checks(args.device, args.seed)
    if args.properties:
        rows += run_properties(args.device, args.seed)
    report = Report(rows)
    print(report)
    return 0 if report.ok else 1


def main(argv=None):
    """The command line; -> exit status (0 all checks pass, 1 some fail, 2 bad input: one line)."""
    from .cli import exit_status
    return exit_status(_main, get_args_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
