"""The fit table as text: the short table the command line prints (`format_table`), the
fit table of report.md (`markdown_table`), and any small DataFrame as a Markdown table
(`markdown_frame`).

Owns the tables' headers, cell formats and alignment; computes nothing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from overparam.analysis.groups import SWEEP


def _exponent_text(row) -> str:
    if not np.isfinite(row.exponent):
        return "-"
    if not np.isfinite(row.ci_low):
        return f"{row.exponent:+.3f}"
    return f"{row.exponent:+.3f} [{row.ci_low:+.3f}, {row.ci_high:+.3f}]"


def _table_rows(fits: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    level = int(round(100 * fits.level.iloc[0])) if len(fits) else 95
    sweep = SWEEP in fits
    header = ["quantity", "vs", "group", f"exponent [{level}% CI]", "predicted", "runs",
              "excluded", "diverged"]
    rows = [[r.quantity, r.x, r.group, _exponent_text(r), r.predicted or "-", str(r.n_runs),
             str(r.n_excluded), str(r.n_diverged)] for r in fits.itertuples()]
    if sweep:
        header = [SWEEP, *header]
        rows = [[str(s), *r] for s, r in zip(fits[SWEEP], rows)]
    return header, rows


_RIGHT = ("exponent", "runs", "excluded", "diverged")  # right-aligned columns


def format_table(fits: pd.DataFrame, *, max_rows: int | None = None) -> str:
    """The short printed table: [sweep,] quantity, vs, group, exponent [CI], predicted,
    meets (whether the CI meets the prediction: yes / NO), runs, excluded (values <= 0
    or non-finite), diverged; at most max_rows rows (None: all)."""
    if fits.empty:
        return "no fits: no swept width, n or depth with two or more values and finite results"
    more = 0 if max_rows is None else max(len(fits) - max_rows, 0)
    header, rows = _with_verdict(fits.iloc[: len(fits) - more], "meets", {True: "yes",
                                                                         False: "NO"})
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(header)]
    right = {i for i, c in enumerate(header) if c.startswith(_RIGHT)}

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    text = "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])
    return text + (f"\n... and {more} more rows (all in fits.csv and report.md)" if more else "")


def _with_verdict(fits: pd.DataFrame, name: str, words: dict) -> tuple[list, list]:
    """`_table_rows` with a column `name` after `predicted`: whether each fit's interval
    meets the theory (fits.consistent), in `words`; '-' where there is no prediction."""
    header, rows = _table_rows(fits)
    at = header.index("predicted") + 1
    rows = [r[:at] + [words.get(c, "-") if c is not pd.NA else "-"] + r[at:]
            for r, c in zip(rows, fits.consistent)]
    return header[:at] + [name] + header[at:], rows


def markdown_table(fits: pd.DataFrame) -> str:
    """The fit table as GitHub Markdown, with a column saying whether the CI meets theory."""
    header, rows = _with_verdict(fits, "meets theory", {True: "yes", False: "**no**"})
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(out + ["| " + " | ".join(r) + " |" for r in rows])


def markdown_frame(frame: pd.DataFrame) -> str:
    """A small DataFrame as a GitHub Markdown table (floats to 4 significant digits)."""
    def cell(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |"
              for row in frame.itertuples(index=False)]
    return "\n".join(lines)
