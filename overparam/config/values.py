"""The values a config field may take: the vocabularies and the checks of one value.

Owns `ConfigError` (a bad field: one line naming it) and each check of a single
value (`Check`: (field, value) -> the value, or raises ConfigError), with the
vocabularies they allow (PARAMS, LOSSES, PRECISIONS, ...). The field
declarations (`fields.py`) name a check for each field; nothing here knows of
another field.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

PARAMS = ("du", "zou", "ntk", "standard", "mup")
LOSSES = ("squared", "hinge", "squared_hinge", "exponential", "logistic")
CLASSIFICATION_LOSSES = LOSSES[1:]
OPTIMIZERS = ("gd", "sgd")
DATASETS = ("sphere", "zou", "digits")
LABELS = ("auto", "gaussian", "random_sign", "teacher", "teacher_regression", "task")
SIGN_LABELS = ("random_sign", "teacher")  # and 'task' but for digits_task 'value'
REDUCTIONS = ("sum", "mean")
LR_SCALINGS = ("constant", "inverse_width")
# matmul precisions, as XLA names them in lower case (model.PRECISIONS maps each to XLA's)
PRECISIONS = ("highest", "high", "default")
DTYPES = ("float32", "float64")
ARCHS = ("mlp", "cnn", "resnet")  # and a flax module 'pkg.mod:Class'
CONV_ARCHS = ("cnn", "resnet")
CONV_PARAMS = ("ntk", "standard", "mup")


class ConfigError(ValueError):
    """A bad config field; str(err) is one line naming the field."""

    def __init__(self, field: str | None, message: str):
        super().__init__(f"config.{field}: {message}" if field else f"config: {message}")
        self.field = field


Check = Callable[[str, Any], Any]  # (field, value) -> the value, or raises ConfigError


def integer(low: int = 1) -> Check:
    def check(field: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(field, f"must be an integer >= {low}, got {value!r}")
        if value < low:
            raise ConfigError(field, f"must be an integer >= {low}, got {value}")
        return int(value)
    return check


def number(low: float = -math.inf, high: float = math.inf, *, open_low: bool = False) -> Check:
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


def one_of(allowed: tuple[str, ...]) -> Check:
    def check(field: str, value: Any) -> str:
        if value not in allowed:
            raise ConfigError(field, f"unknown value {value!r}; allowed: {', '.join(allowed)}")
        return value
    return check


def boolean(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(field, f"must be True or False, got {value!r}")
    return value


def dir_name(field: str, value: Any) -> str:
    if not isinstance(value, str) or not value or "/" in value or value.startswith("."):
        raise ConfigError(field, f"must be a plain directory name, got {value!r}")
    return value


def step_size(field: str, value: Any) -> float | str:
    return value if value == "theory" else number(0.0, open_low=True)(field, value)


def dimension(field: str, value: Any) -> int:
    if value == 0:
        return 0
    return integer(low=2)(field, value)


def arch(field: str, value: Any) -> str:
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
