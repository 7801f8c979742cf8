"""The speed benchmark, `python -m lintorch.bench` (command.py); also lbfgs_compare.py and exact_compare.py,
the solvers against scikit-learn (`python -m lintorch.bench.lbfgs_compare`, `... .exact_compare`).
README.md beside this file says what each section measures."""
from .command import benchmark, get_args_parser, main, parse_args  # noqa: F401  (lintorch.bench.main & co.)
