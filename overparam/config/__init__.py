"""Sweep schema: validate a config and expand it into the grid of runs.

A sweep file (sweeps/*.py) returns an ml_collections ConfigDict; `validate`
turns it into a frozen `Sweep`, checking every field before anything runs, and
`expand` turns a `Sweep` into the list of `Run`s it trains. Each run carries
its identity: `run_id` and the integer tags from which all of its random draws
derive, so its result does not depend on which runs it is grouped with.

Every field is declared once, as a field of `Sweep`: its default, the check of
its value, a one-line doc, whether it is swept, whether it is part of a run's
identity, where it is used and which compiled programs read it. DEFAULTS,
SWEPT, NOT_IDENTITY, `validate`, the grid that `expand` iterates, `Run`'s
grid point, `train.Static` and the settings lists of the results derive from
those declarations. A swept field holds a tuple, and the product of all swept
fields is trained for every seed (seed, seed+1, ..., seed+num_seeds-1).

The step size of a run is lr, or lr / width with lr_scaling='inverse_width'
(the width-stable choice for the zou and standard parameterizations,
THEORY.md section 3); runs.parquet records both (lr_base and lr). lr may
include 'theory' (squared loss only): the engine then uses, for each training
set, half the gradient-descent stability limit of the infinite-width kernel,
1 / lambda_max(s H^inf) (times n for the mean reduction); see
`theory.gram_inf`.

This package re-exports what callers use; its modules, in import order:
values (ConfigError, the vocabularies, the checks of one value), digits (the
digits' facts), fields (`Sweep` and the lists derived from its declarations),
consistency (`validate` and the cross-field checks), runs (`Run`, the grid,
`expand`, the identities). `python -m overparam.config` prints docs/sweeps.md's
table of fields.
"""

from overparam.config.consistency import SEED_LIMIT, validate
from overparam.config.digits import (
    DIGIT_COUNTS,
    DIGITS_D,
    SYNTHETIC_D,
    TEST_CAP,
    digit_pair,
    held_out_points,
    sign_labels,
    task_pool,
    tasks,
)
from overparam.config.fields import (
    CHUNK,
    DEFAULTS,
    FIELDS,
    INIT,
    LATER,
    LATER_IDENTITY,
    NONZERO,
    NOT_IDENTITY,
    RUN_NAMES,
    SWEPT,
    Sweep,
    UsedWhen,
    default_config,
    default_value,
    markdown,
    program_fields,
    run_name,
)
from overparam.config.runs import (
    GRID_POINT,
    ORDER,
    Run,
    batch_sizes,
    data_identity,
    dataset_id,
    expand,
    grid,
    grid_point,
    grid_sizes,
    num_networks,
    run_class,
    stable_hash,
)
from overparam.config.values import (
    ARCHS,
    CLASSIFICATION_LOSSES,
    CONV_ARCHS,
    CONV_PARAMS,
    DATASETS,
    DTYPES,
    LABELS,
    LOSSES,
    LR_SCALINGS,
    OPTIMIZERS,
    PARAMS,
    PRECISIONS,
    REDUCTIONS,
    SIGN_LABELS,
    ConfigError,
)

__all__ = [
    "ARCHS", "CHUNK", "CLASSIFICATION_LOSSES", "CONV_ARCHS", "CONV_PARAMS", "DATASETS",
    "DEFAULTS", "DIGITS_D", "DIGIT_COUNTS", "DTYPES", "FIELDS", "GRID_POINT", "INIT", "LABELS",
    "LATER", "LATER_IDENTITY", "LOSSES", "LR_SCALINGS", "NONZERO", "NOT_IDENTITY",
    "OPTIMIZERS", "ORDER", "PARAMS", "PRECISIONS", "REDUCTIONS", "RUN_NAMES", "SEED_LIMIT",
    "SIGN_LABELS", "SWEPT", "SYNTHETIC_D", "TEST_CAP", "ConfigError", "Run", "Sweep",
    "UsedWhen", "batch_sizes", "data_identity", "dataset_id", "default_config",
    "default_value", "digit_pair", "expand", "grid", "grid_point", "grid_sizes",
    "held_out_points", "markdown", "num_networks", "program_fields", "run_class", "run_name",
    "sign_labels", "stable_hash", "task_pool", "tasks", "validate",
]
