"""The digits' facts: scikit-learn's digit images, their tasks and what they can give.

Owns the counts of each digit's images, the digits' and the synthetic sets'
dimensions, a task's pool of images (`task_pool`), the check of a task's name,
whether a sweep's labels are +-1 (`sign_labels`: a digits task may be a
regression), the held-out points of a training set (`held_out_points`) and the
cross-field checks of the digits' fields (`check_digits`).
"""

from __future__ import annotations

from typing import Any

from overparam.config.values import SIGN_LABELS, ConfigError

# scikit-learn's digits (overparam/data.py): images of each digit 0..9, 8x8 pixels.
DIGIT_COUNTS = (178, 182, 177, 183, 181, 182, 181, 179, 174, 180)
DIGITS_D = 64
SYNTHETIC_D = 16    # d = 0 (the default) is this for the synthetic sets, DIGITS_D for digits
TEST_CAP = 1000     # n_test = -1 (automatic) takes every other image of a task, at most this


def digit_pair(task: str) -> tuple[int, int] | None:
    """(a, b) of a digits task 'aVb' (images of digits a, label +1, and b, label -1); None
    for 'even_odd' and 'value'."""
    if len(task) == 3 and task[1] in "vV" and task[0].isdigit() and task[2].isdigit():
        return int(task[0]), int(task[2])
    return None


def digits_task(field: str, value: Any) -> str:
    """The check of a digits task: 'aVb' for two different digits, 'even_odd' or 'value'."""
    pair = digit_pair(value) if isinstance(value, str) else None
    if value in ("even_odd", "value") or (pair and pair[0] != pair[1]):
        return value
    raise ConfigError(field, f"unknown task {value!r}; allowed: 'aVb' for two different digits "
                      "a, b (e.g. '0v1', '3v8'), 'even_odd', 'value'")


def task_pool(task: str) -> int:
    """How many digits images a task draws from: those of its two digits, or all."""
    pair = digit_pair(task)
    return DIGIT_COUNTS[pair[0]] + DIGIT_COUNTS[pair[1]] if pair else sum(DIGIT_COUNTS)


def sign_labels(labels: str, tasks: tuple[str, ...]) -> bool:
    """Whether labels are +-1: 'random_sign', 'teacher', or a digits task but 'value'."""
    return labels in SIGN_LABELS or (labels == "task" and "value" not in tasks)


def resolve_automatic(s: dict[str, Any]) -> None:
    """labels 'auto' and d = 0 become the dataset's own: 'task' and 64 for digits, 'gaussian'
    and 16 for the synthetic sets (a Sweep, its manifest and its run_ids hold the values)."""
    is_digits = s["dataset"] == "digits"
    if s["labels"] == "auto":
        s["labels"] = "task" if is_digits else "gaussian"
    if s["d"] == 0:
        s["d"] = DIGITS_D if is_digits else SYNTHETIC_D


def tasks(s) -> tuple[str, ...]:
    """The digits tasks of a sweep; ('',) for a synthetic dataset (digits_task ignored)."""
    return s.digits_task if s.dataset == "digits" else ("",)


def held_out_points(s, n: int, task: str) -> int:
    """The held-out test points of a training set of n: n_test (0: none), or where it is -1
    every other image of the digits task (at most TEST_CAP), n for the synthetic sets."""
    if s.n_test >= 0:
        return s.n_test
    return min(task_pool(task) - n, TEST_CAP) if s.dataset == "digits" else n


def check_digits(s: dict[str, Any]) -> None:
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
