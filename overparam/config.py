"""Sweep schema: validate a config and expand it into the grid of runs.

A sweep file (sweeps/*.py) returns an ml_collections ConfigDict; `validate`
turns it into a frozen `Sweep`, checking every field before anything runs, and
`expand` turns a `Sweep` into the list of `Run`s it trains. Each run carries
its identity: `run_id` and the integer tags from which all of its random draws
derive, so its result does not depend on which runs it is grouped with.

Fields (a tuple in a swept field trains one network per element of the
product of all swept fields):

  widths, depths, n, lr, batch_size, loss, optimizer, param   swept
  num_seeds, seed        seeds are seed, seed+1, ..., seed+num_seeds-1
  d, dataset, labels, phi, mu, teacher_width                   training set
  reduction, momentum, train_output, lr_scaling                objective, optimizer

The step size of a run is lr, or lr / width with lr_scaling='inverse_width'
(the width-stable choice for the zou and standard parameterizations,
THEORY.md section 3); runs.parquet records both (lr_base and lr). lr may
include 'theory' (squared loss only): the engine then uses, for each training
set, half the gradient-descent stability limit of the infinite-width kernel,
1 / lambda_max(s H^inf) (times n for the mean reduction); see
`theory.gram_inf`.
  steps, record_every, chunk_steps                             schedule
  precision, dtype, power_tol, power_max_iters, regression_tol numerics
  gram_every             NTK Gram statistics every this many steps (0: off)
  memory_budget_mb, checkpoint_seconds, name                   engine
                         (memory_budget_mb = 0: a share of the device's free memory;
                         checkpoint_seconds: see overparam.checkpoint.Cadence)
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import itertools
import json
import math
from collections.abc import Mapping
from typing import Any

PARAMS = ("du", "zou", "ntk", "standard")
LOSSES = ("squared", "hinge", "squared_hinge", "exponential", "logistic")
CLASSIFICATION_LOSSES = LOSSES[1:]
OPTIMIZERS = ("gd", "sgd")
DATASETS = ("sphere", "zou")
LABELS = ("gaussian", "random_sign", "teacher", "teacher_regression")
SIGN_LABELS = ("random_sign", "teacher")
REDUCTIONS = ("sum", "mean")
LR_SCALINGS = ("constant", "inverse_width")
PRECISIONS = ("highest", "high", "default")
DTYPES = ("float32", "float64")

# Fields that change what is recorded or how the work is split, not what is trained.
NOT_IDENTITY = ("name", "num_seeds", "seed", "record_every", "chunk_steps", "memory_budget_mb",
                "checkpoint_seconds", "power_tol", "power_max_iters", "regression_tol",
                "gram_every")
SWEPT = ("widths", "depths", "n", "lr", "batch_size", "loss", "optimizer", "param")

DEFAULTS: dict[str, Any] = dict(
    name="sweep",
    widths=(64, 256, 1024),
    depths=(1,),
    num_seeds=8,
    seed=0,
    n=(64,),
    d=16,
    dataset="sphere",
    labels="gaussian",
    phi=0.0,
    mu=0.5,
    teacher_width=16,
    loss=("squared",),
    reduction="sum",
    optimizer=("gd",),
    momentum=0.0,
    lr=(0.1,),
    lr_scaling="constant",
    batch_size=(16,),
    param=("du",),
    train_output=False,
    steps=200,
    record_every=1,
    chunk_steps=100,
    precision="highest",
    dtype="float32",
    power_tol=1e-6,
    power_max_iters=100,
    regression_tol=1e-2,
    memory_budget_mb=0.0,
    checkpoint_seconds=60.0,
    gram_every=0,
)


def default_config():
    """A ConfigDict with every field at its default; sweep files start from it."""
    import ml_collections

    return ml_collections.ConfigDict(dict(DEFAULTS))


class ConfigError(ValueError):
    """A bad config field; str(err) is one line naming the field."""

    def __init__(self, field: str | None, message: str):
        super().__init__(f"config.{field}: {message}" if field else f"config: {message}")
        self.field = field


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A validated sweep. Swept fields are tuples; the rest are scalars."""

    name: str
    widths: tuple[int, ...]
    depths: tuple[int, ...]
    num_seeds: int
    seed: int
    n: tuple[int, ...]
    d: int
    dataset: str
    labels: str
    phi: float
    mu: float
    teacher_width: int
    loss: tuple[str, ...]
    reduction: str
    optimizer: tuple[str, ...]
    momentum: float
    lr: tuple[float | str, ...]
    lr_scaling: str
    batch_size: tuple[int, ...]
    param: tuple[str, ...]
    train_output: bool
    steps: int
    record_every: int
    chunk_steps: int
    precision: str
    dtype: str
    power_tol: float
    power_max_iters: int
    regression_tol: float
    memory_budget_mb: float
    checkpoint_seconds: float
    gram_every: int

    @property
    def sign_labels(self) -> bool:
        """True when labels are +-1 (classification error and margins apply)."""
        return self.labels in SIGN_LABELS

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}


@dataclasses.dataclass(frozen=True)
class Run:
    """One trained network: its grid point and its identity."""

    run_id: str
    seed: int
    width: int
    depth: int
    n: int
    d: int
    loss: str
    optimizer: str
    lr: float       # the step size used: lr_base, or lr_base / width (NaN until resolved)
    lr_base: float  # the config's lr (NaN for 'theory')
    lr_spec: str    # the config's lr as written: a number or 'theory'
    batch_size: int
    param: str
    dataset_id: str
    init_tag: int   # uint32: init key = fold_in(PRNGKey(seed), init_tag)
    batch_tag: int  # uint32: SGD batch keys = fold_in(fold_in(PRNGKey(seed), batch_tag), step)


def stable_hash(*parts: Any, nbytes: int = 8) -> int:
    """A hash of `parts` that is the same in every process and Python version."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=nbytes).digest(), "big")


# ---------------------------------------------------------------- validation


def _as_tuple(field: str, value: Any) -> tuple:
    """Swept fields accept a scalar or a tuple; `(a,b)` typed as one string is split."""
    if isinstance(value, tuple) and len(value) == 1 and isinstance(value[0], str):
        value = value[0]  # ml_collections wraps --config.loss=(a,b) as ('(a,b)',)
    if isinstance(value, str) and value.startswith("(") and value.endswith(")"):
        value = tuple(_literal(s.strip()) for s in value[1:-1].split(",") if s.strip())
    if not isinstance(value, (list, tuple)):
        return (value,)
    if not value:
        raise ConfigError(field, "is empty; give at least one value")
    if len(set(value)) < len(value):
        raise ConfigError(field, f"has repeated values {tuple(value)}; give each value once")
    return tuple(value)


def _literal(text: str) -> Any:
    """'0.1' -> 0.1, "'hinge'" -> 'hinge', 'theory' -> 'theory': an element of a tuple
    typed on the command line, where ml_collections left the whole tuple a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _int(field: str, value: Any, *, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(field, f"must be an integer >= {low}, got {value!r}")
    if value < low:
        raise ConfigError(field, f"must be an integer >= {low}, got {value}")
    return int(value)


def _float(field: str, value: Any, *, low: float = -math.inf, high: float = math.inf,
           open_low: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(field, f"must be a number, got {value!r}")
    value = float(value)
    bad_low = value <= low if open_low else value < low
    if not math.isfinite(value) or bad_low or value > high:
        lo = "(" if open_low else "["
        raise ConfigError(field, f"must be a finite number in {lo}{low}, {high}], got {value}")
    return value


def _choice(field: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(field, f"unknown value {value!r}; allowed: {', '.join(allowed)}")
    return value


def _bool(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(field, f"must be True or False, got {value!r}")
    return value


def validate(config: Mapping[str, Any]) -> Sweep:
    """Checks every field of `config` and returns the resolved `Sweep`.

    Raises ConfigError (one line, naming the field and what is allowed).
    """
    if not hasattr(config, "items"):
        raise ConfigError(None, f"a sweep is a ConfigDict (get_config() returns one), got "
                          f"{type(config).__name__}")
    config = dict(config.items())
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        raise ConfigError(unknown[0], f"unknown field; known fields: {', '.join(DEFAULTS)}")
    c = {**DEFAULTS, **config}

    name = c["name"]
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ConfigError("name", f"must be a plain directory name, got {name!r}")
    s = dict(
        name=name,
        widths=tuple(_int("widths", w) for w in _as_tuple("widths", c["widths"])),
        depths=tuple(_int("depths", v) for v in _as_tuple("depths", c["depths"])),
        num_seeds=_int("num_seeds", c["num_seeds"]),
        seed=_int("seed", c["seed"], low=0),
        n=tuple(_int("n", v, low=2) for v in _as_tuple("n", c["n"])),
        d=_int("d", c["d"], low=2),
        dataset=_choice("dataset", c["dataset"], DATASETS),
        labels=_choice("labels", c["labels"], LABELS),
        phi=_float("phi", c["phi"], low=0.0, high=2.0),
        mu=_float("mu", c["mu"], low=0.0, high=1.0, open_low=False),
        teacher_width=_int("teacher_width", c["teacher_width"]),
        loss=tuple(_choice("loss", v, LOSSES) for v in _as_tuple("loss", c["loss"])),
        reduction=_choice("reduction", c["reduction"], REDUCTIONS),
        optimizer=tuple(_choice("optimizer", v, OPTIMIZERS)
                        for v in _as_tuple("optimizer", c["optimizer"])),
        momentum=_float("momentum", c["momentum"], low=0.0, high=1.0),
        lr=tuple(v if v == "theory" else _float("lr", v, low=0.0, open_low=True)
                 for v in _as_tuple("lr", c["lr"])),
        lr_scaling=_choice("lr_scaling", c["lr_scaling"], LR_SCALINGS),
        batch_size=tuple(_int("batch_size", v) for v in _as_tuple("batch_size", c["batch_size"])),
        param=tuple(_choice("param", v, PARAMS) for v in _as_tuple("param", c["param"])),
        train_output=_bool("train_output", c["train_output"]),
        steps=_int("steps", c["steps"]),
        record_every=_int("record_every", c["record_every"]),
        chunk_steps=_int("chunk_steps", c["chunk_steps"]),
        precision=_choice("precision", c["precision"], PRECISIONS),
        dtype=_choice("dtype", c["dtype"], DTYPES),
        power_tol=_float("power_tol", c["power_tol"], low=0.0, high=0.1, open_low=True),
        power_max_iters=_int("power_max_iters", c["power_max_iters"]),
        regression_tol=_float("regression_tol", c["regression_tol"], low=0.0, open_low=True),
        memory_budget_mb=_float("memory_budget_mb", c["memory_budget_mb"], low=0.0),
        checkpoint_seconds=_float("checkpoint_seconds", c["checkpoint_seconds"], low=0.0),
        gram_every=_int("gram_every", c["gram_every"], low=0),
    )
    _check_consistency(s)
    return Sweep(**s)


SEED_LIMIT = 2**32  # seeds are uint32 (train.Hyper)


def _check_consistency(s: dict[str, Any]) -> None:
    if s["seed"] + s["num_seeds"] > SEED_LIMIT:
        field = "seed" if s["seed"] >= SEED_LIMIT else "num_seeds"
        raise ConfigError(field, f"seeds run from seed={s['seed']} to seed + num_seeds - 1 = "
                          f"{s['seed'] + s['num_seeds'] - 1}; they must be below 2**32 = "
                          f"{SEED_LIMIT}")
    if s["steps"] % s["record_every"]:
        raise ConfigError("record_every", f"must divide steps={s['steps']}, "
                          f"got {s['record_every']}")
    if "theory" in s["lr"] and set(s["loss"]) != {"squared"}:
        raise ConfigError("lr", "'theory' is defined for the squared loss only, got loss="
                          f"{s['loss']}")
    if s["gram_every"] % s["record_every"]:
        raise ConfigError("gram_every", f"must be a multiple of record_every="
                          f"{s['record_every']} (or 0), got {s['gram_every']}")
    if s["dataset"] == "zou" and s["mu"] >= 1.0:
        raise ConfigError("mu", "must be < 1 for dataset 'zou' (points need a free direction)")
    if s["phi"] > 0 and s["labels"] not in SIGN_LABELS:
        raise ConfigError("phi", "a class separation needs +-1 labels (labels 'random_sign' "
                          f"or 'teacher'), got labels={s['labels']!r}")
    for loss in s["loss"]:
        if loss in CLASSIFICATION_LOSSES and s["labels"] not in SIGN_LABELS:
            raise ConfigError("labels", f"loss {loss!r} needs +-1 labels: 'random_sign' or "
                              f"'teacher', got {s['labels']!r}")
    if "sgd" in s["optimizer"]:
        too_big = [b for b in s["batch_size"] if b > min(s["n"])]
        if too_big:
            raise ConfigError("batch_size", f"must be <= n={min(s['n'])} for optimizer 'sgd', "
                              f"got {too_big[0]}")
    if "zou" in s["param"]:
        odd = [w for w in s["widths"] if w % 2]
        if odd:
            raise ConfigError("widths", "must be even for param 'zou' (output weights are half "
                              f"+1, half -1), got {odd[0]}")


# ---------------------------------------------------------------- expansion


def data_identity(s: Sweep, *, seed: int, n: int) -> dict[str, Any]:
    """Everything that determines a training set."""
    ident = dict(dataset=s.dataset, labels=s.labels, n=n, d=s.d, seed=seed, dtype=s.dtype)
    if s.dataset == "zou":
        ident.update(mu=s.mu)
    if s.phi > 0:
        ident.update(phi=s.phi)
    if s.labels.startswith("teacher"):
        ident.update(teacher_width=s.teacher_width)
    return ident


def dataset_id(ident: Mapping[str, Any]) -> str:
    return f"{stable_hash(dict(ident)):016x}"[:12]


def expand(s: Sweep) -> list[Run]:
    """All runs of the sweep, in a fixed order.

    GD runs use the full batch (batch_size = n); SGD runs sweep `batch_size`.
    Random streams are shared where that makes comparisons paired: runs that
    differ only in lr (or loss, optimizer) start from the same weights, and
    runs with the same seed and n train on the same data.
    """
    runs = []
    for seed, n, width, depth, param, loss, opt, lr in itertools.product(
            range(s.seed, s.seed + s.num_seeds), s.n, s.widths, s.depths, s.param,
            s.loss, s.optimizer, s.lr):
        for batch in (s.batch_size if opt == "sgd" else (n,)):
            did = dataset_id(data_identity(s, seed=seed, n=n))
            init_tag = stable_hash("init", width, depth, param, s.d, s.train_output, s.dtype,
                                   nbytes=4)
            batch_tag = stable_hash("batches", n, batch, nbytes=4)
            ident = dict(seed=seed, n=n, width=width, depth=depth, param=param, loss=loss,
                         optimizer=opt, lr=lr, batch_size=batch, dataset_id=did,
                         **{k: v for k, v in s.to_dict().items()
                            if k not in SWEPT and k not in NOT_IDENTITY})
            base = math.nan if lr == "theory" else lr
            step_size = base / width if s.lr_scaling == "inverse_width" else base
            runs.append(Run(run_id=f"{stable_hash(ident):016x}", seed=seed, width=width,
                            depth=depth, n=n, d=s.d, loss=loss, optimizer=opt,
                            lr=step_size, lr_base=base, lr_spec=str(lr),
                            batch_size=batch, param=param, dataset_id=did,
                            init_tag=init_tag, batch_tag=batch_tag))
    return runs
