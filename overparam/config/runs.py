"""Expansion into runs: the grid of a sweep, each run's identity and its training set's.

Owns `Run` (one trained network), the grid's axes (`grid`: the seeds and the
swept fields, outermost first), its size (`num_networks`, the product that
`expand` iterates), `expand` and the identities: `stable_hash`, a training
set's (`data_identity`, `dataset_id`) and a run's (its run_id and key tags).
Each run carries its identity, so its result does not depend on which runs it
is grouped with. A swept field declared in `fields.py` reaches the grid, `Run`
(`run_class`) and a run's identity without a change here.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from overparam.config.digits import held_out_points, tasks
from overparam.config.fields import LATER, Sweep, run_name


@dataclasses.dataclass(frozen=True)
class Run:
    """One trained network: its grid point and its identity (its fields, in this order,
    are runs.parquet's first columns: `schema.RUNS`).

    Its random draws derive from PRNGKey(seed) and its two tags (trainstate.derive_keys):
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
    arch: str
    param: str
    output_scale: float
    dataset_id: str
    digits_task: str  # digits' labelling task ('' for the synthetic sets)
    n_test: int       # held-out test points drawn with the training set
    init_tag: int   # uint32 hash of (width, depth, param, d, train_output, dtype)
    batch_tag: int  # uint32 hash of (n, batch_size)


@functools.cache
def run_class(sweep_class: type = Sweep) -> type:
    """`Run`, with a field (after its own) for each swept field of `sweep_class` that it
    lacks (one run's value, by its run name): Run itself for `Sweep`."""
    have = {f.name for f in dataclasses.fields(Run)}
    extra = [(run_name(f), Any) for f in dataclasses.fields(sweep_class)
             if f.metadata["swept"] and run_name(f) not in have]
    return dataclasses.make_dataclass("Run", extra, bases=(Run,), frozen=True) if extra else Run


def grid_point(sweep_class: type = Sweep) -> tuple[str, ...]:
    """A run's grid point: the run names of the swept fields (width for widths, ...), in
    the order of the run's fields (runs.parquet's columns)."""
    swept = {run_name(f) for f in dataclasses.fields(sweep_class) if f.metadata["swept"]}
    return tuple(f.name for f in dataclasses.fields(run_class(sweep_class)) if f.name in swept)


GRID_POINT = grid_point()


def stable_hash(*parts: Any, nbytes: int = 8) -> int:
    """A hash of `parts` that is the same in every process and Python version."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=nbytes).digest(), "big")


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


# The grid's axes, outermost first: the order runs are expanded in (and so a batch's
# runs). A swept field not named here is an axis after them, in declaration order.
ORDER = ("num_seeds", "n", "digits_task", "arch", "widths", "depths", "param", "loss",
         "optimizer", "lr", "output_scale")


def grid(s: Sweep) -> dict[str, Sequence]:
    """The grid's axes, each named by the field that sets it, in ORDER: the seeds
    (num_seeds: seed, seed+1, ...), the digits tasks (`tasks`) and every other swept
    field's values. batch_size is not an axis but the optimizer's (`batch_sizes`)."""
    swept = [f.name for f in dataclasses.fields(s)
             if f.metadata["swept"] and f.name != "batch_size"]
    names = [k for k in ORDER if k == "num_seeds" or k in swept]
    names += [k for k in swept if k not in names]
    own = {"num_seeds": range(s.seed, s.seed + s.num_seeds), "digits_task": tasks(s)}
    return {k: own[k] if k in own else getattr(s, k) for k in names}


def batch_sizes(s: Sweep, optimizer: str, n: int) -> tuple[int, ...]:
    """The batch sizes of an optimizer at n training points: SGD sweeps batch_size, GD takes
    the full batch (n)."""
    return s.batch_size if optimizer == "sgd" else (n,)


def grid_sizes(s: Sweep) -> dict[str, int]:
    """Each factor of the grid, by the field that sets it (networks: their product): the
    axes' lengths, the optimizers' counting each one's batch sizes."""
    sizes = {k: len(v) for k, v in grid(s).items()}
    sizes["optimizer"] = sum(len(batch_sizes(s, o, 0)) for o in s.optimizer)
    return sizes


def num_networks(s: Sweep) -> int:
    """How many networks `expand(s)` gives, without expanding it."""
    return math.prod(grid_sizes(s).values())


def expand(s: Sweep) -> list[Run]:
    """All runs of the sweep, in a fixed order (`grid`'s, each optimizer's batch sizes
    innermost).

    GD runs use the full batch (batch_size = n); SGD runs sweep `batch_size`.
    Random streams are shared where that makes comparisons paired: runs that
    differ only in lr (or loss, optimizer) start from the same weights, and
    runs with the same seed and n train on the same data.

    A run's identity (its run_id): its seed, grid point, batch size and dataset_id, and
    the sweep's other identity fields; digits_task enters it through the dataset_id, and
    a LATER field only where it is off its default.
    """
    fields = dataclasses.fields(s)
    names = {f.name: run_name(f) for f in fields if f.metadata["swept"]}
    identity = [f.name for f in fields if f.metadata["swept"] and f.metadata["identity"]
                and f.name not in ("digits_task", "batch_size")]
    later = {run_name(f): f.default[0] if f.metadata["swept"] else f.default
             for f in fields if f.metadata["identity"] == LATER}
    fixed = {k: v for k, v in s.to_dict().items()
             if k not in names and k not in {f.name for f in fields if not f.metadata["identity"]}}
    make = run_class(type(s))
    axes = grid(s)
    runs = []
    for values in itertools.product(*axes.values()):
        p = dict(zip(axes, values))
        seed, n, task, width, lr = p["num_seeds"], p["n"], p["digits_task"], p["widths"], p["lr"]
        point = {names[k]: v for k, v in p.items() if k in names}
        for batch in batch_sizes(s, p["optimizer"], n):
            did = dataset_id(data_identity(s, seed=seed, n=n, task=task))
            init_tag = stable_hash("init", width, p["depths"], p["param"], s.d, s.train_output,
                                   s.dtype, nbytes=4)
            batch_tag = stable_hash("batches", n, batch, nbytes=4)
            ident = dict(seed=seed, **{names[k]: p[k] for k in identity}, batch_size=batch,
                         dataset_id=did, **fixed)
            ident = {k: v for k, v in ident.items() if k not in later or v != later[k]}
            base = math.nan if lr == "theory" else lr
            step_size = base / width if s.lr_scaling == "inverse_width" else base
            runs.append(make(**{**point, "run_id": f"{stable_hash(ident):016x}", "seed": seed,
                                "d": s.d, "lr": step_size, "lr_base": base, "lr_spec": str(lr),
                                "batch_size": batch, "dataset_id": did,
                                "n_test": held_out_points(s, n, task),
                                "init_tag": init_tag, "batch_tag": batch_tag}))
    return runs
