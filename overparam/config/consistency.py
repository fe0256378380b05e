"""Validation: a config's fields checked one by one, then against each other.

Owns `validate` (a ConfigDict -> a frozen `Sweep`, or one ConfigError), the
parsing of swept values typed on the command line (`_as_tuple`) and the checks
that involve several fields (`check_consistency`: where a field is used, the
seeds' range, the step sizes, the losses' labels, the archs' params; the
digits' own are `digits.check_digits`).
"""

from __future__ import annotations

import ast
import math
from collections.abc import Mapping
from typing import Any

from overparam.config import digits
from overparam.config.fields import DEFAULTS, FIELDS, Sweep
from overparam.config.values import CLASSIFICATION_LOSSES, CONV_ARCHS, CONV_PARAMS, ConfigError

SEED_LIMIT = 2**32  # seeds are uint32 (trainstate.RunScalars)


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
    digits.resolve_automatic(s)
    check_consistency(s)
    return Sweep(**s)


def check_used(s: dict[str, Any]) -> None:
    """Refuses a field set away from its default where the sweep does not use it (its
    `used_when`): digits_task without digits, batch_size without sgd, ..."""
    for f in FIELDS:
        used = f.metadata["used_when"]
        if used and s[f.name] != f.default and not used.applies(s):
            got = ", ".join(f"{k}={s[k]!r}" for k in used.on)
            raise ConfigError(f.name, f"is used only with {used.what}, got {got}; leave it at "
                              f"its default {f.default!r}")


def check_consistency(s: dict[str, Any]) -> None:
    check_used(s)
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
    digits.check_digits(s)
    check_archs(s)
    for loss in s["loss"]:
        if loss in CLASSIFICATION_LOSSES and not digits.sign_labels(s["labels"], s["digits_task"]):
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


def check_archs(s: dict[str, Any]) -> None:
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
