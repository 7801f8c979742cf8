"""check_function's result: one Row per check, the Report that holds them, and the text table
`python -m lintorch.gradcheck` prints (a failure's note under its row, then a summary line).
"""
from dataclasses import dataclass, field
from typing import Optional

__all__ = ["Report", "Row", "format_table"]


@dataclass
class Row:
    """One check's result: errors of the analytic values a against the reference b."""
    function: str
    method: str                   # "autograd", "numeric", "gradcheck", or a property (verify/properties.py)
    where: str                    # "float64/cpu"
    max_abs: float                # nan for gradcheck, which reports pass or fail only
    max_rel: float
    passed: bool
    kinks: Optional[int] = None   # coordinates left out as kinks (None: not looked for; autograd: none)
    note: Optional[str] = None    # on a failure: the worst coordinate, or the error raised
    coords: Optional[int] = None  # numeric rows: the coordinates differenced, all inputs together


@dataclass(repr=False)
class Report:
    """check_function's result: .ok, one Row per check in .rows, str() and repr() the table (so
    `assert report.ok, report` shows it)."""
    rows: list = field(default_factory=list)

    @property
    def ok(self):
        return bool(self.rows) and all(r.passed for r in self.rows)

    def __str__(self):
        return format_table(self.rows)

    __repr__ = __str__


def _num(v):
    return "-" if v != v else f"{v:.1e}"        # nan: gradcheck reports no errors


def format_table(rows):
    """The rows as a text table (a failure's note on the line below it) with a summary line."""
    fmt = "{:<46} {:<9} {:<13} {:>9} {:>9}  {}"
    lines = [fmt.format("function", "method", "dtype/device", "max abs", "max rel", "result")]
    for r in rows:
        result = ("skip" if r.note and r.note.startswith("not run") else "pass" if r.passed else "FAIL") \
            + ("" if r.kinks is None else f"  kinks={r.kinks}")
        lines.append(fmt.format(r.function, r.method, r.where, _num(r.max_abs), _num(r.max_rel), result))
        if r.note and (not r.passed or r.note.startswith("not run")):
            lines.append(f"    {r.note}")
    failed = sum(not r.passed for r in rows)
    kinks = sum(r.kinks or 0 for r in rows)
    lines.append(f"{len(rows)} checks: {len(rows) - failed} passed, {failed} failed; "
                 f"{kinks} kink coordinates left out")
    return "\n".join(lines)
