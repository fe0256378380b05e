"""The analysis's figure files: figures/NAME.png (PNG_DPI) and figures/NAME.pdf (vector)
side by side under an analysis directory (`write_figures`), which figures a sweep gets,
and the removal of an earlier analysis's figures that no longer apply.

Draws nothing itself: the figures are `scaling.plot_fit`, `curves.plot_curves` and
`generalization.plot_bound`, styled by `style`; the absolute bounds drawn on the radius
figure are `bounds.radius_bounds`. Writes nothing but figures/*.png and figures/*.pdf.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from overparam import store
from overparam.analysis import lazy_rich
from overparam.analysis.bounds import radius_bounds
from overparam.analysis.curves import CURVES, as_sweeps, plot_curves
from overparam.analysis.fits import BOUND_QUANTITY
from overparam.analysis.generalization import plot_bound
from overparam.analysis.groups import SWEEP
from overparam.analysis.quantities import QuantityOptions
from overparam.analysis.scaling import plot_fit
from overparam.analysis.style import PNG_DPI, paper_rc


def _save(fig, path: Path) -> None:
    """`path` (.png, PNG_DPI) and the same name .pdf beside it (no creation date: the same
    figure gives the same bytes). fontTools, which embeds the fonts, warns about the dates
    inside DejaVu's font files, harmlessly; its logger is quieted for the call only."""
    fonttools = logging.getLogger("fontTools")
    level = fonttools.level
    fonttools.setLevel(logging.ERROR)
    try:
        with paper_rc():
            store.atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=PNG_DPI))
            store.atomic_write(path.with_suffix(".pdf"), lambda tmp: fig.savefig(
                tmp, format="pdf", metadata={"CreationDate": None}))
    finally:
        fonttools.setLevel(level)


def write_figures(out: Path, results: store.Results | Mapping[str, store.Results],
                  per_run: pd.DataFrame, fits: pd.DataFrame, *, options: QuantityOptions,
                  n_boot: int = 1000, seed: int = 0,
                  bound_fits: pd.DataFrame | None = None) -> dict[str, list[str]]:
    """figures/NAME.png and figures/NAME.pdf under `out`: one per fitted quantity and swept
    variable, the training curves, and the test error against Arora et al.'s measure
    (`plot_bound`, where `bound_fits` has a row; one sweep). `results`: one sweep, or
    {label: Results} for several (per_run and fits then have a SWEEP column; the sweeps
    share each figure). Removes figures of an earlier analysis that no longer apply.
    Returns {section title: [PNG paths relative to out]}."""
    sweeps = as_sweeps(results)
    fig_dir = out / "figures"
    written: dict[str, list[str]] = {"Scaling": [], "Training curves": [],
                                     "Generalization": []}
    for quantity, x in dict.fromkeys(zip(fits.quantity, fits.x)):
        if not np.isfinite(fits.exponent[(fits.quantity == quantity) & (fits.x == x)]).any():
            continue
        bounds = _radius_bounds(sweeps) if (quantity, x) == ("max_radius_rowmax",
                                                             "width") else None
        name = f"fit_{quantity}_vs_{x}.png"
        fig = plot_fit(per_run, fits, quantity, x, options=options, bounds=bounds,
                       n_boot=n_boot, seed=seed)
        _save(fig, fig_dir / name)
        written["Scaling"].append(f"figures/{name}")
    for column, (table, _, _) in CURVES.items():
        if not any(_has_curve(r, table, column) for r in sweeps.values()):
            continue
        name = f"curves_{column}.png"
        _save(plot_curves(results, column), fig_dir / name)
        written["Training curves"].append(f"figures/{name}")
    for section, figures in lazy_rich.figures(sweeps).items():
        for name, fig in figures.items():
            _save(fig, fig_dir / f"{name}.png")
            written.setdefault(section, []).append(f"figures/{name}.png")
    if bound_fits is not None and len(bound_fits) and SWEEP not in per_run:
        name = f"fit_{BOUND_QUANTITY}_vs_arora_bound.png"
        _save(plot_bound(per_run, bound_fits), fig_dir / name)
        written["Generalization"].append(f"figures/{name}")
    keep = {Path(n).name for names in written.values() for n in names}
    keep |= {Path(n).with_suffix(".pdf").name for n in keep}
    for stale in [*fig_dir.glob("*.png"), *fig_dir.glob("*.pdf")]:
        if stale.name not in keep:
            stale.unlink()
    return written


def _has_curve(results: store.Results, table: str, column: str) -> bool:
    ok_ids = results.runs.run_id[results.runs.status == "ok"]
    frame = getattr(results, table)
    if column not in frame:  # an optional column (schema.OPTIONAL) the sweep did not record
        return False
    values = frame[column][frame.run_id.isin(ok_ids)]
    return bool((np.isfinite(values) & (values > 0)).any())


def _radius_bounds(sweeps: dict) -> pd.DataFrame | None:
    frames = [radius_bounds(r).assign(**({SWEEP: name} if name is not None else {}))
              for name, r in sweeps.items()]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else None

