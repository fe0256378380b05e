"""The per-run table: one row per run x quantity (x layer), with the run's settings.

Owns `per_run_quantities` (the quantities of QUANTITIES computed from a results
directory's tables), its columns (RUN_COLUMNS: the run's identity, status, swept settings
SWEPT_COLUMNS and the other settings the fits and figures read), its row order, and what
each row is in a log-log figure (`value_kind`: fitted, censored, off the axis, diverged).
Reads the results' tables; never fits, plots or writes a file.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from overparam import store
from overparam.analysis.groups import SWEPT_COLUMNS
from overparam.analysis.quantities import QUANTITIES, Quantity, QuantityOptions, Tables

RUN_COLUMNS = ("run_id", "seed", "status", *SWEPT_COLUMNS,
               *[c for c in ("lr", "lr_scaling", "reduction", "momentum", "center_output",
                             "lambda0", "arora_bound") if c not in SWEPT_COLUMNS])


def run_settings(runs: pd.DataFrame) -> pd.DataFrame:
    """runs.parquet -> RUN_COLUMNS: run_id, seed, status, the swept settings
    (SWEPT_COLUMNS) and lr, lr_scaling, reduction, momentum, center_output, lambda0,
    arora_bound. lr_config is the config's lr as written ('theory' or a number);
    batch_size is <NA> for full-batch GD (where it equals n)."""
    out = runs.assign(lr_config=[_lr_text(v) for v in runs.lr_spec],
                      batch_size=runs.batch_size.astype("Int64").mask(runs.optimizer == "gd"))
    return out[list(RUN_COLUMNS)].reset_index(drop=True)


def _lr_text(value) -> str:
    """'0.1', '10000', 'theory': the config's lr, numbers written the same way however stored."""
    try:
        return f"{float(value):g}"
    except (TypeError, ValueError):
        return str(value)


def _tables(results: store.Results) -> Tables:
    steps = results.steps[results.steps.run_id.isin(results.runs.run_id)]
    first = steps.step == steps.groupby("run_id").step.transform("min")
    loss0 = steps.loss.where(first).groupby(steps.run_id).transform("max")
    return Tables(results.runs, steps.assign(first=first, loss0=loss0), results.layers)


def _has_columns(results: store.Results, quantity: Quantity) -> bool:
    return all(column in getattr(results, table)
               for table, column in (c.split(".") for c in quantity.columns))


def _recorded(results: store.Results, quantity: Quantity) -> bool:
    """Whether every column `quantity` reads holds a finite value for a non-diverged run."""
    ok = set(results.runs.run_id[results.runs.status == "ok"])
    for table, column in (c.split(".") for c in quantity.columns):
        frame = getattr(results, table)
        values = pd.to_numeric(frame[column][frame.run_id.isin(ok)], errors="coerce")
        if not np.isfinite(values.astype(float)).any():
            return False
    return True


def per_run_quantities(results: store.Results | str | os.PathLike, *,
                       loss_threshold: float = 1e-3, tail_fraction: float = 0.5,
                       rate_floor: float = 1e-10, eos_fraction: float = 0.95) -> pd.DataFrame:
    """One row per run x quantity (x layer): the run's settings (`run_settings`), quantity,
    layer (<NA> for per-run quantities) and value. Definitions: QUANTITIES; the options are
    QuantityOptions'.

    Diverged runs are included (status 'diverged'; their values use the steps before
    divergence) so that they can be counted; `fit_table` leaves them out. A quantity whose
    columns are absent, or hold no finite value for any non-diverged run, is skipped; but a
    censored quantity (steps to a threshold) whose columns were recorded is kept even where
    no run reached its threshold, so that every run's "never" is reported.
    """
    r = results if isinstance(results, store.Results) else store.load(results)
    options = QuantityOptions(loss_threshold, tail_fraction, rate_floor, eos_fraction)
    tables = _tables(r)
    computed = [q for q in QUANTITIES if _has_columns(r, q)]
    run_index = pd.Index(sorted(r.runs.run_id), name="run_id")
    per_layer = pd.DataFrame({q.name: q.compute(tables, options)
                              for q in computed if q.per_layer}).reset_index()
    per_run = pd.DataFrame({q.name: q.compute(tables, options)
                            for q in computed if not q.per_layer}, index=run_index).reset_index()
    long = pd.concat([
        per_layer.melt(["run_id", "layer"], var_name="quantity", value_name="value"),
        per_run.melt(["run_id"], var_name="quantity", value_name="value").assign(layer=pd.NA),
    ], ignore_index=True)
    long["layer"] = long["layer"].astype("Int64")
    long["value"] = long["value"].astype(float)
    out = run_settings(r.runs).merge(long, on="run_id", how="inner")
    ok = out.status == "ok"
    kept = set(out.quantity[ok & np.isfinite(out.value)])
    kept |= {q.name for q in computed if q.censored and _recorded(r, q)}
    out = out[out.quantity.isin(kept)]
    order = {q.name: i for i, q in enumerate(QUANTITIES)}
    out = out.assign(_q=out.quantity.map(order)).sort_values(
        ["_q", "layer", *[c for c in SWEPT_COLUMNS if c != "lr_config"], "lr_config", "seed"],
        na_position="first", kind="stable")
    return out.drop(columns="_q").reset_index(drop=True)


def value_kind(per_run: pd.DataFrame) -> pd.Series:
    """What each row of `per_run_quantities` is in a log-log figure, aligned with it:

      'fitted'    a finite value > 0: a point of the fit
      'censored'  NaN of a quantity with `censored` (a time never reached within the
                  recorded steps): above every observed value, drawn as censored
      'off_axis'  a value <= 0, or NaN where that means undefined: below the log axis
      'diverged'  the run diverged (left out of fits, counted)

    Fits leave out all but 'fitted' (counted in n_excluded, n_diverged)."""
    value = per_run.value.astype(float)
    censoring = per_run.quantity.map({q.name: bool(q.censored) for q in QUANTITIES})
    kind = np.where(np.isfinite(value) & (value > 0), "fitted",
                    np.where(value.isna() & censoring.fillna(False).astype(bool), "censored",
                             "off_axis"))
    kind = np.where(per_run.status == "ok", kind, "diverged")
    return pd.Series(kind, index=per_run.index, name="kind")
