"""The results schema: every column of every table, its type and its meaning.

Owns the names and types of the columns of runs.parquet, steps/, layers/ and
datasets/ (docs/DESIGN.md section 3). The engine's writers build their tables
through `table`, so a file holds exactly these types; `overparam.load` checks
every file against them (`check`); the manifest records `VERSION`; the
columns of docs/results.md are `markdown()` (a test keeps the two equal). It never
computes a value.

Measurements (FLOAT columns) are stored in the sweep's dtype (float32 unless
dtype = 'float64'); `schema_of(name, dtype)` gives a table's exact schema. A
column's doc is in its field metadata (b'doc'), also inside every file:
`pyarrow.parquet.read_schema(path).field('loss').metadata`.
"""

from __future__ import annotations

import dataclasses

import pandas as pd
import pyarrow as pa

from overparam import config

VERSION = 7  # 1: before the schema was versioned (no key tags); 2: before mup, output
# scaling and sharpness; 3: before the test split; 4: before the architectures; 5: before
# measure_precision and power_iters (every config field is in the manifest, and checked); 6:
# before the linearized twin and the other optional columns (OPTIONAL)

FLOAT = pa.float32()  # placeholder of a measurement column: becomes the sweep's dtype
ID = pa.large_string()


def _schema(*columns: tuple[str, pa.DataType, str]) -> pa.Schema:
    return pa.schema([pa.field(name, kind, metadata={"doc": doc}) for name, kind, doc in columns])


# The types and meanings of runs.parquet's first columns: the fields of config.Run, a
# run's grid point and identity (`run_columns`).
_RUN = {name: (kind, doc) for name, kind, doc in (
    ("run_id", ID, "the run's identity: a hash of every setting that changes what is trained"),
    ("seed", pa.int64(), "the seed its training set and random draws derive from"),
    ("width", pa.int64(), "hidden width m"),
    ("depth", pa.int64(), "hidden layers L"),
    ("n", pa.int64(), "training points"),
    ("d", pa.int64(), "input dimension"),
    ("loss", ID, "squared, hinge, squared_hinge, exponential or logistic"),
    ("optimizer", ID, "gd (full batch) or sgd"),
    ("lr", pa.float64(), "the step size used: lr_base, or lr_base / width (lr_scaling), or the "
     "theory step size"),
    ("lr_base", pa.float64(), "the config's lr (NaN for 'theory')"),
    ("lr_spec", ID, "the config's lr as written: a number or 'theory'"),
    ("batch_size", pa.int64(), "examples per step (n for gd)"),
    ("arch", ID, "the network: mlp, cnn, resnet, or a flax module 'pkg.mod:Class'"),
    ("param", ID, "parameterization: du, zou, ntk, standard or mup (mup: layer l steps by lr "
     "times model.lr_multipliers)"),
    ("output_scale", pa.float64(), "alpha: the model is alpha f (alpha (f - f(0)) with "
     "center_output), the objective its loss / alpha^2"),
    ("dataset_id", ID, "the training set (datasets/<dataset_id>.parquet)"),
    ("digits_task", ID, "digits' labelling task: 'aVb', 'even_odd' or 'value' ('' for the "
     "synthetic sets)"),
    ("n_test", pa.int64(), "held-out test points drawn with the training set"),
    ("init_tag", pa.int64(), "uint32 tag of the initial weights: the network's key is "
     "split(fold_in(PRNGKey(seed), init_tag))[0]"),
    ("batch_tag", pa.int64(), "uint32 tag of the SGD batches: step t's key is "
     "fold_in(fold_in(PRNGKey(seed), batch_tag), t)"),
)}
_KINDS = {bool: pa.bool_(), int: pa.int64(), float: pa.float64(), str: ID}


def run_columns(run_class: type = config.Run,
                fields: tuple = config.FIELDS) -> tuple[tuple[str, pa.DataType, str], ...]:
    """runs.parquet's columns of a run's grid point and identity: one per field of
    `run_class` (config.run_class of the declarations `fields`), in its order; a swept
    field's that _RUN does not know is typed by its declared default and documented by
    its declaration."""
    declared = {config.run_name(f): f for f in fields if f.metadata["swept"]}
    out = []
    for f in dataclasses.fields(run_class):
        if f.name in _RUN:
            out.append((f.name, *_RUN[f.name]))
        else:
            field = declared[f.name]
            out.append((f.name, _KINDS[type(field.default[0])], field.metadata["doc"]))
    return tuple(out)


RUNS = _schema(
    *run_columns(),
    ("status", ID, "ok; diverged (a non-finite loss or gradient); running (its batch is "
     "not finished: runs.parquet is rewritten as batches finish)"),
    ("diverged_step", pa.int64(), "first recorded step with a non-finite loss or gradient "
     "(null if none)"),
    ("steps_to_zero_error", pa.int64(), "first recorded step with train_error = 0 (null if never)"),
    ("final_loss", pa.float64(), "loss at the last step (NaN if diverged)"),
    ("steps", pa.int64(), "training steps"),
    ("dataset", ID, "sphere, zou or digits"),
    ("labels", ID, "gaussian, random_sign, teacher, teacher_regression or task (digits')"),
    ("reduction", ID, "the loss over examples: sum or mean"),
    ("momentum", pa.float64(), "heavy-ball momentum (0: plain GD/SGD)"),
    ("lr_scaling", ID, "constant or inverse_width"),
    ("train_output", pa.bool_(), "whether the output layer is trained"),
    ("center_output", pa.bool_(), "whether the model is centered: alpha (f - f(0))"),
    ("precision", ID, "matmul precision: highest, high or default"),
    ("dtype", ID, "float32 or float64"),
    ("separation", pa.float64(), "min ||x_i - x_j|| over y_i != y_j (NaN for real labels)"),
    ("lambda0", pa.float64(), "lambda_min(H^inf) of the run's training set and architecture "
     "(normalization of theory.gram_inf)"),
    ("arora_bound", pa.float64(), "sqrt(2 y^T (H^inf)^-1 y / n) of the run's training set: "
     "Arora et al. 2019's measure for du at depth 1 (output fixed), otherwise the same "
     "expression with the analytic kernel of theory.gram_inf (NaN if H^inf is singular)"),
)

STEPS = _schema(
    ("run_id", ID, "the run (runs.run_id)"),
    ("step", pa.int64(), "recorded step t (0: initialization)"),
    ("loss", FLOAT, "full-batch loss of the model's output alpha f, with the sweep's "
     "reduction (GD minimizes loss / alpha^2)"),
    ("train_error", FLOAT, "0-1 error (+-1 labels), else the fraction of |f - y| > "
     "regression_tol"),
    ("min_margin", FLOAT, "min_i y_i f(x_i) (+-1 labels; NaN otherwise)"),
    ("grad_norm", FLOAT, "norm of the gradient of the step from t (minibatch for sgd)"),
    ("radius_output", FLOAT, "||a(t) - a(0)||_2 (0 unless train_output)"),
    ("gram_lambda_min", FLOAT, "lambda_min(H(t)) (Gram steps; NaN otherwise)"),
    ("gram_lambda_max", FLOAT, "lambda_max(H(t)) (Gram steps; NaN otherwise)"),
    ("gram_change", FLOAT, "||H(t) - H(0)||_2 (Gram steps; NaN otherwise)"),
    ("gram_init_error", FLOAT, "||H(0)/s - H^inf||_2 (Gram steps; NaN otherwise)"),
    ("sharpness", FLOAT, "lambda_max of the Hessian of the full-batch objective w.r.t. the "
     "trained weights (mup: of M^1/2 Hess M^1/2, M the step-size multipliers) (sharpness "
     "steps; NaN otherwise)"),
    ("test_loss", FLOAT, "loss on the held-out test points, in the units of loss (the sum "
     "reduction: n / n_test times their sum)"),
    ("test_error", FLOAT, "train_error's measure on the held-out test points"),
)

LAYERS = _schema(
    ("run_id", ID, "the run (runs.run_id)"),
    ("step", pa.int64(), "recorded step t"),
    ("layer", pa.int64(), "hidden layer l, from 1"),
    ("radius_spectral", FLOAT, "||W_l(t) - W_l(0)||_2 of the layer's weight as a matrix, a "
     "row per output unit (a convolution's kernel as (c_out, kh kw c_in))"),
    ("radius_frobenius", FLOAT, "||W_l(t) - W_l(0)||_F"),
    ("radius_rowmax", FLOAT, "max_r ||w_r(t) - w_r(0)||_2"),
    ("radius_operator", FLOAT, "||W_l(t) - W_l(0)||_op of a convolution as the linear map of "
     "its input (stride 1, 'SAME' padding); NaN for a dense layer, whose operator norm is "
     "radius_spectral"),
    ("flip_frac", FLOAT, "fraction of (example, neuron) pairs whose sign of z_l differs from "
     "step 0"),
    ("init_spectral", FLOAT, "||W_l(0)||_2 (the same matrix)"),
)

DATASETS = _schema(
    ("dataset_id", ID, "the training set (runs.dataset_id)"),
    ("split", ID, "train (the points trained on) or test (the held-out points)"),
    ("index", pa.int64(), "the point's index i within its split"),
    ("x", pa.list_(FLOAT), "x_i, d values (a fixed-size list of d)"),
    ("y", FLOAT, "label or target y_i"),
)

TABLES = {"runs.parquet": RUNS, "steps": STEPS, "layers": LAYERS, "datasets": DATASETS}

# Optional measurement columns (docs/THEORY.md section 10): a table has one only where the
# sweep's field (a config field, boolean) is on, after the table's own columns and in this
# order; a sweep that asks for none writes exactly the columns above. (name, doc, field)
OPTIONAL = {
    "steps": (
        ("lin_distance", "||g(t) - g_lin(t)||_2 on the training points: the network's output "
         "against its linearized twin's (g: the model's output alpha f)", "linear_twin"),
        ("lin_distance_rel", "lin_distance / ||g(t) - g(0)||_2 (NaN at step 0)", "linear_twin"),
        ("lin_distance_test", "lin_distance on the held-out test points (NaN without them)",
         "linear_twin"),
        ("lin_distance_test_rel", "lin_distance_test / ||g(t) - g(0)||_2 there",
         "linear_twin"),
        ("lin_loss", "the linearized twin's full-batch loss, loss's measure", "linear_twin"),
        ("inf_distance", "||g(t) - g_inf(t)||_2 on the training points, g_inf kernel GD with "
         "s H^inf from g(0) (NaN but for the mlp under du, zou or ntk, squared loss, GD)",
         "infinite_width"),
        ("kernel_alignment", "centered kernel-target alignment <C H C, C y y^T C>_F / "
         "(||C H C||_F ||C y||^2), C = I - 11^T/n (Gram steps; NaN otherwise)",
         "track_alignment"),
    ),
    "layers": (
        ("feature_rms", "RMS of the coordinates of h_l(t) = relu(z_l(t)) over the training "
         "inputs (every example, position and unit)", "track_features"),
        ("feature_change_rms", "RMS of the coordinates of h_l(t) - h_l(0), likewise",
         "track_features"),
    ),
}


def measured(name: str) -> tuple[str, ...]:
    """The measurement (FLOAT) columns of table `name`, in order: what train records (not
    the optional ones, `optional`)."""
    return tuple(f.name for f in TABLES[name] if f.type == FLOAT)


def optional(name: str, fields) -> tuple[str, ...]:
    """The optional columns of table `name` that a sweep has, in order: those whose field is
    on in `fields` (a mapping, e.g. a manifest's config, or an object with the fields as
    attributes, e.g. a config.Sweep or a train.Static; a field it lacks is off)."""
    get = (fields.get if hasattr(fields, "get") else
           lambda k, default: getattr(fields, k, default))
    return tuple(col for col, _, field in OPTIONAL.get(name, ()) if get(field, False))


def _is_list(kind: pa.DataType) -> bool:
    return pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind)


def _resolve(kind: pa.DataType, dtype: str, d: int | None) -> pa.DataType:
    if kind == FLOAT:
        return pa.float64() if dtype == "float64" else pa.float32()
    if _is_list(kind):
        item = _resolve(kind.value_type, dtype, d)
        return pa.list_(item, d) if d is not None else pa.list_(item)
    return kind


def schema_of(name: str, dtype: str = "float32", *, d: int | None = None,
              extra: tuple[str, ...] = ()) -> pa.Schema:
    """The exact schema of table `name` ('runs.parquet', 'steps', 'layers', 'datasets')
    in a sweep of `dtype`; d: the datasets' input dimension (x is a list of d); extra: the
    optional columns it has (`optional`)."""
    docs = {col: doc for col, doc, _ in OPTIONAL.get(name, ())}
    unknown = [c for c in extra if c not in docs]
    if unknown:
        raise ValueError(f"{name}: {unknown[0]!r} is not an optional column")
    base = list(TABLES[name]) + [pa.field(c, FLOAT, metadata={"doc": docs[c]})
                                 for c in docs if c in extra]
    return pa.schema([f.with_type(_resolve(f.type, dtype, d)) for f in base],
                     metadata={"overparam_schema": str(VERSION)})


def table(name: str, columns, dtype: str = "float32", *, d: int | None = None,
          extra: tuple[str, ...] = ()) -> pa.Table:
    """The pyarrow table of `columns` (a DataFrame, or {column: array}) in exactly
    schema_of(name, dtype), with pandas' metadata (nullable integer columns read back
    as Int64). NaN in a float column is stored as null.

    Raises ValueError where a column is missing or extra, or holds values that do not
    convert to its type (a string for a number); a float64 measurement is rounded to a
    float32 column like any cast. Either is a bug of the writer, never the user's input.
    """
    frame = columns if isinstance(columns, pd.DataFrame) else pd.DataFrame(dict(columns))
    schema = schema_of(name, dtype, d=d, extra=extra)
    if list(frame.columns) != schema.names:
        raise ValueError(f"{name}: columns {list(frame.columns)} are not the schema's "
                         f"{schema.names}")
    return pa.Table.from_pandas(frame, schema=schema, preserve_index=False)


def check(name: str, found: pa.Schema, dtype: str, *, d: int | None = None,
          extra: tuple[str, ...] = ()) -> str | None:
    """Why the schema `found` of a file of table `name` is not the schema of a sweep of
    `dtype` (one line naming the first column that differs), or None if it is.
    d: the sweep's input dimension, the length of a dataset's x (None: any length); extra:
    the sweep's optional columns of the table (`optional`)."""
    want = schema_of(name, dtype, d=d, extra=extra)
    if found.names != want.names:
        missing = [c for c in want.names if c not in found.names]
        extra = [c for c in found.names if c not in want.names]
        what = f"lacks column {missing[0]!r}" if missing else (
            f"has column {extra[0]!r}, not in the schema" if extra else "has its columns in "
            "another order")
        return what
    for f, w in zip(found, want):
        same = f.type == w.type or (d is None and _is_list(w.type) and _is_list(f.type)
                                    and f.type.value_type == w.type.value_type)
        if not same:
            return f"column {f.name!r} is {f.type}, not {w.type}"
    return None


def markdown() -> str:
    """docs/results.md's columns: one table per file, a row per column with its doc."""
    lines = []
    for name, sch in TABLES.items():
        lines += [f"`{name}`:", "", "| column | type | meaning |", "|---|---|---|"]
        for f in sch:
            kind = "float (the sweep's dtype)" if f.type == FLOAT else (
                "list of float" if _is_list(f.type) else
                {ID: "string"}.get(f.type, str(f.type)))
            lines.append(f"| `{f.name}` | {kind} | {f.metadata[b'doc'].decode()} |")
        for col, doc, field in OPTIONAL.get(name, ()):
            lines.append(f"| `{col}` | float (the sweep's dtype) | {doc} (only with `{field}`)"
                         " |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":  # docs/results.md's columns: python -m overparam.schema
    print(markdown(), end="")
