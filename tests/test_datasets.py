"""Toy datasets (shapes, dtypes, balance, determinism, noise-free geometry, argument checks)
and the data utilities (train_test_split, one_hot, standardize, batches)."""

import numpy as np
import pytest

import fastnn
from fastnn import datasets
from fastnn.data import batches, one_hot, standardize, train_test_split

NAMES = ["planar", "moons", "circles", "xor", "spirals", "blobs"]


# --- datasets: shapes, dtypes, labels, balance, determinism ---------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_dtypes(name):
    X, y = datasets.load(name, n_samples=60, seed=0)
    assert X.dtype == np.float64 and X.ndim == 2 and X.shape == (60, 2)
    assert y.dtype == np.int64 and y.ndim == 1 and y.shape == (60,)
    assert np.all(np.isfinite(X))


@pytest.mark.parametrize(
    ("name", "options", "n_classes"),
    [
        ("planar", {"n_samples": 100}, 2),
        ("moons", {"n_samples": 100}, 2),
        ("circles", {"n_samples": 100}, 2),
        ("spirals", {"n_samples": 120, "n_classes": 4}, 4),
        ("blobs", {"n_samples": 120, "n_classes": 4}, 4),
    ],
)
def test_classes_balanced_and_in_range(name, options, n_classes):
    _, y = datasets.load(name, seed=1, **options)
    assert set(np.unique(y)) == set(range(n_classes))
    counts = np.bincount(y, minlength=n_classes)
    assert np.all(counts == options["n_samples"] // n_classes)


@pytest.mark.parametrize("name", ["moons", "circles"])
def test_two_class_odd_count_splits_within_one(name):
    _, y = datasets.load(name, n_samples=101, seed=0)
    counts = np.bincount(y, minlength=2)
    assert counts.sum() == 101 and abs(int(counts[0]) - int(counts[1])) == 1


def test_spirals_and_blobs_uneven_counts_cover_all_samples():
    for name in ("spirals", "blobs"):
        _, y = datasets.load(name, n_samples=100, n_classes=3, seed=0)
        counts = np.bincount(y, minlength=3)
        assert counts.sum() == 100 and counts.max() - counts.min() <= 1


@pytest.mark.parametrize("name", ["moons", "circles"])
def test_moons_and_circles_come_shuffled(name):
    _, y = datasets.load(name, n_samples=100, seed=0)
    assert np.any(np.diff(y) < 0)  # not all class 0 first, then all class 1


def test_xor_labels_in_range_and_roughly_balanced():
    _, y = datasets.xor(n_samples=4000, seed=0)
    assert set(np.unique(y)) == {0, 1}
    assert 0.45 < y.mean() < 0.55


def test_blobs_feature_count():
    X, y = datasets.blobs(n_samples=30, n_classes=3, n_features=5, seed=0)
    assert X.shape == (30, 5) and y.shape == (30,)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_data_different_seed_different_data(name):
    X1, y1 = datasets.load(name, n_samples=80, seed=3)
    X2, y2 = datasets.load(name, n_samples=80, seed=3)
    X3, _ = datasets.load(name, n_samples=80, seed=4)
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(X1, X3)


def test_load_matches_direct_call_and_normalizes_name():
    X1, y1 = datasets.load("moons", n_samples=50, noise=0.2, seed=7)
    X2, y2 = datasets.moons(n_samples=50, noise=0.2, seed=7)
    X3, _ = datasets.load(" Moons ", n_samples=50, noise=0.2, seed=7)
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(X1, X3)


# --- datasets: noise-free geometry --------------------------------------------------------


def test_moons_noise_free_lie_on_their_half_circles():
    X, y = datasets.moons(n_samples=101, noise=0.0, seed=0)
    outer, inner = X[y == 0], X[y == 1]
    np.testing.assert_allclose(np.hypot(outer[:, 0], outer[:, 1]), 1.0, atol=1e-12)
    assert np.all(outer[:, 1] >= -1e-12)  # upper half
    centred = inner - np.array([1.0, 0.5])
    np.testing.assert_allclose(np.hypot(centred[:, 0], centred[:, 1]), 1.0, atol=1e-12)
    assert np.all(centred[:, 1] <= 1e-12)  # lower half


@pytest.mark.parametrize("factor", [0.0, 0.3, 0.8])
def test_circles_noise_free_radii(factor):
    X, y = datasets.circles(n_samples=90, noise=0.0, factor=factor, seed=0)
    radii = np.hypot(X[:, 0], X[:, 1])
    np.testing.assert_allclose(radii[y == 0], 1.0, atol=1e-12)
    np.testing.assert_allclose(radii[y == 1], factor, atol=1e-12)


def test_xor_noise_free_labels_are_sign_disagreement():
    X, y = datasets.xor(n_samples=500, noise=0.0, seed=2)
    assert np.all(np.abs(X) <= 1.0)
    expected = (np.sign(X[:, 0]) != np.sign(X[:, 1])).astype(np.int64)
    np.testing.assert_array_equal(y, expected)


def test_xor_noise_moves_points_but_not_labels():
    X0, y0 = datasets.xor(n_samples=200, noise=0.0, seed=5)
    X1, y1 = datasets.xor(n_samples=200, noise=0.3, seed=5)
    np.testing.assert_array_equal(y0, y1)
    assert 0.25 < (X1 - X0).std() < 0.35  # the same points, moved by N(0, 0.3) noise


def test_spirals_noise_free_radius_grows_from_zero_to_one():
    n_classes, per = 3, 40
    X, y = datasets.spirals(n_samples=n_classes * per, n_classes=n_classes, noise=0.0, seed=0)
    for j in range(n_classes):
        radii = np.hypot(*X[y == j].T)
        np.testing.assert_allclose(radii, np.linspace(0.0, 1.0, per), atol=1e-12)


def test_blobs_zero_std_collapses_each_class_to_one_point():
    X, y = datasets.blobs(n_samples=40, n_classes=4, std=0.0, seed=0)
    centers = []
    for j in range(4):
        pts = X[y == j]
        np.testing.assert_array_equal(pts, np.broadcast_to(pts[0], pts.shape))
        assert np.all((pts[0] >= -10.0) & (pts[0] <= 10.0))
        centers.append(pts[0])
    assert len({tuple(c) for c in centers}) == 4


def test_blobs_points_closer_to_own_center_when_std_small():
    X, y = datasets.blobs(n_samples=200, n_classes=3, std=0.01, seed=1)
    centers = np.stack([X[y == j].mean(axis=0) for j in range(3)])
    dist = np.linalg.norm(X[:, None, :] - centers[None], axis=2)
    np.testing.assert_array_equal(dist.argmin(axis=1), y)


# --- planar ---------------------------------------------------------------------------------


def course_planar():
    """The course's load_planar_dataset, written out in its (features, samples) layout."""
    rs = np.random.RandomState(1)
    m, a = 400, 4
    N = m // 2
    X = np.zeros((m, 2))
    Y = np.zeros((m, 1), dtype="uint8")
    for j in range(2):
        ix = range(N * j, N * (j + 1))
        t = np.linspace(j * 3.12, (j + 1) * 3.12, N) + rs.randn(N) * 0.2
        r = a * np.sin(4 * t) + rs.randn(N) * 0.2
        X[ix] = np.c_[r * np.sin(t), r * np.cos(t)]
        Y[ix] = j
    return X.T, Y.T


def test_planar_defaults_400_points_200_per_class():
    X, y = datasets.planar()
    assert X.shape == (400, 2) and y.shape == (400,)
    np.testing.assert_array_equal(np.bincount(y), [200, 200])
    np.testing.assert_array_equal(y[:200], 0)
    np.testing.assert_array_equal(y[200:], 1)


def test_planar_defaults_reproduce_course_data():
    X, y = datasets.planar()
    X_course, Y_course = course_planar()
    np.testing.assert_array_equal(X, X_course.T)
    np.testing.assert_array_equal(y, Y_course.ravel())


def test_planar_noise_free_petals_follow_the_rose_curve():
    X, y = datasets.planar(n_samples=100, noise=0.0)
    for j in range(2):
        t = np.linspace(j * 3.12, (j + 1) * 3.12, 50)
        r = 4 * np.sin(4 * t)
        np.testing.assert_allclose(X[y == j], np.c_[r * np.sin(t), r * np.cos(t)], atol=1e-12)
    assert np.all(np.hypot(X[:, 0], X[:, 1]) <= 4.0 + 1e-12)


def test_planar_is_not_linearly_separable():
    X, y = datasets.planar()
    model = fastnn.Sequential([fastnn.Dense(2, 1, "sigmoid")], seed=0)
    model.fit(X, y, epochs=2000, lr=1.0)
    accuracy = model.evaluate(X, y)["accuracy"]
    assert 0.40 <= accuracy <= 0.60


# --- datasets: bad arguments ----------------------------------------------------------------


@pytest.mark.parametrize("n_samples", [401, 3, 1])
def test_planar_odd_n_samples(n_samples):
    with pytest.raises(ValueError, match=f"planar needs an even n_samples.*got {n_samples}"):
        datasets.planar(n_samples=n_samples)


@pytest.mark.parametrize("name", ["planar", "moons", "circles", "xor", "spirals"])
def test_negative_noise(name):
    with pytest.raises(ValueError, match=r"noise must be in \[0\.0, inf\); got -0\.1"):
        datasets.load(name, noise=-0.1)


def test_blobs_negative_std():
    with pytest.raises(ValueError, match=r"^std must be in \[0\.0, inf\); got -1\.0"):
        datasets.blobs(std=-1.0)


@pytest.mark.parametrize("name", ["spirals", "blobs"])
def test_more_classes_than_samples(name):
    with pytest.raises(ValueError, match="n_classes=3 is more than n_samples=2"):
        datasets.load(name, n_samples=2, n_classes=3)


@pytest.mark.parametrize("factor", [-0.1, 1.0, 1.5])
def test_circles_factor_outside_unit_interval(factor):
    with pytest.raises(ValueError, match=r"factor must be in \[0\.0, 1\.0\)"):
        datasets.circles(factor=factor)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n_samples", [0, -4])
def test_non_positive_n_samples(name, n_samples):
    with pytest.raises(ValueError, match=f"n_samples must be a positive integer; got {n_samples}"):
        datasets.load(name, n_samples=n_samples)


def test_load_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown dataset 'mons'") as info:
        datasets.load("mons")
    message = str(info.value)
    for name in NAMES:
        assert name in message
    assert "Did you mean 'moons'" in message


# --- train_test_split -----------------------------------------------------------------------


def paired(n):
    """X rows [2i, 2i+1] paired with label i, so pairing survives any reordering."""
    return np.arange(2 * n).reshape(n, 2), np.arange(n)


@pytest.mark.parametrize(
    ("n", "test_size", "n_test"),
    [(20, 0.25, 5), (10, 0.5, 5), (25, 0.1, 3), (20, 7, 7), (20, 1, 1), (20, 19, 19)],
)
def test_split_sizes(n, test_size, n_test):
    X, y = paired(n)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=test_size, seed=0)
    assert len(X_te) == len(y_te) == n_test
    assert len(X_tr) == len(y_tr) == n - n_test
    assert X_tr.shape[1:] == X_te.shape[1:] == (2,)


def test_split_is_disjoint_complete_and_keeps_pairs():
    X, y = paired(50)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, seed=1)
    assert not set(y_tr) & set(y_te)
    np.testing.assert_array_equal(np.sort(np.concatenate([y_tr, y_te])), np.arange(50))
    np.testing.assert_array_equal(X_tr[:, 0], 2 * y_tr)
    np.testing.assert_array_equal(X_te[:, 0], 2 * y_te)


def test_split_seed_determinism():
    X, y = paired(40)
    a = train_test_split(X, y, seed=3)
    b = train_test_split(X, y, seed=3)
    c = train_test_split(X, y, seed=4)
    for left, right in zip(a, b, strict=True):
        np.testing.assert_array_equal(left, right)
    assert not np.array_equal(a[3], c[3])


def test_split_shuffles_by_default():
    _, y = paired(40)
    _, _, y_tr, y_te = train_test_split(y, y, seed=0)
    assert not (np.all(np.diff(y_tr) > 0) and np.all(np.diff(y_te) > 0))


def test_split_without_shuffle_keeps_order():
    X, y = paired(12)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=4, shuffle=False)
    assert np.all(np.diff(y_tr) == 1) and np.all(np.diff(y_te) == 1)
    np.testing.assert_array_equal(np.sort(np.concatenate([y_tr, y_te])), np.arange(12))
    np.testing.assert_array_equal(X_tr[:, 0], 2 * y_tr)
    again = train_test_split(X, y, test_size=4, shuffle=False, seed=99)
    np.testing.assert_array_equal(again[2], y_tr)
    np.testing.assert_array_equal(y_te, [8, 9, 10, 11])  # the last rows, as scikit-learn


def test_split_accepts_numpy_fractions():
    X, y = paired(12)
    assert len(train_test_split(X, y, test_size=np.float32(0.25))[1]) == 3


def test_split_mismatched_lengths():
    with pytest.raises(ValueError, match="X has 5 rows but y has 4"):
        train_test_split(np.zeros((5, 2)), np.zeros(4))


@pytest.mark.parametrize(
    ("test_size", "fragment"),
    [
        (0.0, "leaves 0 of 10 samples"),
        (0.95, "leaves 10 of 10 samples"),
        (10, "leaves 10 of 10 samples"),
        (25, "leaves 25 of 10 samples"),
        (1.0, r"test_size must be in \[0\.0, 1\.0\)"),
        (0, "test_size must be a positive integer"),
    ],
)
def test_split_bad_test_size(test_size, fragment):
    X, y = paired(10)
    with pytest.raises(ValueError, match=fragment):
        train_test_split(X, y, test_size=test_size)


# --- one_hot --------------------------------------------------------------------------------


def test_one_hot_round_trip():
    labels = np.array([2, 0, 1, 1, 3, 0])
    Y = one_hot(labels)
    assert Y.shape == (6, 4) and Y.dtype == np.float32
    np.testing.assert_array_equal(Y.argmax(axis=1), labels)
    np.testing.assert_array_equal(Y.sum(axis=1), 1.0)
    assert set(np.unique(Y)) == {0.0, 1.0}


def test_one_hot_explicit_n_classes_and_dtype():
    labels = [0, 2, 1]
    Y = one_hot(labels, n_classes=5, dtype=np.float64)
    assert Y.shape == (3, 5) and Y.dtype == np.float64
    np.testing.assert_array_equal(Y[:, 3:], 0.0)
    np.testing.assert_array_equal(Y.argmax(axis=1), labels)


def test_one_hot_accepts_integral_floats():
    np.testing.assert_array_equal(one_hot(np.array([1.0, 0.0])), one_hot(np.array([1, 0])))


def test_one_hot_label_beyond_n_classes():
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.2; got values from 0 to 3"):
        one_hot([0, 3, 1], n_classes=3)


def test_one_hot_negative_label():
    with pytest.raises(ValueError, match="labels must lie in 0"):
        one_hot([0, -1, 1])


def test_one_hot_non_integer_labels():
    with pytest.raises(ValueError, match="one_hot needs integer labels; got non-integer"):
        one_hot(np.array([0.0, 1.5]))


def test_one_hot_non_numeric_labels():
    with pytest.raises(TypeError, match="one_hot needs integer labels; got dtype"):
        one_hot(np.array(["a", "b"]))


@pytest.mark.parametrize("labels", [np.array([], dtype=np.int64), np.zeros((2, 2), dtype=int)])
def test_one_hot_needs_non_empty_1d(labels):
    with pytest.raises(ValueError, match="non-empty 1-D array of labels"):
        one_hot(labels)


# --- standardize ----------------------------------------------------------------------------


def test_standardize_zero_mean_unit_std():
    rng = np.random.default_rng(0)
    X = rng.normal(loc=[5.0, -3.0, 100.0], scale=[0.1, 2.0, 30.0], size=(200, 3))
    Z, mean, std = standardize(X)
    np.testing.assert_allclose(Z.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(Z.std(axis=0), 1.0, rtol=1e-12)
    np.testing.assert_allclose(mean, X.mean(axis=0))
    np.testing.assert_allclose(std, X.std(axis=0))


def test_standardize_reuses_training_statistics():
    rng = np.random.default_rng(1)
    X_train = rng.normal(3.0, 2.0, size=(100, 2))
    X_test = rng.normal(3.0, 2.0, size=(30, 2))
    _, mean, std = standardize(X_train)
    Z_test, mean2, std2 = standardize(X_test, mean, std)
    np.testing.assert_allclose(Z_test, (X_test - mean) / std)
    np.testing.assert_array_equal(mean2, mean)
    np.testing.assert_array_equal(std2, std)
    assert not np.allclose(Z_test, standardize(X_test)[0])


def test_standardize_constant_column_maps_to_zero():
    X = np.c_[np.full(6, 5.0), np.arange(6.0), np.zeros(6)]
    Z, _, std = standardize(X)
    assert np.all(np.isfinite(Z))
    np.testing.assert_array_equal(Z[:, 0], 0.0)
    np.testing.assert_array_equal(Z[:, 2], 0.0)
    np.testing.assert_allclose(Z[:, 1].std(), 1.0)
    assert std[0] == 1.0 and std[2] == 1.0


@pytest.mark.parametrize("value, n", [(0.1, 3), (0.3, 10), (1.1, 6)])
def test_standardize_inexact_constant_column_maps_to_zero(value, n):
    """The mean of n copies of 0.1 is not exactly 0.1; the column must still map to ~0."""
    Z, _, std = standardize(np.full((n, 1), value))
    assert std[0] == 1.0 and np.all(np.abs(Z) < 1e-15)


def test_standardize_rejects_non_2d():
    with pytest.raises(ValueError, match="standardize needs a non-empty"):
        standardize(np.arange(5.0))


# --- batches --------------------------------------------------------------------------------


def test_batches_cover_rows_in_order_with_smaller_last():
    X, y = paired(10)
    out = list(batches(X, y, batch_size=3))
    assert [len(xb) for xb, _ in out] == [3, 3, 3, 1]
    np.testing.assert_array_equal(np.concatenate([xb for xb, _ in out]), X)
    np.testing.assert_array_equal(np.concatenate([yb for _, yb in out]), y)


def test_batches_exact_multiple_has_no_empty_batch():
    X, y = paired(9)
    assert [len(yb) for _, yb in batches(X, y, batch_size=3)] == [3, 3, 3]
    assert [len(yb) for _, yb in batches(X, y, batch_size=50)] == [9]


def test_batches_shuffle_seed_deterministic_and_complete():
    X, y = paired(23)
    first = list(batches(X, y, batch_size=5, shuffle=True, seed=4))
    second = list(batches(X, y, batch_size=5, shuffle=True, seed=4))
    other = list(batches(X, y, batch_size=5, shuffle=True, seed=5))
    y_first = np.concatenate([yb for _, yb in first])
    np.testing.assert_array_equal(y_first, np.concatenate([yb for _, yb in second]))
    assert not np.array_equal(y_first, np.concatenate([yb for _, yb in other]))
    assert not np.array_equal(y_first, y)
    np.testing.assert_array_equal(np.sort(y_first), y)
    for xb, yb in first:
        np.testing.assert_array_equal(xb[:, 0], 2 * yb)
    assert [len(yb) for _, yb in first] == [5, 5, 5, 5, 3]


@pytest.mark.parametrize("batch_size", [0, -2])
def test_batches_non_positive_batch_size(batch_size):
    X, y = paired(4)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        batches(X, y, batch_size=batch_size)  # checked at the call, before any batch


def test_batches_mismatched_lengths():
    with pytest.raises(ValueError, match="X has 3 rows but y has 2"):
        batches(np.zeros((3, 1)), np.zeros(2), batch_size=2)
