"""Tests for overparam.config: validation of sweep configs and their expansion into runs.

Covers: the default sweep file and DEFAULTS validate; every kind of bad field
raises a one-line ConfigError naming the field; swept fields accept scalars,
tuples and '(a,b)' strings; property-based checks that `expand` yields the
right number of unique, deterministic runs; and the identity properties that
make runs paired (shared init and data) and results resumable (run_id).
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overparam import config as config_lib
from overparam.config import DEFAULTS, ConfigError, expand, validate

ROOT = Path(__file__).resolve().parents[1]

# Small, fast sweep used as the base for identity tests.
SMALL = dict(widths=(8,), depths=(1,), num_seeds=2, n=(8,), d=4, steps=4, chunk_steps=4)


def _load_sweep_file(path: Path):
    spec = importlib.util.spec_from_file_location(f"sweepfile_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _by_key(runs, *keys):
    return {tuple(getattr(r, k) for k in keys): r for r in runs}


# ------------------------------------------------------------------ valid configs


def test_default_sweep_file_validates():
    cfg = _load_sweep_file(ROOT / "sweeps" / "default.py").get_config()
    sweep = validate(cfg)
    assert sweep.name == cfg.name
    assert sweep.widths == tuple(cfg.widths)
    assert sweep.loss == ("squared",)
    assert len(expand(sweep)) == cfg.num_seeds * len(cfg.widths)


def test_defaults_validate():
    assert validate(DEFAULTS) == validate({})
    sweep = validate(DEFAULTS)
    for field in config_lib.SWEPT:
        assert isinstance(getattr(sweep, field), tuple), field


@pytest.mark.parametrize("field, value, expected", [
    ("n", 64, (64,)),
    ("n", (32, 64), (32, 64)),
    ("widths", 16, (16,)),
    ("widths", [8, 16], (8, 16)),
    ("lr", 0.5, (0.5,)),
    ("loss", "hinge", ("hinge",)),
    ("loss", "(hinge,logistic)", ("hinge", "logistic")),
    ("loss", "('hinge', 'logistic')", ("hinge", "logistic")),
    ("optimizer", '("gd","sgd")', ("gd", "sgd")),
])
def test_swept_fields_accept_scalar_or_tuple(field, value, expected):
    overrides = {field: value}
    if field == "loss":
        overrides["labels"] = "random_sign"
    if field == "optimizer":
        overrides.update(batch_size=(8,))
    sweep = validate(overrides)
    assert getattr(sweep, field) == expected


# ------------------------------------------------------------------ bad configs

BAD = [
    # (overrides, field)
    (dict(bogus=1), "bogus"),
    (dict(widths=()), "widths"),
    (dict(widths=(0,)), "widths"),
    (dict(widths=(64.5,)), "widths"),
    (dict(widths=(True,)), "widths"),
    (dict(num_seeds=0), "num_seeds"),
    (dict(n=(1,)), "n"),
    (dict(d=1), "d"),
    (dict(loss=("bogus",)), "loss"),
    (dict(optimizer=("adam",)), "optimizer"),
    (dict(param=("x",)), "param"),
    (dict(lr=(0.0,)), "lr"),
    (dict(lr=(-1.0,)), "lr"),
    (dict(lr=(float("nan"),)), "lr"),
    (dict(batch_size=(100,), optimizer=("sgd",), n=(64,)), "batch_size"),
    (dict(widths=(63,), param=("zou",)), "widths"),
    (dict(loss=("hinge",), labels="gaussian"), "labels"),
    (dict(steps=10, record_every=3), "record_every"),
    (dict(precision="fast"), "precision"),
    (dict(dtype="float16"), "dtype"),
    (dict(phi=0.1, labels="gaussian"), "phi"),
    (dict(name="a/b"), "name"),
    (dict(train_output="yes"), "train_output"),
    (dict(momentum=1.5), "momentum"),
    (dict(lr=10**400), "lr"),  # beyond any float: refused, not an OverflowError
    (dict(output_scale=(-(10**400),)), "output_scale"),
]


@pytest.mark.parametrize("overrides, field", BAD, ids=[f"{f}-{i}" for i, (_, f) in
                                                       enumerate(BAD)])
def test_bad_config_raises_one_line_naming_field(overrides, field):
    with pytest.raises(ConfigError) as info:
        validate(overrides)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"config.{field}:"), message
    assert info.value.field == field
    assert len(message) > len(f"config.{field}: ")


# Each field that not every sweep uses: a value off its default, settings that use it and
# settings that do not (a field given a used_when must be listed here).
UNUSED = {
    "digits_task": ("3v5", dict(dataset="digits", d=64), dict(dataset="sphere")),
    "phi": (0.2, dict(labels="random_sign"), dict(labels="gaussian")),
    "mu": (0.3, dict(dataset="zou"), dict(dataset="sphere")),
    "teacher_width": (8, dict(labels="teacher_regression"), dict(labels="gaussian")),
    "batch_size": ((4,), dict(optimizer=("gd", "sgd")), dict(optimizer=("gd",))),
    "regression_tol": (0.1, dict(labels="teacher_regression"), dict(labels="random_sign")),
    "sharpness_iters": (10, dict(sharpness_every=1), dict(sharpness_every=0)),
    "track_alignment": (True, dict(gram_every=5), dict(gram_every=0)),
    "coord_steps": (5, dict(track_features=True), dict(track_features=False)),
    "infinite_width": (True, dict(param=("ntk", "mup")), dict(param=("mup",))),
}


def test_every_field_with_a_condition_of_use_is_covered():
    assert set(UNUSED) == {f.name for f in config_lib.FIELDS if f.metadata["used_when"]}


@pytest.mark.parametrize("field", list(UNUSED))
def test_a_field_the_sweep_does_not_use_is_refused_off_its_default(field):
    value, used, unused = UNUSED[field]
    assert getattr(validate({**SMALL, **used, field: value}), field) == _swept(field, value)
    validate({**SMALL, **unused, field: DEFAULTS[field]})  # at its default: accepted anywhere
    with pytest.raises(ConfigError) as info:
        validate({**SMALL, **unused, field: value})
    message = str(info.value)
    assert info.value.field == field and "\n" not in message, message
    assert message.startswith(f"config.{field}: is used only with "), message
    assert f"{next(iter(unused))}=" in message  # the setting that leaves it unused


def _swept(field, value):
    return tuple(value) if field in config_lib.SWEPT and isinstance(value, tuple) else (
        (value,) if field in config_lib.SWEPT else value)


def test_phi_is_refused_on_digits_whatever_the_labels():
    with pytest.raises(ConfigError, match="^config.phi: is used only with"):
        validate(dict(dataset="digits", labels="random_sign", phi=0.2))


def test_config_error_is_value_error():
    assert issubclass(ConfigError, ValueError)


def test_duplicate_swept_values_rejected_or_deduplicated():
    try:
        sweep = validate(dict(SMALL, widths=(8, 8)))
    except ConfigError as e:
        assert e.field == "widths"
        return
    ids = [r.run_id for r in expand(sweep)]
    assert len(ids) == len(set(ids))


# ------------------------------------------------------------------ properties

_small_ints = lambda lo, hi, k: st.lists(st.integers(lo, hi), min_size=1, max_size=k,
                                          unique=True).map(tuple)


@st.composite
def valid_sweeps(draw):
    n = draw(_small_ints(2, 32, 3))
    optimizer = draw(st.sampled_from([("gd",), ("sgd",), ("gd", "sgd")]))
    batch_size = draw(st.lists(st.integers(1, min(n)), min_size=1, max_size=3,
                               unique=True).map(tuple))
    if "sgd" not in optimizer:  # used only by sgd: refused elsewhere off its default
        batch_size = DEFAULTS["batch_size"]
    steps = draw(st.integers(1, 20))
    record_every = draw(st.sampled_from([r for r in range(1, steps + 1) if steps % r == 0]))
    return dict(
        widths=draw(_small_ints(1, 64, 3).map(lambda t: tuple(2 * w for w in t))),
        depths=draw(_small_ints(1, 4, 3)),
        num_seeds=draw(st.integers(1, 4)),
        seed=draw(st.integers(0, 1000)),
        n=n,
        d=draw(st.integers(2, 8)),
        lr=draw(st.lists(st.floats(1e-4, 10.0), min_size=1, max_size=3,
                         unique=True).map(tuple)),
        loss=draw(st.sampled_from([("hinge",), ("logistic",), ("hinge", "exponential")])),
        labels="random_sign",
        param=draw(st.sampled_from([("du",), ("zou",), ("ntk", "standard")])),
        output_scale=draw(st.lists(st.floats(0.25, 4.0), min_size=1, max_size=2,
                                   unique=True).map(tuple)),
        optimizer=optimizer,
        batch_size=batch_size,
        steps=steps,
        record_every=record_every,
        chunk_steps=draw(st.integers(1, 30)),
    )


@settings(max_examples=30, deadline=None)
@given(valid_sweeps())
def test_expand_counts_unique_deterministic(cfg):
    sweep = validate(cfg)
    runs = expand(sweep)
    per_point = sum(len(cfg["batch_size"]) if o == "sgd" else 1 for o in cfg["optimizer"])
    expected = (cfg["num_seeds"] * len(cfg["n"]) * len(cfg["widths"]) * len(cfg["depths"])
                * len(cfg["lr"]) * len(cfg["loss"]) * len(cfg["param"]) * per_point
                * len(cfg["output_scale"]) * len(sweep.arch) * len(config_lib.tasks(sweep)))
    assert len(runs) == expected == config_lib.num_networks(sweep)
    assert len({r.run_id for r in runs}) == len(runs)
    assert expand(sweep) == runs
    assert expand(validate(cfg)) == runs
    seeds = set(range(cfg["seed"], cfg["seed"] + cfg["num_seeds"]))
    for r in runs:
        assert r.seed in seeds
        if r.optimizer == "gd":
            assert r.batch_size == r.n
        else:
            assert r.batch_size in cfg["batch_size"]
        assert 0 <= r.init_tag < 2**32 and 0 <= r.batch_tag < 2**32


SIZE_FIELDS = ["widths", "depths", "num_seeds", "n", "d", "batch_size", "steps",
               "record_every", "chunk_steps", "teacher_width", "power_max_iters"]


@settings(max_examples=30, deadline=None)
@given(field=st.sampled_from(SIZE_FIELDS), value=st.integers(-1000, 0),
       as_tuple=st.booleans())
def test_nonpositive_size_field_is_named(field, value, as_tuple):
    if field == "d" and value == 0:
        value = 1  # d = 0 is the dataset's own dimension (below); d = 1 is refused
    if field in config_lib.SWEPT and as_tuple:
        value = (value,)
    with pytest.raises(ConfigError) as info:
        validate({field: value})
    assert info.value.field == field
    assert str(info.value).startswith(f"config.{field}:")


def test_d_and_labels_default_to_the_datasets_own():
    s = validate({})
    assert (s.d, s.labels) == (16, "gaussian")
    s = validate({"dataset": "digits"})
    assert (s.d, s.labels, s.sign_labels) == (64, "task", True)
    assert validate({"dataset": "digits", "digits_task": "value"}).sign_labels is False
    assert validate({"dataset": "zou", "d": 8, "labels": "teacher"}).d == 8


def test_memory_budget_zero_means_auto_and_negative_is_refused():
    assert validate({"memory_budget_mb": 0}).memory_budget_mb == 0.0
    with pytest.raises(ConfigError, match="^config.memory_budget_mb:"):
        validate({"memory_budget_mb": -1})


# ------------------------------------------------------------------ identity


def test_lr_only_difference_shares_init_and_data():
    runs = expand(validate(dict(SMALL, lr=(0.1, 0.5))))
    by = {}
    for r in runs:
        by.setdefault((r.seed, r.width), []).append(r)
    for group in by.values():
        assert len(group) == 2 and group[0].lr != group[1].lr
        assert group[0].init_tag == group[1].init_tag
        assert group[0].dataset_id == group[1].dataset_id
        assert group[0].run_id != group[1].run_id


def test_dataset_shared_across_widths_not_seeds():
    runs = expand(validate(dict(SMALL, widths=(8, 16, 32), num_seeds=3)))
    by_seed = {}
    for r in runs:
        by_seed.setdefault(r.seed, set()).add(r.dataset_id)
    assert all(len(ids) == 1 for ids in by_seed.values())
    all_ids = [next(iter(ids)) for ids in by_seed.values()]
    assert len(set(all_ids)) == len(by_seed) == 3


def test_dataset_differs_across_n():
    runs = expand(validate(dict(SMALL, n=(8, 16), num_seeds=1)))
    assert len({r.dataset_id for r in runs}) == 2


def test_run_id_depends_on_steps_not_on_engine_settings():
    base = _by_key(expand(validate(SMALL)), "seed", "width")
    more_steps = _by_key(expand(validate(dict(SMALL, steps=8))), "seed", "width")
    engine = _by_key(expand(validate(dict(SMALL, chunk_steps=2, memory_budget_mb=7))),
                     "seed", "width")
    renamed = _by_key(expand(validate(dict(SMALL, name="other"))), "seed", "width")
    assert base.keys() == more_steps.keys() == engine.keys()
    for k, r in base.items():
        assert more_steps[k].run_id != r.run_id
        assert engine[k].run_id == r.run_id
        assert renamed[k].run_id == r.run_id
        assert more_steps[k].dataset_id == r.dataset_id


def test_seed_offset_keeps_run_identity():
    """Seed 1 of a sweep starting at 0 is the same run as seed 1 of a sweep starting at 1."""
    a = _by_key(expand(validate(dict(SMALL, seed=0, num_seeds=2))), "seed", "width")
    b = _by_key(expand(validate(dict(SMALL, seed=1, num_seeds=1))), "seed", "width")
    assert b.keys() == {(1, 8)}
    assert a[(1, 8)] == b[(1, 8)]


def test_sweep_to_dict_round_trips():
    sweep = validate(dict(SMALL, loss=("hinge", "logistic"), labels="random_sign"))
    d = sweep.to_dict()
    assert all(not isinstance(v, tuple) for v in d.values())
    assert validate(d) == sweep
    assert set(d) == {f.name for f in dataclasses.fields(sweep)} == set(DEFAULTS)


def test_stable_hash_is_stable():
    # A pinned value: run ids must be the same in every process and Python version.
    h = config_lib.stable_hash("init", 8, 1, "du")
    assert h == 2962790699780669242
    assert h != config_lib.stable_hash("init", 8, 2, "du")
    assert 0 <= config_lib.stable_hash("x", nbytes=4) < 2**32


@pytest.mark.parametrize("cfg", [
    dict(),
    dict(optimizer=("gd", "sgd"), batch_size=(2, 4, 8), n=(8, 16), lr=(0.1, "theory")),
    dict(dataset="digits", digits_task=("0v1", "3v8", "even_odd"), n=(20, 30), num_seeds=2,
         arch=("mlp", "cnn"), param=("ntk", "mup"), output_scale=(0.5, 1.0, 2.0)),
])
def test_num_networks_counts_the_runs_expand_gives(cfg):
    """num_networks, the count the resource checks use without expanding, against the
    runs themselves, and the count by hand: every swept field and its own factor."""
    sweep = validate(cfg)
    runs = expand(sweep)
    by_hand = (sweep.num_seeds * len(sweep.n) * len(config_lib.tasks(sweep)) * len(sweep.arch)
               * len(sweep.widths) * len(sweep.depths) * len(sweep.param) * len(sweep.loss)
               * len(sweep.lr) * len(sweep.output_scale)
               * sum(len(sweep.batch_size) if o == "sgd" else 1 for o in sweep.optimizer))
    assert config_lib.num_networks(sweep) == len(runs) == by_hand
    assert len({r.run_id for r in runs}) == len(runs)
