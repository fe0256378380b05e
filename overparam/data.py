"""Training sets and their held-out test points: the unit sphere (Du et al.), Zou et al.'s
construction, and scikit-learn's digit images.

Every set is a pure function of its identity (`config.data_identity`): the
NumPy generator is seeded from a stable hash of it, so the same seed and n give
the same points in every run, process and chunking. Points have unit norm.
The n_test held-out points continue the same draw after the training set: they
never change the training set, and a larger n_test only adds points.

  sphere: x uniform on the unit sphere S^{d-1}  (Du et al. 2018, section 6).
  zou:    x = (sqrt(1 - mu^2) u, mu), u uniform on S^{d-2}: unit norm with a
          fixed last coordinate mu that acts as a bias (Zou et al. 2018,
          Assumption 3.1).
  digits: scikit-learn's digits (1,797 images of 8x8 pixels, 0..16, of the digits
          0-9: the test set of UCI's optical recognition of handwritten digits),
          each flattened to 64 values, centered by subtracting the mean image of
          all 1,797 and normalized to unit norm, as the theory's inputs are
          (||x|| = 1; THEORY.md section 8). A task's pool is the images of its two
          digits ('aVb') or all of them ('even_odd', 'value'); each seed draws a
          random order of the pool without replacement: the first n are the
          training set, the next n_test the test set, disjoint by construction.
          Labels 'task': +1 for digit a and -1 for b ('aVb'), +1 for an even digit
          ('even_odd'), or the digit standardized by the mean and standard deviation
          of all 1,797 ('value', a regression target); any other labels are drawn
          for the images as for the synthetic points (random_sign: Arora et al.
          2019's random-label control).
          scikit-learn is their source because it ships them inside its wheel (no
          download at run time, which this project's machines cannot do), pinned
          with its version, behind a stable loader; copying the file into this
          repository instead would leave its provenance and licence to us. It is
          imported only when digits are asked for.

Labels: 'gaussian' y ~ N(0, 1); 'random_sign' y uniform on {-1, +1};
'teacher' y = sign(g(x)) and 'teacher_regression' y = g(x) / std(g), where
g(x) = a . relu(V x) / sqrt(k) is a random two-layer ReLU teacher of width k
(`teacher_width`). With phi > 0, points are drawn one at a time and a point
closer than phi to an accepted point of the other class is redrawn (Zou et
al., Assumption 3.2: ||x_i - x_j|| >= phi whenever y_i != y_j).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from overparam import config as config_lib
from overparam.theory import separation

MAX_DRAWS_PER_POINT = 1000


class Dataset(NamedTuple):
    """X: (n, d) unit rows; y: (n,); separation: min ||x_i - x_j|| over y_i != y_j of the
    training set; X_test: (n_test, d), y_test: (n_test,), the held-out points."""

    X: np.ndarray
    y: np.ndarray
    separation: float
    X_test: np.ndarray
    y_test: np.ndarray


@functools.cache
def digits_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 digit images as unit rows (1797, 64) (float64: flattened,
    centered by the mean image, normalized) and their digits (1797,) int."""
    from sklearn.datasets import load_digits

    images, digits = load_digits(return_X_y=True)
    centered = np.asarray(images, np.float64) - np.mean(images, axis=0)
    return _unit_rows(centered), np.asarray(digits, np.int64)


def _digits(rng: np.random.Generator, ident: Mapping[str, Any], label,
            n_test: int) -> tuple[np.ndarray, ...]:
    """(X, y, X_test, y_test) of a digits set: a random order of the task's pool, the
    first n for training and the next n_test for testing (module docstring)."""
    images, digits = digits_images()
    task = ident["digits_task"]
    pair = config_lib.digit_pair(task)
    pool = np.flatnonzero(np.isin(digits, pair)) if pair else np.arange(len(digits))
    n = ident["n"]
    if n + n_test > len(pool):  # config.validate refuses such sweeps first
        raise ValueError(f"task {task!r} has {len(pool)} images, fewer than n={n} + "
                         f"n_test={n_test}")
    order = rng.permutation(pool)
    train, test = order[:n], order[n:n + n_test]
    if ident["labels"] != "task":
        X, X_test = images[train], images[test]
        return X, label(X, rng), X_test, label(X_test, rng)
    if pair:
        target = np.where(digits == pair[0], 1.0, -1.0)
    elif task == "even_odd":
        target = np.where(digits % 2 == 0, 1.0, -1.0)
    else:
        target = (digits - np.mean(digits)) / np.std(digits)
    return images[train], target[train], images[test], target[test]


def _unit_rows(g: np.ndarray) -> np.ndarray:
    return g / np.linalg.norm(g, axis=-1, keepdims=True)


def _draw_points(rng: np.random.Generator, k: int, ident: Mapping[str, Any]) -> np.ndarray:
    d = ident["d"]
    if ident["dataset"] == "sphere":
        return _unit_rows(rng.standard_normal((k, d)))
    mu = ident["mu"]
    u = _unit_rows(rng.standard_normal((k, d - 1)))
    return np.concatenate([np.sqrt(1.0 - mu**2) * u, np.full((k, 1), mu)], axis=1)


def _teacher(rng: np.random.Generator, d: int, width: int):
    V = rng.standard_normal((width, d))
    a = rng.permutation(np.resize([1.0, -1.0], width))  # balanced signs: E g(x) = 0
    return lambda X: np.maximum(X @ V.T, 0.0) @ a / np.sqrt(width)


def _label_fn(rng: np.random.Generator, ident: Mapping[str, Any]):
    """Returns label(X, rng) -> y for one batch of points."""
    labels = ident["labels"]
    if labels == "gaussian":
        return lambda X, r: r.standard_normal(len(X))
    if labels == "random_sign":
        return lambda X, r: r.choice([-1.0, 1.0], size=len(X))
    if labels == "task":
        return None  # digits' own (`_digits`)
    teacher = _teacher(rng, ident["d"], ident["teacher_width"])
    if labels == "teacher":
        return lambda X, r: np.where(teacher(X) >= 0, 1.0, -1.0)
    return lambda X, r: teacher(X)


def _draw_separated(rng, label, ident, count: int, X: list, y: list, what: str) -> None:
    """Rejection sampling of `count` more points into X, y (the accepted points so far),
    one at a time; 'random_sign' labels are drawn first. what: 'n=64' (for messages)."""
    phi = ident["phi"]
    fixed = rng.choice([-1.0, 1.0], size=count) if ident["labels"] == "random_sign" else None
    first, rejected = len(X), 0
    for i in range(count):
        for _ in range(MAX_DRAWS_PER_POINT):
            x = _draw_points(rng, 1, ident)
            yx = fixed[i] if fixed is not None else label(x, rng)[0]
            other = [xi for xi, yi in zip(X, y) if yi != yx]
            if not other or np.min(np.linalg.norm(np.stack(other) - x, axis=1)) >= phi:
                X.append(x[0])
                y.append(yx)
                break
            rejected += 1
        else:
            raise config_lib.ConfigError(
                "phi", f"cannot place {what} points with class separation {phi} in "
                f"d={ident['d']} ({MAX_DRAWS_PER_POINT} draws for point {i}); lower phi or n")
    if len(set(y[first:])) < 2 and rejected and first == 0:
        raise config_lib.ConfigError("phi", f"class separation {phi} left a single class "
                                     f"among {what} teacher-labelled points; lower phi")


def _synthetic(rng: np.random.Generator, ident: Mapping[str, Any], label,
               n_test: int) -> tuple[np.ndarray, ...]:
    """(X, y, X_test, y_test) of a sphere or zou set: the training points, then the test
    points from the same law (with phi, at distance >= phi from every accepted point of
    the other class, training points included)."""
    n = ident["n"]
    if ident.get("phi", 0.0) > 0:
        X, y = [], []
        _draw_separated(rng, label, ident, n, X, y, f"n={n}")
        _draw_separated(rng, label, ident, n_test, X, y, f"n_test={n_test}")
        d = ident["d"]
        return (np.stack(X[:n]), np.asarray(y[:n]),
                np.stack(X[n:]) if n_test else np.zeros((0, d)), np.asarray(y[n:]))
    X = _draw_points(rng, n, ident)
    y = label(X, rng)
    X_test = _draw_points(rng, n_test, ident)
    return X, y, X_test, label(X_test, rng)


def make_dataset(ident: Mapping[str, Any], n_test: int = 0) -> Dataset:
    """The training set with identity `ident` (see `config.data_identity`), and its n_test
    held-out points."""
    rng = np.random.default_rng(config_lib.stable_hash(dict(ident)))
    label = _label_fn(rng, ident)
    make = _digits if ident["dataset"] == "digits" else _synthetic
    X, y, X_test, y_test = make(rng, ident, label, n_test)
    if ident["labels"] == "teacher_regression":  # the training targets' scale, for both
        scale = max(np.std(y), 1e-12)
        y, y_test = y / scale, y_test / scale
    dtype = np.dtype(ident["dtype"])
    X, y, X_test, y_test = (a.astype(dtype) for a in (X, y, X_test, y_test))
    signs = ident["labels"] in config_lib.SIGN_LABELS or (
        ident["labels"] == "task" and ident.get("digits_task") != "value")
    sep = separation(X.astype(np.float64), y) if signs else float("nan")
    return Dataset(X=X, y=y, separation=sep, X_test=X_test, y_test=y_test)
