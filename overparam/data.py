"""Training sets: points on the unit sphere (Du et al.) or Zou et al.'s construction.

Every set is a pure function of its identity (`config.data_identity`): the
NumPy generator is seeded from a stable hash of it, so the same seed and n give
the same points in every run, process and chunking. Points have unit norm.

  sphere: x uniform on the unit sphere S^{d-1}  (Du et al. 2018, section 6).
  zou:    x = (sqrt(1 - mu^2) u, mu), u uniform on S^{d-2}: unit norm with a
          fixed last coordinate mu that acts as a bias (Zou et al. 2018,
          Assumption 3.1).

Labels: 'gaussian' y ~ N(0, 1); 'random_sign' y uniform on {-1, +1};
'teacher' y = sign(g(x)) and 'teacher_regression' y = g(x) / std(g), where
g(x) = a . relu(V x) / sqrt(k) is a random two-layer ReLU teacher of width k
(`teacher_width`). With phi > 0, points are drawn one at a time and a point
closer than phi to an accepted point of the other class is redrawn (Zou et
al., Assumption 3.2: ||x_i - x_j|| >= phi whenever y_i != y_j).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from overparam import config as config_lib
from overparam.theory import separation

MAX_DRAWS_PER_POINT = 1000


class Dataset(NamedTuple):
    """X: (n, d) unit rows; y: (n,); separation: min ||x_i - x_j|| over y_i != y_j."""

    X: np.ndarray
    y: np.ndarray
    separation: float


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
    teacher = _teacher(rng, ident["d"], ident["teacher_width"])
    if labels == "teacher":
        return lambda X, r: np.where(teacher(X) >= 0, 1.0, -1.0)
    return lambda X, r: teacher(X)


def _draw_separated(rng, label, ident) -> tuple[np.ndarray, np.ndarray]:
    """Rejection sampling, one point at a time; 'random_sign' labels are drawn first."""
    n, phi = ident["n"], ident["phi"]
    fixed = rng.choice([-1.0, 1.0], size=n) if ident["labels"] == "random_sign" else None
    X, y, rejected = [], [], 0
    for i in range(n):
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
                "phi", f"cannot place n={n} points with class separation {phi} in d={ident['d']}"
                f" ({MAX_DRAWS_PER_POINT} draws for point {i}); lower phi or n")
    if len(set(y)) < 2 and rejected:
        raise config_lib.ConfigError("phi", f"class separation {phi} left a single class "
                                     f"among n={n} teacher-labelled points; lower phi")
    return np.stack(X), np.asarray(y)


def make_dataset(ident: Mapping[str, Any]) -> Dataset:
    """The training set with identity `ident` (see `config.data_identity`)."""
    rng = np.random.default_rng(config_lib.stable_hash(dict(ident)))
    label = _label_fn(rng, ident)
    if ident.get("phi", 0.0) > 0:
        X, y = _draw_separated(rng, label, ident)
    else:
        X = _draw_points(rng, ident["n"], ident)
        y = label(X, rng)
    if ident["labels"] == "teacher_regression":
        y = y / max(np.std(y), 1e-12)
    dtype = np.dtype(ident["dtype"])
    X, y = X.astype(dtype), y.astype(dtype)
    sep = separation(X.astype(np.float64), y) if ident["labels"] in config_lib.SIGN_LABELS \
        else float("nan")
    return Dataset(X=X, y=y, separation=sep)
