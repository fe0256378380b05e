"""The registry of the variables that quantities are fitted against: X_VARIABLES (width, n,
depth, output scale), each with its symbol in formulas, its axis label and its name in
figure titles; X_VARIABLE_BY_NAME finds one by name (its column of the per-run table).

Owns nothing else; the fits, the figures and the report read it and never define an x
variable themselves.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class XVariable:
    """A swept variable that quantities are fitted against: its column, its symbol in
    formulas ('m' in m^-1/2), its axis label and its name in figure titles."""

    name: str
    symbol: str
    axis: str
    title: str


X_VARIABLES = (
    XVariable("width", "m", "width m", "width m"),
    XVariable("n", "n", "training set size n", "training set size n"),
    XVariable("depth", "L", "depth L (hidden layers)", "depth L"),
    XVariable("output_scale", "α", "output scale α", "output scale α"),
)
X_VARIABLE_BY_NAME = {v.name: v for v in X_VARIABLES}
