"""Tests of overparam.data: training sets as pure functions of their identity.

Identities are written as `config.data_identity` writes them. Checks: unit rows,
Zou et al.'s fixed last coordinate, the label laws (teacher labels against a
teacher rebuilt from the documented seeding), determinism, and the class
separation phi against a brute-force double loop.
"""

import numpy as np
import pytest

from overparam import config, data

SPHERE = dict(dataset="sphere", labels="gaussian", n=50, d=8, seed=3, dtype="float32")
ZOU = dict(dataset="zou", labels="random_sign", n=40, d=6, seed=1, dtype="float64", mu=0.5,
           phi=0.3)


def _ident(base, **kw):
    ident = dict(base, **kw)
    return {k: v for k, v in ident.items() if v is not None}


def _brute_separation(X, y):
    X = np.asarray(X, np.float64)
    best = float("inf")
    for i in range(len(X)):
        for j in range(len(X)):
            if y[i] != y[j]:
                best = min(best, float(np.sqrt(np.sum((X[i] - X[j]) ** 2))))
    return best


def _teacher_values(ident, X):
    """g(X) of the identity's teacher, rebuilt with `data._teacher` from a fresh
    generator seeded like make_dataset's (the teacher is its first draw)."""
    rng = np.random.default_rng(config.stable_hash(dict(ident)))
    g = data._teacher(rng, ident["d"], ident["teacher_width"])
    return g(np.asarray(X, np.float64))


IDENTS = [
    SPHERE,
    _ident(SPHERE, labels="random_sign", dtype="float64"),
    _ident(SPHERE, labels="teacher", teacher_width=32),
    _ident(SPHERE, labels="teacher_regression", teacher_width=32, dtype="float64"),
    _ident(ZOU, phi=None),
    ZOU,
    _ident(ZOU, labels="teacher", teacher_width=16, dtype="float32", seed=2),
]


@pytest.mark.parametrize("ident", IDENTS, ids=lambda i: f"{i['dataset']}-{i['labels']}")
def test_shapes_dtype_and_unit_rows(ident):
    ds = data.make_dataset(ident)
    n, d = ident["n"], ident["d"]
    assert ds.X.shape == (n, d) and ds.y.shape == (n,)
    assert ds.X.dtype == np.dtype(ident["dtype"]) and ds.y.dtype == np.dtype(ident["dtype"])
    tol = 1e-6 if ident["dtype"] == "float32" else 1e-14
    np.testing.assert_allclose(np.linalg.norm(ds.X.astype(np.float64), axis=1), 1.0, atol=tol)
    assert np.all(np.isfinite(ds.X)) and np.all(np.isfinite(ds.y))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("mu", [0.0, 0.5, 0.9])
def test_zou_rows_have_last_coordinate_mu(mu, dtype):
    ds = data.make_dataset(_ident(ZOU, mu=mu, dtype=dtype, phi=None))
    tol = 1e-7 if dtype == "float32" else 1e-15
    np.testing.assert_allclose(ds.X[:, -1].astype(np.float64), mu, rtol=0, atol=tol)
    # The free part is spread over the sphere of radius sqrt(1 - mu^2), not constant.
    free = ds.X[:, :-1].astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(free, axis=1), np.sqrt(1 - mu**2), atol=10 * tol)
    assert np.linalg.matrix_rank(free) == ZOU["d"] - 1


def test_sphere_points_look_uniform():
    ds = data.make_dataset(_ident(SPHERE, n=2000, dtype="float64"))
    # Mean ~ 0 (sd 1/sqrt(n d)), second moment ~ I/d.
    assert np.abs(ds.X.mean(0)).max() < 0.05
    np.testing.assert_allclose(ds.X.T @ ds.X / 2000, np.eye(8) / 8, atol=0.02)


def test_gaussian_labels():
    ds = data.make_dataset(_ident(SPHERE, n=2000))
    y = ds.y.astype(np.float64)
    assert abs(y.mean()) < 0.1 and abs(y.std() - 1.0) < 0.05
    assert len(np.unique(y)) == len(y)
    assert np.isnan(ds.separation)  # not defined for real-valued labels


@pytest.mark.parametrize("base", [_ident(SPHERE, labels="random_sign"), ZOU],
                         ids=["sphere", "zou"])
def test_random_sign_labels(base):
    ds = data.make_dataset(base)
    assert set(np.unique(ds.y).tolist()) == {-1.0, 1.0}


@pytest.mark.parametrize("dataset", ["sphere", "zou"])
def test_teacher_labels_are_the_sign_of_the_teacher(dataset):
    base = SPHERE if dataset == "sphere" else _ident(ZOU, phi=None)
    ident = _ident(base, labels="teacher", teacher_width=32, n=200)
    ds = data.make_dataset(ident)
    assert set(np.unique(ds.y).tolist()) == {-1.0, 1.0}
    # Both classes for this draw.
    assert 0.02 < np.mean(ds.y > 0) < 0.98
    g = _teacher_values(ident, ds.X)
    np.testing.assert_array_equal(ds.y, np.where(g >= 0, 1.0, -1.0))


def test_teacher_is_a_bias_free_two_layer_relu_net():
    """g(c x) = c g(x) for c > 0 (no biases); g is not linear (g(-x) != -g(x))."""
    rng = np.random.default_rng(5)
    g = data._teacher(rng, 6, 32)
    X = rng.standard_normal((20, 6))
    gx = g(X)
    assert gx.shape == (20,)
    np.testing.assert_allclose(g(2.5 * X), 2.5 * gx, rtol=1e-12, atol=1e-14)
    assert not np.allclose(g(-X), -gx)


def test_teacher_regression_labels_have_unit_std():
    ident = _ident(SPHERE, labels="teacher_regression", teacher_width=32, n=200,
                   dtype="float64")
    ds = data.make_dataset(ident)
    np.testing.assert_allclose(np.std(ds.y), 1.0, rtol=1e-12)
    g = _teacher_values(ident, ds.X)
    np.testing.assert_allclose(ds.y, g / np.std(g), rtol=1e-12)
    assert np.isnan(ds.separation)


# -------------------------------------------------------------- determinism


@pytest.mark.parametrize("ident", [SPHERE, ZOU], ids=["sphere", "zou"])
def test_same_identity_gives_identical_arrays(ident):
    a = data.make_dataset(ident)
    b = data.make_dataset(dict(reversed(list(ident.items()))))  # key order is irrelevant
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)
    assert a.separation == b.separation or (np.isnan(a.separation) and np.isnan(b.separation))


@pytest.mark.parametrize("ident", [SPHERE, ZOU], ids=["sphere", "zou"])
def test_different_seed_gives_different_arrays(ident):
    a = data.make_dataset(ident)
    b = data.make_dataset(_ident(ident, seed=ident["seed"] + 1))
    assert not np.allclose(a.X, b.X)
    if ident["labels"] == "gaussian":
        assert not np.allclose(a.y, b.y)


def test_every_identity_field_changes_the_data():
    a = data.make_dataset(SPHERE)
    b = data.make_dataset(_ident(SPHERE, labels="random_sign"))
    assert not np.allclose(a.X, b.X)
    c = data.make_dataset(_ident(SPHERE, n=51))
    assert not np.allclose(a.X, c.X[:50])


# --------------------------------------------------------------- separation


SEPARATED = [
    ZOU,
    _ident(ZOU, labels="teacher", teacher_width=16, seed=2),
    _ident(SPHERE, labels="random_sign", n=60, d=8, phi=0.9, dtype="float64"),
    _ident(SPHERE, labels="random_sign", n=60, d=8, phi=0.9, dtype="float32"),
]


@pytest.mark.parametrize("ident", SEPARATED,
                         ids=lambda i: f"{i['dataset']}-{i['labels']}-{i['dtype']}")
def test_separation_is_at_least_phi_and_matches_brute_force(ident):
    ds = data.make_dataset(ident)
    assert set(np.unique(ds.y).tolist()) == {-1.0, 1.0}
    brute = _brute_separation(ds.X, ds.y)
    assert ds.separation >= ident["phi"]
    assert brute >= ident["phi"] * (1 - 1e-6)
    np.testing.assert_allclose(ds.separation, brute, rtol=1e-7)
    np.testing.assert_allclose(data.separation(ds.X.astype(np.float64), ds.y), brute,
                               rtol=1e-7)


def test_without_phi_the_separation_is_still_measured():
    ident = _ident(SPHERE, labels="random_sign", n=60, dtype="float64")
    ds = data.make_dataset(ident)
    np.testing.assert_allclose(ds.separation, _brute_separation(ds.X, ds.y), rtol=1e-7)
    # Without rejection, 60 random points in d=8 come closer than the phi=0.9 sets.
    assert ds.separation < 0.9


def test_separation_function_on_a_known_set():
    X = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.6, 0.8]])
    y = np.array([1.0, 1.0, -1.0, -1.0])
    # Cross pairs: (0,2)=2, (0,3)=sqrt(0.16+0.64), (1,2)=sqrt2, (1,3)=sqrt(0.36+0.04).
    np.testing.assert_allclose(data.separation(X, y), np.sqrt(0.4), rtol=1e-12)
    np.testing.assert_allclose(data.separation(X, y), _brute_separation(X, y), rtol=1e-12)


def test_separation_of_a_single_class_is_inf():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((7, 3))
    assert data.separation(X, np.ones(7)) == float("inf")
    assert data.separation(X, -np.ones(7)) == float("inf")
    assert data.separation(X[:1], np.ones(1)) == float("inf")


def test_separation_zero_for_duplicate_points_of_different_class():
    X = np.array([[0.6, 0.8], [0.6, 0.8], [1.0, 0.0]])
    y = np.array([1.0, -1.0, 1.0])
    assert data.separation(X, y) == 0.0


def test_impossible_separation_raises_config_error():
    # phi = 2 needs every cross-class pair to be exactly antipodal: probability 0 for
    # continuous draws, so no set with both classes exists.
    ident = _ident(SPHERE, labels="random_sign", n=50, d=3, phi=2.0, dtype="float64")
    with pytest.raises(config.ConfigError) as err:
        data.make_dataset(ident)
    assert str(err.value).startswith("config.phi:")


@pytest.mark.parametrize("phi", [0.9, 1.5, 1.9])
def test_random_sign_labels_stay_balanced_or_the_request_fails(phi):
    """Rejection must not bias 'random_sign' labels (uniform on {-1, +1}) towards the
    class that was placed first: either the set is balanced or make_dataset fails."""
    ident = _ident(SPHERE, labels="random_sign", n=100, d=8, phi=phi, dtype="float64")
    try:
        ds = data.make_dataset(ident)
    except config.ConfigError:
        return
    # Binomial(100, 1/2) has P(count < 25) ~ 3e-7.
    counts = [int(np.sum(ds.y == 1.0)), int(np.sum(ds.y == -1.0))]
    assert min(counts) >= 25, counts


def test_teacher_labels_left_single_class_by_phi_raise_config_error():
    ident = _ident(SPHERE, labels="teacher", teacher_width=16, n=100, phi=1.5,
                   dtype="float64")
    with pytest.raises(config.ConfigError) as err:
        data.make_dataset(ident)
    assert str(err.value).startswith("config.phi:")
    assert err.value.field == "phi"
