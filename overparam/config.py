"""Sweep schema: validate a config and expand it into the grid of runs.

A sweep file (sweeps/*.py) returns an ml_collections ConfigDict; `validate`
turns it into a frozen `Sweep`, checking every field before anything runs, and
`expand` turns a `Sweep` into the list of `Run`s it trains. Each run carries
its identity: `run_id` and the integer tags from which all of its random draws
derive, so its result does not depend on which runs it is grouped with.

Every field is declared once, as a field of `Sweep`: its default, the check of
its value, a one-line doc, whether it is swept and whether it is part of a
run's identity. DEFAULTS, SWEPT, NOT_IDENTITY and `validate` derive from
those declarations; the checks that involve several fields are in
`_check_consistency`. A swept field holds a tuple, and the product of all
swept fields is trained for every seed (seed, seed+1, ..., seed+num_seeds-1).

The step size of a run is lr, or lr / width with lr_scaling='inverse_width'
(the width-stable choice for the zou and standard parameterizations,
THEORY.md section 3); runs.parquet records both (lr_base and lr). lr may
include 'theory' (squared loss only): the engine then uses, for each training
set, half the gradient-descent stability limit of the infinite-width kernel,
1 / lambda_max(s H^inf) (times n for the mean reduction); see
`theory.gram_inf`.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import itertools
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

PARAMS = ("du", "zou", "ntk", "standard", "mup")
LOSSES = ("squared", "hinge", "squared_hinge", "exponential", "logistic")
CLASSIFICATION_LOSSES = LOSSES[1:]
OPTIMIZERS = ("gd", "sgd")
DATASETS = ("sphere", "zou", "digits")
LABELS = ("auto", "gaussian", "random_sign", "teacher", "teacher_regression", "task")
SIGN_LABELS = ("random_sign", "teacher")  # and 'task' but for digits_task 'value'
# scikit-learn's digits (overparam/data.py): images of each digit 0..9, 8x8 pixels.
DIGIT_COUNTS = (178, 182, 177, 183, 181, 182, 181, 179, 174, 180)
DIGITS_D = 64
SYNTHETIC_D = 16    # d = 0 (the default) is this for the synthetic sets, DIGITS_D for digits
TEST_CAP = 1000     # n_test = -1 (automatic) takes every other image of a task, at most this
REDUCTIONS = ("sum", "mean")
LR_SCALINGS = ("constant", "inverse_width")
PRECISIONS = ("highest", "high", "default")
DTYPES = ("float32", "float64")


class ConfigError(ValueError):
    """A bad config field; str(err) is one line naming the field."""

    def __init__(self, field: str | None, message: str):
        super().__init__(f"config.{field}: {message}" if field else f"config: {message}")
        self.field = field


# ---------------------------------------------------------------- checks of one value

Check = Callable[[str, Any], Any]  # (field, value) -> the value, or raises ConfigError


def _integer(low: int = 1) -> Check:
    def check(field: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(field, f"must be an integer >= {low}, got {value!r}")
        if value < low:
            raise ConfigError(field, f"must be an integer >= {low}, got {value}")
        return int(value)
    return check


def _number(low: float = -math.inf, high: float = math.inf, *, open_low: bool = False) -> Check:
    def check(field: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(field, f"must be a number, got {value!r}")
        try:
            value = float(value)
        except OverflowError:  # an integer beyond any float
            raise ConfigError(field, f"must be a finite number, got an integer of "
                              f"{len(str(abs(value)))} digits") from None
        bad_low = value <= low if open_low else value < low
        if not math.isfinite(value) or bad_low or value > high:
            lo = "(" if open_low else "["
            raise ConfigError(field, f"must be a finite number in {lo}{low}, {high}], "
                              f"got {value}")
        return value
    return check


def _one_of(allowed: tuple[str, ...]) -> Check:
    def check(field: str, value: Any) -> str:
        if value not in allowed:
            raise ConfigError(field, f"unknown value {value!r}; allowed: {', '.join(allowed)}")
        return value
    return check


def _boolean(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(field, f"must be True or False, got {value!r}")
    return value


def _dir_name(field: str, value: Any) -> str:
    if not isinstance(value, str) or not value or "/" in value or value.startswith("."):
        raise ConfigError(field, f"must be a plain directory name, got {value!r}")
    return value


def _step_size(field: str, value: Any) -> float | str:
    return value if value == "theory" else _number(0.0, open_low=True)(field, value)


def _dimension(field: str, value: Any) -> int:
    if value == 0:
        return 0
    return _integer(low=2)(field, value)


ARCHS = ("mlp", "cnn", "resnet")  # and a flax module 'pkg.mod:Class'
CONV_ARCHS = ("cnn", "resnet")
CONV_PARAMS = ("ntk", "standard", "mup")


def _arch(field: str, value: Any) -> str:
    """'mlp', 'cnn', 'resnet', or 'pkg.mod:Class' naming an importable flax module class."""
    if value in ARCHS:
        return value
    if not isinstance(value, str) or value.count(":") != 1:
        raise ConfigError(field, f"unknown value {value!r}; allowed: {', '.join(ARCHS)}, or a "
                          "flax module 'pkg.mod:Class'")
    import importlib

    path, name = value.split(":")
    try:
        module = importlib.import_module(path)
    except Exception as e:  # noqa: BLE001 - importing a user's module raises anything
        raise ConfigError(field, f"cannot import {path!r} ({type(e).__name__}: {e})") from None
    cls = getattr(module, name, None)
    import flax.linen as nn

    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ConfigError(field, f"{value!r} is not a flax.linen.Module class")
    return value


def digit_pair(task: str) -> tuple[int, int] | None:
    """(a, b) of a digits task 'aVb' (images of digits a, label +1, and b, label -1); None
    for 'even_odd' and 'value'."""
    if len(task) == 3 and task[1] in "vV" and task[0].isdigit() and task[2].isdigit():
        return int(task[0]), int(task[2])
    return None


def _digits_task(field: str, value: Any) -> str:
    pair = digit_pair(value) if isinstance(value, str) else None
    if value in ("even_odd", "value") or (pair and pair[0] != pair[1]):
        return value
    raise ConfigError(field, f"unknown task {value!r}; allowed: 'aVb' for two different digits "
                      "a, b (e.g. '0v1', '3v8'), 'even_odd', 'value'")


def task_pool(task: str) -> int:
    """How many digits images a task draws from: those of its two digits, or all."""
    pair = digit_pair(task)
    return DIGIT_COUNTS[pair[0]] + DIGIT_COUNTS[pair[1]] if pair else sum(DIGIT_COUNTS)


# ---------------------------------------------------------------- the fields


@dataclasses.dataclass(frozen=True)
class UsedWhen:
    """Where a field is used: `applies` (the resolved fields -> bool) says whether the sweep
    reads it; `what` says where, in words; `on`: the fields `applies` looks at (a refusal
    shows their values). A field set away from its default where it is not used is refused
    (`_check_used`): it would change nothing but the manifest."""

    what: str
    on: tuple[str, ...]
    applies: Callable[[dict[str, Any]], bool]


def _field(default: Any, check: Check, doc: str, *, swept: bool = False,
           identity: bool = True, used_when: UsedWhen | None = None) -> Any:
    """A field of `Sweep`: its default, the check of its value (of each element, if
    swept), a one-line doc, whether it is swept (a tuple: one network per element),
    whether it is part of a run's identity (its run_id) and where it is used (None:
    always)."""
    return dataclasses.field(default=default, metadata=dict(check=check, doc=doc, swept=swept,
                                                            identity=identity,
                                                            used_when=used_when))


# Where the fields that not every sweep reads are used (the fields' used_when).
DIGITS_ONLY = UsedWhen("dataset 'digits'", ("dataset",), lambda s: s["dataset"] == "digits")
ZOU_ONLY = UsedWhen("dataset 'zou'", ("dataset",), lambda s: s["dataset"] == "zou")
SEPARABLE = UsedWhen("+-1 labels ('random_sign' or 'teacher') on a synthetic dataset",
                     ("dataset", "labels"),
                     lambda s: s["dataset"] != "digits" and s["labels"] in SIGN_LABELS)
TEACHER_ONLY = UsedWhen("labels 'teacher' or 'teacher_regression'", ("labels",),
                        lambda s: s["labels"].startswith("teacher"))
SGD_ONLY = UsedWhen("optimizer 'sgd'", ("optimizer",), lambda s: "sgd" in s["optimizer"])
REAL_TARGETS = UsedWhen("real-valued targets (labels 'gaussian' or 'teacher_regression', or "
                        "digits_task 'value')", ("labels", "digits_task"),
                        lambda s: not _sign_labels(s["labels"], s["digits_task"]))
SHARPNESS_ON = UsedWhen("sharpness_every > 0", ("sharpness_every",),
                        lambda s: s["sharpness_every"] > 0)


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A validated sweep (`validate` makes one): swept fields are tuples, the rest scalars."""

    name: str = _field("sweep", _dir_name, "results directory (results/<name>)",
                       identity=False)
    widths: tuple[int, ...] = _field((64, 256, 1024), _integer(), "hidden widths m",
                                     swept=True)
    depths: tuple[int, ...] = _field((1,), _integer(), "hidden layers L", swept=True)
    num_seeds: int = _field(8, _integer(), "seeds per grid point", identity=False)
    seed: int = _field(0, _integer(low=0), "the first seed", identity=False)
    n: tuple[int, ...] = _field((64,), _integer(low=2), "training points", swept=True)
    d: int = _field(0, _dimension, "input dimension (0: 16, and 64 for digits)")
    dataset: str = _field("sphere", _one_of(DATASETS),
                          "sphere: uniform on S^{d-1}; zou: unit norm, last coordinate mu; "
                          "digits: scikit-learn's 8x8 digit images, centered, on the unit "
                          "sphere")
    labels: str = _field("auto", _one_of(LABELS),
                         "auto: task for digits, gaussian otherwise; gaussian: N(0, 1) "
                         "targets; random_sign: +-1; teacher: the sign of a random ReLU "
                         "teacher; teacher_regression: its value; task: digits_task's")
    digits_task: tuple[str, ...] = _field(("0v1",), _digits_task,
                                          "digits' labels: 'aVb' (+1 for digit a, -1 for b), "
                                          "'even_odd' (+1 even), 'value' (the digit, "
                                          "standardized: regression)", swept=True,
                                          used_when=DIGITS_ONLY)
    n_test: int = _field(-1, _integer(low=-1), "held-out test points per training set, drawn "
                         "with it (-1: the rest of a digits task, at most 1,000, and n for the "
                         "synthetic sets; 0: none)", identity=False)
    phi: float = _field(0.0, _number(0.0, 2.0),
                        "distance >= phi between points of different classes (0: any)",
                        used_when=SEPARABLE)
    mu: float = _field(0.5, _number(0.0, 1.0), "last coordinate of the zou dataset's points",
                       used_when=ZOU_ONLY)
    teacher_width: int = _field(16, _integer(), "hidden width of the labels' teacher",
                                  used_when=TEACHER_ONLY)
    loss: tuple[str, ...] = _field(("squared",), _one_of(LOSSES),
                                   "squared, hinge, squared_hinge, exponential or logistic",
                                   swept=True)
    reduction: str = _field("sum", _one_of(REDUCTIONS),
                            "sum (Du) or mean (Zou) of the loss over examples")
    optimizer: tuple[str, ...] = _field(("gd",), _one_of(OPTIMIZERS),
                                        "gd: full batch; sgd: batches of batch_size drawn from the "
                                        "run's own key (optax)",
                                        swept=True)
    momentum: float = _field(0.0, _number(0.0, 1.0), "heavy-ball momentum (0: none)")
    lr: tuple[float | str, ...] = _field((0.1,), _step_size,
                                         "step size, or 'theory' (squared loss only)",
                                         swept=True)
    lr_scaling: str = _field("constant", _one_of(LR_SCALINGS),
                             "constant, or inverse_width: the step size is lr / width "
                             "(width-stable for zou and standard)")
    batch_size: tuple[int, ...] = _field((16,), _integer(), "SGD batch size (GD: n)",
                                         swept=True, used_when=SGD_ONLY)
    arch: tuple[str, ...] = _field(("mlp",), _arch,
                                   "the network: mlp (overparam/model.py), cnn or resnet "
                                   "(overparam/modules.py), or a flax module 'pkg.mod:Class' "
                                   "(protocol: overparam/networks.py)", swept=True)
    param: tuple[str, ...] = _field(("du",), _one_of(PARAMS),
                                    "du, zou, ntk, standard or mup (formulas in "
                                    "overparam/model.py)", swept=True)
    train_output: bool = _field(False, _boolean, "also train the output layer")
    output_scale: tuple[float, ...] = _field((1.0,), _number(0.0, open_low=True),
                                             "alpha: the model is alpha f and the loss is "
                                             "divided by alpha^2 (Chizat et al. 2019; large: "
                                             "lazy, small: rich)", swept=True)
    center_output: bool = _field(False, _boolean, "train alpha (f - f(0)): the centered model, "
                                 "whose output starts at 0 (lazy at large alpha)")
    steps: int = _field(200, _integer(), "optimizer steps")
    record_every: int = _field(1, _integer(), "record every this many steps (and step 0)",
                               identity=False)
    chunk_steps: int = _field(100, _integer(), "steps per compiled chunk (at most)",
                              identity=False)
    precision: str = _field("highest", _one_of(PRECISIONS),
                            "matmul precision of training (forward and backward): highest, "
                            "high or default (TF32 on a GPU, bfloat16 passes on a TPU); "
                            "measure_precision is the measurements'")
    dtype: str = _field("float32", _one_of(DTYPES), "float32 or float64")
    power_tol: float = _field(1e-6, _number(0.0, 0.1, open_low=True),
                              "relative tolerance of the spectral-norm iteration",
                              identity=False)
    power_max_iters: int = _field(100, _integer(), "iterations of the spectral norm at most",
                                  identity=False)
    regression_tol: float = _field(1e-2, _number(0.0, open_low=True),
                                   "a real-valued target counts as an error when its residual "
                                   "exceeds this",
                                   identity=False, used_when=REAL_TARGETS)
    memory_budget_mb: float = _field(0.0, _number(0.0),
                                     "device memory per compiled program in MiB (0: 60% of the "
                                     "accelerator's free memory, 30% of RAM on the CPU)",
                                     identity=False)
    checkpoint_seconds: float = _field(60.0, _number(0.0),
                                       "a batch is checkpointed once this many seconds have passed "
                                       "since its last checkpoint, and 20 times the last one's "
                                       "duration (0: after every chunk)",
                                       identity=False)
    gram_every: int = _field(0, _integer(low=0), "NTK Gram statistics every this many steps "
                             "(0: off)", identity=False)
    sharpness_every: int = _field(0, _integer(low=0), "the loss Hessian's top eigenvalue every "
                                  "this many steps (0: off)", identity=False)
    sharpness_iters: int = _field(20, _integer(), "Lanczos iterations (Hessian-vector "
                                  "products) of each sharpness", identity=False,
                                  used_when=SHARPNESS_ON)
    measure_precision: str = _field("highest", _one_of(PRECISIONS),
                                    "matmul precision of the measurements (radii, the norms "
                                    "of W(0), Gram, sharpness; TF32 fakes small radii); "
                                    "`precision` is training's: "
                                    "precision='high' trains in TF32 on a GPU and still "
                                    "measures in float32", identity=False)
    power_iters: int = _field(16, _integer(), "spectral-norm iterations per record on a GPU or "
                              "TPU: a fixed count, warm-started (the CPU stops at power_tol)",
                              identity=False)

    @property
    def sign_labels(self) -> bool:
        """True when labels are +-1 (classification error and margins apply)."""
        return _sign_labels(self.labels, self.digits_task)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}


FIELDS = dataclasses.fields(Sweep)
DEFAULTS: dict[str, Any] = {f.name: f.default for f in FIELDS}
SWEPT = tuple(f.name for f in FIELDS if f.metadata["swept"])
# Fields that change what is recorded or how the work is split, not what is trained.
NOT_IDENTITY = tuple(f.name for f in FIELDS if not f.metadata["identity"])
# Identity fields added after run_ids were first published: they enter a run's identity
# only where they differ from their default, so that every earlier run keeps its run_id.
# (digits_task enters it through the dataset_id, and only for digits.)
LATER_IDENTITY = ("output_scale", "center_output", "arch")


def _sign_labels(labels: str, tasks: tuple[str, ...]) -> bool:
    return labels in SIGN_LABELS or (labels == "task" and "value" not in tasks)


def markdown() -> str:
    """docs/sweeps.md's table of fields: name, default and doc, a row each (a test keeps the
    two equal)."""
    rows = ["| field | default | meaning |", "|---|---|---|"]
    for f in FIELDS:
        notes = [note for note, on in (("swept: a tuple", f.metadata["swept"]),
                                       ("not part of run_id", not f.metadata["identity"])) if on]
        doc = f.metadata["doc"] + (f" ({'; '.join(notes)})" if notes else "")
        default = repr(f.default).replace("|", "\\|")
        rows.append(f"| `{f.name}` | `{default}` | {doc} |")
    return "\n".join(rows) + "\n"


def default_config():
    """A ConfigDict with every field at its default; sweep files start from it."""
    import ml_collections

    return ml_collections.ConfigDict(dict(DEFAULTS))


@dataclasses.dataclass(frozen=True)
class Run:
    """One trained network: its grid point and its identity.

    Its random draws derive from PRNGKey(seed) and its two tags (train.derive_keys):
    split(fold_in(PRNGKey(seed), init_tag)) gives the network's key, from which
    `model.init` draws its initial weights, and the key of the starts of its
    spectral-norm iterations; the SGD batch of step t (the step its weights are at)
    is permutation(fold_in(fold_in(PRNGKey(seed), batch_tag), t), n)[:batch_size].
    """

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
    output_scale: float
    arch: str
    dataset_id: str
    digits_task: str  # digits' labelling task ('' for the synthetic sets)
    n_test: int       # held-out test points drawn with the training set
    init_tag: int   # uint32 hash of (width, depth, param, d, train_output, dtype)
    batch_tag: int  # uint32 hash of (n, batch_size)


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
    s = {}
    for f in FIELDS:
        check = f.metadata["check"]
        s[f.name] = (tuple(check(f.name, v) for v in _as_tuple(f.name, c[f.name]))
                     if f.metadata["swept"] else check(f.name, c[f.name]))
    _resolve_automatic(s)
    _check_consistency(s)
    return Sweep(**s)


def _resolve_automatic(s: dict[str, Any]) -> None:
    """labels 'auto' and d = 0 become the dataset's own: 'task' and 64 for digits, 'gaussian'
    and 16 for the synthetic sets (a Sweep, its manifest and its run_ids hold the values)."""
    digits = s["dataset"] == "digits"
    if s["labels"] == "auto":
        s["labels"] = "task" if digits else "gaussian"
    if s["d"] == 0:
        s["d"] = DIGITS_D if digits else SYNTHETIC_D


SEED_LIMIT = 2**32  # seeds are uint32 (train.Hyper)


def _check_used(s: dict[str, Any]) -> None:
    """Refuses a field set away from its default where the sweep does not use it (its
    `used_when`): digits_task without digits, batch_size without sgd, ..."""
    for f in FIELDS:
        used = f.metadata["used_when"]
        if used and s[f.name] != f.default and not used.applies(s):
            got = ", ".join(f"{k}={s[k]!r}" for k in used.on)
            raise ConfigError(f.name, f"is used only with {used.what}, got {got}; leave it at "
                              f"its default {f.default!r}")


def _check_consistency(s: dict[str, Any]) -> None:
    _check_used(s)
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
    for every in ("gram_every", "sharpness_every"):
        if s[every] % s["record_every"]:
            raise ConfigError(every, f"must be a multiple of record_every="
                              f"{s['record_every']} (or 0), got {s[every]}")
    if s["dataset"] == "zou" and s["mu"] >= 1.0:
        raise ConfigError("mu", "must be < 1 for dataset 'zou' (points need a free direction)")
    _check_digits(s)
    _check_archs(s)
    for loss in s["loss"]:
        if loss in CLASSIFICATION_LOSSES and not _sign_labels(s["labels"], s["digits_task"]):
            if s["labels"] == "task":
                raise ConfigError("digits_task", f"loss {loss!r} needs +-1 labels: a task "
                                  "'aVb' or 'even_odd', got 'value'")
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


def _check_digits(s: dict[str, Any]) -> None:
    """The digits' fields: where they apply, and sizes their images can give."""
    tasks = s["digits_task"]
    if s["dataset"] != "digits":
        if s["labels"] == "task":
            raise ConfigError("labels", "'task' labels are digits_task's: they need dataset "
                              f"'digits', got dataset={s['dataset']!r}")
        return
    if s["d"] != DIGITS_D:
        raise ConfigError("d", f"dataset 'digits' has d={DIGITS_D} (8x8 images), got {s['d']}")
    if "value" in tasks and len(tasks) > 1 and s["labels"] == "task":
        raise ConfigError("digits_task", "'value' (regression) cannot be swept with the "
                          f"classification tasks {tuple(t for t in tasks if t != 'value')}")
    for task in tasks:
        pool = task_pool(task)
        for n in s["n"]:
            room = pool - n
            if room < 1 and s["n_test"] != 0:
                raise ConfigError("n", f"task {task!r} has {pool} images: n={n} training "
                                  "images leave none for testing")
            if room < 0:
                raise ConfigError("n", f"task {task!r} has {pool} images, fewer than n={n}")
            if room < s["n_test"]:
                raise ConfigError("n_test", f"task {task!r} has {pool} images: n={n} "
                                  f"training images leave {room} for testing, fewer than "
                                  f"n_test={s['n_test']}")


def _check_archs(s: dict[str, Any]) -> None:
    """What the convolutional networks and the flax modules can take."""
    convs = [a for a in s["arch"] if a in CONV_ARCHS]
    if convs:
        other = [p for p in s["param"] if p not in CONV_PARAMS]
        if other:
            raise ConfigError("param", f"{other[0]!r} is an MLP parameterization; arch "
                              f"{convs[0]!r} takes {', '.join(CONV_PARAMS)}")
        side = math.isqrt(s["d"])
        if side * side != s["d"]:
            raise ConfigError("d", f"arch {convs[0]!r} reads x as a square image: d={s['d']} "
                              "is not a square (digits: d=64, 8x8)")
    if "theory" in s["lr"] and any(a != "mlp" for a in s["arch"]):
        raise ConfigError("lr", "'theory' takes the analytic kernel of the mlp; give the "
                          "other archs a number")


def held_out_points(s: Sweep, n: int, task: str) -> int:
    """The held-out test points of a training set of n: n_test (0: none), or where it is -1
    every other image of the digits task (at most TEST_CAP), n for the synthetic sets."""
    if s.n_test >= 0:
        return s.n_test
    return min(task_pool(task) - n, TEST_CAP) if s.dataset == "digits" else n


# ---------------------------------------------------------------- expansion


def data_identity(s: Sweep, *, seed: int, n: int, task: str = "") -> dict[str, Any]:
    """Everything that determines a training set (its held-out test points continue its
    draw: they are not part of it). task: the digits task ('' for the synthetic sets)."""
    ident = dict(dataset=s.dataset, labels=s.labels, n=n, d=s.d, seed=seed, dtype=s.dtype)
    if s.dataset == "digits":
        ident.update(digits_task=task)
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
    fixed = {k: v for k, v in s.to_dict().items() if k not in SWEPT and k not in NOT_IDENTITY}
    for seed, n, task, arch, width, depth, param, loss, opt, lr, alpha in itertools.product(
            range(s.seed, s.seed + s.num_seeds), s.n, tasks(s), s.arch, s.widths, s.depths,
            s.param, s.loss, s.optimizer, s.lr, s.output_scale):
        for batch in (s.batch_size if opt == "sgd" else (n,)):
            did = dataset_id(data_identity(s, seed=seed, n=n, task=task))
            init_tag = stable_hash("init", width, depth, param, s.d, s.train_output, s.dtype,
                                   nbytes=4)
            batch_tag = stable_hash("batches", n, batch, nbytes=4)
            ident = dict(seed=seed, n=n, width=width, depth=depth, param=param, loss=loss,
                         optimizer=opt, lr=lr, batch_size=batch, dataset_id=did,
                         output_scale=alpha, arch=arch, **fixed)
            ident = {k: v for k, v in ident.items()
                     if k not in LATER_IDENTITY or v != _default_value(k)}
            base = math.nan if lr == "theory" else lr
            step_size = base / width if s.lr_scaling == "inverse_width" else base
            runs.append(Run(run_id=f"{stable_hash(ident):016x}", seed=seed, width=width,
                            depth=depth, n=n, d=s.d, loss=loss, optimizer=opt,
                            lr=step_size, lr_base=base, lr_spec=str(lr),
                            batch_size=batch, param=param, output_scale=alpha, arch=arch,
                            dataset_id=did, digits_task=task, n_test=held_out_points(s, n, task),
                            init_tag=init_tag, batch_tag=batch_tag))
    return runs


def tasks(s: Sweep) -> tuple[str, ...]:
    """The digits tasks of a sweep; ('',) for a synthetic dataset (digits_task ignored)."""
    return s.digits_task if s.dataset == "digits" else ("",)


def _default_value(field: str) -> Any:
    """A field's default as one run holds it (the element of a swept field's default)."""
    default = DEFAULTS[field]
    return default[0] if field in SWEPT else default


if __name__ == "__main__":  # docs/sweeps.md's table of fields: python -m overparam.config
    print(markdown(), end="")
