"""The field declarations: `Sweep`, and the lists derived from them.

Every field is declared once, as a field of `Sweep` (`_field`): its default,
the check of its value (`values.py`), a one-line doc, whether it is swept (a
tuple: one network per element, named `one` in a run), whether it is part of a
run's identity, where it is used (`UsedWhen`) and which compiled programs read
it (`program`: `train.Static` is built from these). FIELDS, DEFAULTS, SWEPT,
NOT_IDENTITY, LATER_IDENTITY, RUN_NAMES and `program_fields` derive from the
declarations; `markdown()` is docs/sweeps.md's table of fields.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from overparam.config import digits
from overparam.config import values as check
from overparam.config.values import (
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
)


@dataclasses.dataclass(frozen=True)
class UsedWhen:
    """Where a field is used: `applies` (the resolved fields -> bool) says whether the sweep
    reads it; `what` says where, in words; `on`: the fields `applies` looks at (a refusal
    shows their values). A field set away from its default where it is not used is refused
    (`consistency.check_used`): it would change nothing but the manifest."""

    what: str
    on: tuple[str, ...]
    applies: Callable[[dict[str, Any]], bool]


# Which compiled programs read a field (its `program`; None: neither). train.Static has a
# field of each such one (one run's value, named as the run names it): INIT: the init
# program reads it too; CHUNK: only the chunk program does (train.init_static sets it to
# its default, so shapes that differ only there share one init program); NONZERO: the
# init program reads only whether it is non-zero (init_static sets it to 0 or 1).
INIT, CHUNK, NONZERO = "init", "chunk", "nonzero"
# A field's `identity` "later": added after run_ids were first published, it enters a run's
# identity only where it differs from its default, so that every earlier run keeps its
# run_id.
LATER = "later"


def _field(default: Any, check: check.Check, doc: str, *, swept: bool = False,
           identity: bool | str = True, used_when: UsedWhen | None = None,
           program: str | None = None, one: str | None = None) -> Any:
    """A field of `Sweep`: its default, the check of its value (of each element, if
    swept), a one-line doc, whether it is swept (a tuple: one network per element),
    whether it is part of a run's identity (its run_id; LATER: only off its default),
    where it is used (None: always), which compiled programs read it (INIT, CHUNK,
    NONZERO; None: neither) and, swept, the name of one run's element (default: its own;
    a field of config.Run, a column of runs.parquet and, read by a program, of
    train.Static)."""
    return dataclasses.field(default=default, metadata=dict(
        check=check, doc=doc, swept=swept, identity=identity, used_when=used_when,
        program=program, one=one or None))


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
                        lambda s: not digits.sign_labels(s["labels"], s["digits_task"]))
SHARPNESS_ON = UsedWhen("sharpness_every > 0", ("sharpness_every",),
                        lambda s: s["sharpness_every"] > 0)
GRAM_ON = UsedWhen("gram_every > 0", ("gram_every",), lambda s: s["gram_every"] > 0)
FEATURES_ON = UsedWhen("track_features", ("track_features",), lambda s: s["track_features"])
# The infinite-width trajectory: an analytic kernel (the mlp under du, zou or ntk) trained
# by kernel GD on the squared loss; a sweep reads the field where any of its runs is so.
KERNEL_GD = UsedWhen(
    "some run of arch 'mlp', param du, zou or ntk, loss 'squared', optimizer 'gd', momentum 0",
    ("arch", "param", "loss", "optimizer", "momentum"),
    lambda s: ("mlp" in s["arch"] and bool({"du", "zou", "ntk"} & set(s["param"]))
               and "squared" in s["loss"] and "gd" in s["optimizer"] and not s["momentum"]))


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A validated sweep (`validate` makes one): swept fields are tuples, the rest scalars."""

    name: str = _field(
        "sweep", check.dir_name, "results directory (results/<name>)", identity=False)
    widths: tuple[int, ...] = _field(
        (64, 256, 1024), check.integer(), "hidden widths m", swept=True, program=INIT, one="width")
    depths: tuple[int, ...] = _field(
        (1,), check.integer(), "hidden layers L", swept=True, program=INIT, one="depth")
    num_seeds: int = _field(
        8, check.integer(), "seeds per grid point", identity=False)
    seed: int = _field(
        0, check.integer(low=0), "the first seed", identity=False)
    n: tuple[int, ...] = _field(
        (64,), check.integer(low=2), "training points", swept=True, program=INIT)
    d: int = _field(
        0, check.dimension, "input dimension (0: 16, and 64 for digits)", program=INIT)
    dataset: str = _field(
        "sphere", check.one_of(DATASETS), "sphere: uniform on S^{d-1}; zou: unit norm, last "
        "coordinate mu; digits: scikit-learn's 8x8 digit images, centered, on the unit sphere")
    labels: str = _field(
        "auto", check.one_of(LABELS), "auto: task for digits, gaussian otherwise; gaussian: N(0, "
        "1) targets; random_sign: +-1; teacher: the sign of a random ReLU teacher; "
        "teacher_regression: its value; task: digits_task's")
    digits_task: tuple[str, ...] = _field(
        ("0v1",), digits.digits_task, "digits' labels: 'aVb' (+1 for digit a, -1 for b), "
        "'even_odd' (+1 even), 'value' (the digit, standardized: regression)", swept=True,
        used_when=DIGITS_ONLY)
    n_test: int = _field(
        -1, check.integer(low=-1), "held-out test points per training set, drawn with it (-1: "
        "the rest of a digits task, at most 1,000, and n for the synthetic sets; 0: none)",
        identity=False)
    phi: float = _field(
        0.0, check.number(0.0, 2.0), "distance >= phi between points of different classes (0: "
        "any)", used_when=SEPARABLE)
    mu: float = _field(
        0.5, check.number(0.0, 1.0), "last coordinate of the zou dataset's points",
        used_when=ZOU_ONLY)
    teacher_width: int = _field(
        16, check.integer(), "hidden width of the labels' teacher", used_when=TEACHER_ONLY)
    loss: tuple[str, ...] = _field(
        ("squared",), check.one_of(LOSSES), "squared, hinge, squared_hinge, exponential or "
        "logistic", swept=True, program=CHUNK)
    reduction: str = _field(
        "sum", check.one_of(REDUCTIONS), "sum (Du) or mean (Zou) of the loss over examples",
        program=CHUNK)
    optimizer: tuple[str, ...] = _field(
        ("gd",), check.one_of(OPTIMIZERS), "gd: full batch; sgd: batches of batch_size drawn "
        "from the run's own key (optax)", swept=True, program=CHUNK)
    momentum: float = _field(
        0.0, check.number(0.0, 1.0), "heavy-ball momentum (0: none)", program=NONZERO)
    lr: tuple[float | str, ...] = _field(
        (0.1,), check.step_size, "step size, or 'theory' (squared loss only)", swept=True)
    lr_scaling: str = _field(
        "constant", check.one_of(LR_SCALINGS), "constant, or inverse_width: the step size is lr "
        "/ width (width-stable for zou and standard)")
    batch_size: tuple[int, ...] = _field(
        (16,), check.integer(), "SGD batch size (GD: n)", swept=True, used_when=SGD_ONLY)
    arch: tuple[str, ...] = _field(
        ("mlp",), check.arch, "the network: mlp (overparam/model.py), cnn or resnet "
        "(overparam/modules.py), or a flax module 'pkg.mod:Class' (protocol: "
        "overparam/networks.py)", swept=True, identity=LATER, program=INIT)
    param: tuple[str, ...] = _field(
        ("du",), check.one_of(PARAMS), "du, zou, ntk, standard or mup (formulas in "
        "overparam/model.py)", swept=True, program=INIT)
    train_output: bool = _field(
        False, check.boolean, "also train the output layer", program=INIT)
    output_scale: tuple[float, ...] = _field(
        (1.0,), check.number(0.0, open_low=True), "alpha: the model is alpha f and the loss is "
        "divided by alpha^2 (Chizat et al. 2019; large: lazy, small: rich)", swept=True,
        identity=LATER)
    center_output: bool = _field(
        False, check.boolean, "train alpha (f - f(0)): the centered model, whose output starts "
        "at 0 (lazy at large alpha)", identity=LATER, program=INIT)
    steps: int = _field(
        200, check.integer(), "optimizer steps")
    record_every: int = _field(
        1, check.integer(), "record every this many steps (and step 0)", identity=False,
        program=CHUNK)
    chunk_steps: int = _field(
        100, check.integer(), "steps per compiled chunk (at most)", identity=False)
    precision: str = _field(
        "highest", check.one_of(PRECISIONS), "matmul precision of training (forward and "
        "backward): highest, high or default (TF32 on a GPU, bfloat16 passes on a TPU); "
        "measure_precision is the measurements'", program=INIT)
    dtype: str = _field(
        "float32", check.one_of(DTYPES), "float32 or float64", program=INIT)
    power_tol: float = _field(
        1e-6, check.number(0.0, 0.1, open_low=True), "relative tolerance of the spectral-norm "
        "iteration", identity=False, program=CHUNK)
    power_max_iters: int = _field(
        100, check.integer(), "iterations of the spectral norm at most", identity=False,
        program=CHUNK)
    regression_tol: float = _field(
        1e-2, check.number(0.0, open_low=True), "a real-valued target counts as an error when "
        "its residual exceeds this", identity=False, used_when=REAL_TARGETS, program=CHUNK)
    memory_budget_mb: float = _field(
        0.0, check.number(0.0), "device memory per compiled program in MiB (0: 60% of the "
        "accelerator's free memory, 30% of RAM on the CPU)", identity=False)
    checkpoint_seconds: float = _field(
        60.0, check.number(0.0), "a batch is checkpointed once this many seconds have passed "
        "since its last checkpoint, and 20 times the last one's duration (0: after every chunk)",
        identity=False)
    gram_every: int = _field(
        0, check.integer(low=0), "NTK Gram statistics every this many steps (0: off)",
        identity=False, program=NONZERO)
    sharpness_every: int = _field(
        0, check.integer(low=0), "the loss Hessian's top eigenvalue every this many steps (0: "
        "off)", identity=False, program=NONZERO)
    sharpness_iters: int = _field(
        20, check.integer(), "Lanczos iterations (Hessian-vector products) of each sharpness",
        identity=False, used_when=SHARPNESS_ON, program=CHUNK)
    measure_precision: str = _field(
        "highest", check.one_of(PRECISIONS), "matmul precision of the measurements (radii, the "
        "norms of W(0), Gram, sharpness; TF32 fakes small radii); `precision` is training's: "
        "precision='high' trains in TF32 on a GPU and still measures in float32", identity=False,
        program=INIT)
    linear_twin: bool = _field(
        False, check.boolean, "train each network's linearization at theta_0 beside it (same "
        "optimizer, steps, batches) and record ||f - f_lin|| and its loss (steps' lin_ "
        "columns; about doubles a step)", identity=False, program=INIT)
    infinite_width: bool = _field(
        False, check.boolean, "record ||u(t) - u_inf(t)||, u_inf kernel GD with H^inf (steps' "
        "inf_distance; the mlp under du, zou or ntk, squared loss, GD: NaN for other runs)",
        identity=False, used_when=KERNEL_GD, program=INIT)
    track_features: bool = _field(
        False, check.boolean, "record per hidden layer the RMS of h_l and of h_l - h_l(0) over "
        "the training inputs (layers' feature_ columns: feature movement, coordinate check)",
        identity=False, program=INIT)
    coord_steps: int = _field(
        3, check.integer(), "the coordinate check's figure: the first this many steps after "
        "step 0 (recorded ones)", identity=False, used_when=FEATURES_ON)
    track_alignment: bool = _field(
        False, check.boolean, "record the centered kernel-target alignment A(t) of each Gram "
        "step (steps' kernel_alignment)", identity=False, used_when=GRAM_ON, program=CHUNK)
    power_iters: int = _field(
        16, check.integer(), "spectral-norm iterations per record on a GPU or TPU: a fixed "
        "count, warm-started (the CPU stops at power_tol)", identity=False, program=CHUNK)

    @property
    def sign_labels(self) -> bool:
        """True when labels are +-1 (classification error and margins apply)."""
        return digits.sign_labels(self.labels, self.digits_task)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}


FIELDS = dataclasses.fields(Sweep)
DEFAULTS: dict[str, Any] = {f.name: f.default for f in FIELDS}
SWEPT = tuple(f.name for f in FIELDS if f.metadata["swept"])
# Fields that change what is recorded or how the work is split, not what is trained.
NOT_IDENTITY = tuple(f.name for f in FIELDS if not f.metadata["identity"])
# Identity fields added after run_ids were first published (their identity is LATER).
# (digits_task enters a run's identity through the dataset_id, and only for digits.)
LATER_IDENTITY = tuple(f.name for f in FIELDS if f.metadata["identity"] == LATER)


def run_name(f: dataclasses.Field) -> str:
    """The name of one run's value of a field: its `one` (width for widths), else its own."""
    return f.metadata["one"] or f.name


RUN_NAMES = {f.name: run_name(f) for f in FIELDS if f.metadata["swept"]}  # swept -> a run's


def default_value(field: str) -> Any:
    """A field's default as one run holds it (the element of a swept field's default)."""
    default = DEFAULTS[field]
    return default[0] if field in SWEPT else default


def program_fields(fields: tuple[dataclasses.Field, ...] = FIELDS
                   ) -> tuple[tuple[str, type, Any, str], ...]:
    """The fields that a compiled program reads (their `program`), as train.Static's:
    (name of one run's value, its type, its default, `program`). The default is the
    default sweep's (the first element of a swept default; d's automatic 0 is the
    synthetic sets' SYNTHETIC_D: `digits.resolve_automatic`)."""
    resolved = {f.name: f.default for f in fields}
    digits.resolve_automatic(resolved)
    out = []
    for f in fields:
        if f.metadata["program"]:
            value = resolved[f.name][0] if f.metadata["swept"] else resolved[f.name]
            out.append((run_name(f), type(value), value, f.metadata["program"]))
    return tuple(out)


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
