"""Every setting declared once: a field added to `config.Sweep`'s declarations reaches the
compiled program (`train.Static`), the grid and the runs table (`config.expand`,
`config.Run`, `schema.RUNS`), the settings join (`store.SETTINGS`, `Results.with_settings`)
and the analysis' grouping, with no other change.

The tests declare one more swept field, `gammas` (one run's value: `gamma`, read by the
chunk program), in a subclass of Sweep, and check that each consumer's list, built from
those declarations, holds it; and that each consumer's list today is the one built from
config's declarations.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from overparam import config, plan, schema, store, train
from overparam.config import values
from overparam.config.fields import _field

GAMMA = _field((1.0,), values.number(0.0, open_low=True), "a test's swept setting",
               swept=True, identity=config.LATER, program=config.CHUNK, one="gamma")
Extended = dataclasses.make_dataclass("Sweep", [("gammas", tuple, GAMMA)],
                                      bases=(config.Sweep,), frozen=True)
FIELDS = dataclasses.fields(Extended)
SMALL = dict(widths=(4, 8), n=(6,), num_seeds=2, optimizer=("gd", "sgd"), batch_size=(2, 3),
             param=("du", "ntk"))


def _extended(**gammas):
    return Extended(**{f.name: getattr(config.validate(SMALL), f.name)
                       for f in config.FIELDS}, **gammas)


def _names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def test_a_declared_program_field_is_a_field_of_static():
    static_class = train.static_class(FIELDS)
    field = {f.name: f for f in dataclasses.fields(static_class)}["gamma"]
    assert field.default == 1.0 and field.metadata["program"] == config.CHUNK
    static = static_class(width=4, depth=1, n=6, d=3, batch_size=6, gamma=2.0)
    hash(static)  # a jit static argument
    assert dataclasses.replace(static, gamma=3.0) != static
    assert train.init_static(static).gamma == 1.0  # only the chunk program reads it


def test_static_is_the_class_of_configs_declarations():
    """train.Static: a field per declared field a program reads (by its run name, of the
    default sweep's default), and its own; plan.static_for fills each from the run, else
    the sweep."""
    assert _names(train.Static) == _names(train.static_class(config.FIELDS))
    program = {config.run_name(f): f for f in config.FIELDS if f.metadata["program"]}
    own = [name for name, *_ in train._OWN_FIELDS]
    assert set(_names(train.Static)) == set(program) | set(own)
    default_sweep = config.validate({})
    first = config.expand(default_sweep)[0]
    defaults = {f.name: f.default for f in dataclasses.fields(train.Static)}
    for name, f in program.items():
        want = getattr(first, name) if f.metadata["swept"] else getattr(default_sweep, name)
        assert defaults[name] == want, name
    sweep = config.validate(SMALL)
    for run in config.expand(sweep)[:3]:
        static = plan.static_for(sweep, run, 5)
        for name, f in program.items():
            want = getattr(run, name) if f.metadata["swept"] else getattr(sweep, name)
            assert getattr(static, name) == want, name


def test_a_declared_swept_field_is_an_axis_of_the_grid_and_a_column_of_runs():
    plain = config.expand(config.validate(SMALL))
    sweep = _extended(gammas=(1.0, 2.0))
    runs = config.expand(sweep)
    assert len(runs) == config.num_networks(sweep) == 2 * len(plain)
    assert config.grid_sizes(sweep)["gammas"] == 2
    assert {r.gamma for r in runs} == {1.0, 2.0}
    assert len({r.run_id for r in runs}) == len(runs)
    # a LATER field enters the identity only off its default: the runs at the default are
    # the plain sweep's, run_ids included, in the same order
    at_default = [{k: v for k, v in dataclasses.asdict(r).items() if k != "gamma"}
                  for r in runs if r.gamma == 1.0]
    assert at_default == [dataclasses.asdict(r) for r in plain]
    assert "gamma" in config.grid_point(Extended)
    columns = schema.run_columns(config.run_class(Extended), FIELDS)
    assert [c[0] for c in columns] == _names(config.run_class(Extended))
    assert columns[-1][0] == "gamma" and columns[-1][2] == "a test's swept setting"


def test_runs_schema_and_settings_are_built_from_configs_declarations():
    assert schema.RUNS.names[:len(_names(config.Run))] == _names(config.Run)
    assert config.run_class(config.Sweep) is config.Run
    assert config.GRID_POINT == config.grid_point(config.Sweep)
    assert {config.RUN_NAMES[k] for k in config.SWEPT} == set(config.GRID_POINT)
    assert store.SETTINGS == store.settings(config.GRID_POINT)
    assert set(config.GRID_POINT) <= set(store.SETTINGS)


def test_the_settings_join_carries_a_declared_swept_field():
    """Results.with_settings joins every setting of store.settings, the new one included."""
    sweep = _extended(gammas=(1.0, 2.0))
    runs = pd.DataFrame([dataclasses.asdict(r) for r in config.expand(sweep)])
    for k, v in dict(reduction="sum", momentum=0.0, lr_scaling="constant", train_output=False,
                     center_output=False, status="ok").items():
        runs[k] = v
    steps = pd.DataFrame({"run_id": np.repeat(runs.run_id, 2), "step": [0, 1] * len(runs),
                          "loss": 1.0})
    results = store.Results(path=None, runs=runs, steps=steps, layers=steps, manifest={})
    joined = results.with_settings("steps", settings=store.settings(config.grid_point(Extended)))
    assert "gamma" in joined.columns
    assert sorted(set(joined.gamma)) == [1.0, 2.0]


def test_the_analysis_groups_by_every_swept_setting():
    """The fits' grouping (analysis' list of settings) is config's swept fields (lr as the
    config's value: lr_config)."""
    from overparam.analysis import groups

    settings = {"lr_config" if s == "lr" else s for s in config.GRID_POINT}
    assert set(groups.SWEPT_COLUMNS) == settings
