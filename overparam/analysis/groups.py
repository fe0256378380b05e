"""The swept settings as the analysis's columns, and the groups of runs they make.

Owns SWEPT_COLUMNS: the settings a sweep sweeps, derived from the field declarations
(`overparam.config.SWEPT`), each under the name of its column in the per-run table
(`_COLUMN_OF`: widths -> width, depths -> depth, lr -> lr_config, the config's lr as
written), listed in COLUMN_ORDER (the order the tables, group labels and sorts use; a
swept field that it does not name comes after, in SWEPT's order, so that a new swept field
reaches the per-run table, the groups and the fits without an edit here). A group is one
combination of the swept settings other than the fitted variable (`varying`,
`group_label`); several sweeps analyzed together are told apart by the column SWEEP
(`varying_within`, `between_sweeps`, `sweep_labels`).
Reads tables; never computes a quantity, fits, plots or writes a file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from overparam import config, store

SWEEP = "sweep"  # the column naming the sweep when several are analyzed together

_COLUMN_OF = {"widths": "width", "depths": "depth", "lr": "lr_config"}  # config -> column
# The order in which the tables, labels and sorts list the swept settings (presentation
# only: which settings are swept is config.SWEPT's). lr_config is the config's lr as
# written (the step size of a run, column lr, is lr_config / width with
# lr_scaling='inverse_width'); batch_size is <NA> for full-batch GD.
COLUMN_ORDER = ("width", "depth", "n", "digits_task", "lr_config", "output_scale",
                "batch_size", "loss", "optimizer", "arch", "param")


def swept_columns(swept: Sequence[str] = config.SWEPT) -> tuple[str, ...]:
    """The columns of the swept config fields `swept`, those of COLUMN_ORDER first in its
    order, then the others in `swept`'s order."""
    columns = [_COLUMN_OF.get(field, field) for field in swept]
    return (*[c for c in COLUMN_ORDER if c in columns],
            *[c for c in columns if c not in COLUMN_ORDER])


SWEPT_COLUMNS = swept_columns()  # the swept settings, as the per-run table's columns
SHORT_NAMES = {"lr_config": "lr", "batch_size": "B", "output_scale": "α",  # in labels
               "digits_task": "task"}


def varying(frame: pd.DataFrame, cols: Sequence[str]) -> list[str]:
    """The columns of `cols` that take two or more values in `frame`."""
    return [c for c in cols if frame[c].nunique(dropna=False) > 1]


def group_label(keys: dict, shown: Sequence[str]) -> str:
    """'depth=2, lr=0.1, layer=1' from the group's values of the `shown` settings
    (a missing batch size is GD's full batch)."""
    parts = ["full batch" if k == "batch_size" and pd.isna(keys[k])
             else f"{SHORT_NAMES.get(k, k)}={keys[k]}" for k in shown if k in keys]
    return ", ".join(parts) or "all"


def varying_within(frame: pd.DataFrame, cols: Sequence[str]) -> list[str]:
    """The columns of `cols` that take two or more values within one sweep of `frame` (all
    of it without a SWEEP column): what panels and groups are made of."""
    if SWEEP not in frame:
        return varying(frame, cols)
    counts = frame.groupby(SWEEP, sort=False)[list(cols)].nunique(dropna=False)
    return [c for c in cols if len(counts) and counts[c].max() > 1]


def between_sweeps(frame: pd.DataFrame, cols: Sequence[str]) -> list[str]:
    """The columns of `cols` constant within each sweep of `frame` that differ between
    sweeps: what tells the sweeps apart (none without a SWEEP column)."""
    if SWEEP not in frame:
        return []
    within = set(varying_within(frame, cols))
    return [c for c in varying(frame, cols) if c not in within]


def sweep_labels(results: Sequence[store.Results]) -> list[str]:
    """One label per sweep: its manifest's config name; where two sweeps share a name, the
    directory names; where those collide too, the paths as given."""
    names = [str(r.manifest.get("config", {}).get("name") or Path(r.path).name)
             for r in results]
    if len(set(names)) < len(names):
        names = [Path(r.path).name or str(r.path) for r in results]
    if len(set(names)) < len(names):
        names = [str(r.path) for r in results]
    return names

