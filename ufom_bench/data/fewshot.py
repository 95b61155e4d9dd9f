"""Few-shot task samplers: m-way K-shot classification tasks and MAML's sinusoid regression tasks.

Data preparation (reading archives, resizing, splitting classes, caching) is numpy; the sampling step is
pure JAX, so ``sample_task`` jits and vmaps (a meta-batch is ``jax.vmap(sampler.sample, (0, None, ...))``
or ``jax.vmap(sampler.task_fn(m, k))`` over keys).

Layout. A split's images are one uint8 array ``[n_classes, n_per_class, H, W, C]`` (channels last, C = 1
for grey, 3 for colour; ink/bright = 255). Classes with fewer examples than ``n_per_class`` are padded
with zeros and their true sizes kept in ``counts`` (the padded rows are never sampled). Samples come back
as float32 in [0, 1].

Sources:
- :func:`sinusoid` -- Finn et al. (2017) regression tasks.
- :func:`omniglot` -- Lake et al.'s ``images_background.zip`` / ``images_evaluation.zip``.
- :func:`cifar_fs` -- ``cifar-100-python.tar.gz`` with a CIFAR-FS-style 64/16/20 class split or the UFOM
  paper's 80/20 split.
- :func:`ufom_bench.data.glyphs.glyphs` -- the offline default, rendered from matplotlib's fonts.

Every loader fails with :class:`DataError` naming the file when an archive is missing, truncated or
corrupt; nothing is returned from a partly read archive. Prepared arrays are cached as ``.npz`` files
written atomically (temporary file + ``os.replace``), keyed by the source files' sizes and mtimes.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import os
import pickle
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ufom_bench.errors import UserError

__all__ = [
    "DataError",
    "Task",
    "TaskSampler",
    "FewShotSplits",
    "sample_task",
    "sinusoid",
    "omniglot",
    "cifar_fs",
    "split_classes",
]

_CACHE_VERSION = 1


# One DataError for the whole package (a ValueError; the message names the file), defined with the MNIST
# loaders; re-exported here so that ``fewshot.DataError`` is the same class.
from .mnist import DataError  # noqa: E402


class Task(NamedTuple):
    """One few-shot task: a support set to adapt on and a query set to evaluate on."""

    support_x: jax.Array
    support_y: jax.Array
    query_x: jax.Array
    query_y: jax.Array


class FewShotSplits(NamedTuple):
    """Class-disjoint splits of one source. ``val`` is None where the split has none (e.g. 80/20)."""

    train: "TaskSampler"
    val: "TaskSampler | None"
    test: "TaskSampler"


# --------------------------------------------------------------------------------------------------
# Sampling (pure JAX)
# --------------------------------------------------------------------------------------------------


def sample_task(images: jax.Array, counts: jax.Array, key: jax.Array, m: int, k: int, k_query: int = 1) -> Task:
    """Sample one m-way k-shot task from ``images`` [C, N, H, W, ch] (uint8) with true sizes ``counts`` [C].

    m distinct classes are drawn uniformly without replacement; the class drawn i-th gets label i, so the
    class-to-label map is a uniform random permutation. For each class, k + k_query distinct examples are
    drawn uniformly without replacement among its ``counts[c]`` real examples (padding is never drawn):
    the first k form the support set, the rest the query set. Rows are grouped by label
    (``support_y = [0]*k + [1]*k + ...``). m, k, k_query must be Python ints (static under jit).

    Returns:
      Task(support_x [m*k, H, W, ch] float32 in [0, 1], support_y [m*k] int32,
           query_x [m*k_query, H, W, ch], query_y [m*k_query] int32).
    """
    n_classes, n_per = images.shape[:2]
    key_c, key_e = jax.random.split(key)
    classes = jax.random.choice(key_c, n_classes, (m,), replace=False)
    u = jax.random.uniform(key_e, (m, n_per))
    u = jnp.where(jnp.arange(n_per)[None, :] < counts[classes][:, None], u, 2.0)  # padding sorts last
    idx = jnp.argsort(u, axis=1)[:, : k + k_query]
    x = images[classes[:, None], idx].astype(jnp.float32) / 255.0  # [m, k+kq, H, W, ch]
    tail = x.shape[2:]
    labels = jnp.arange(m, dtype=jnp.int32)
    return Task(
        support_x=x[:, :k].reshape((m * k,) + tail),
        support_y=jnp.repeat(labels, k),
        query_x=x[:, k:].reshape((m * k_query,) + tail),
        query_y=jnp.repeat(labels, k_query),
    )


_sample_task_jit = jax.jit(sample_task, static_argnames=("m", "k", "k_query"))


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True, eq=False)
class TaskSampler:
    """The images of one split and a pure-JAX task sampler over them.

    A pytree (``images`` and ``counts`` are leaves; names are static), so it can be passed through
    ``jit``/``vmap`` as an argument instead of being baked into a program as a constant.

    Attributes:
      images: uint8 [n_classes, n_per_class, H, W, ch].
      counts: int32 [n_classes], real examples per class (<= n_per_class).
      name: e.g. "omniglot/train".
      class_names: one string per class (unique within a source; disjoint between its splits).
      min_count: the smallest class size: k + k_query may not exceed it.
    """

    images: jax.Array
    counts: jax.Array
    name: str = ""
    class_names: tuple[str, ...] = ()
    min_count: int = 0

    @classmethod
    def from_numpy(cls, images: np.ndarray, counts: np.ndarray | None = None, name: str = "",
                   class_names: Sequence[str] = ()) -> "TaskSampler":
        images = np.asarray(images)
        if images.ndim == 4:
            images = images[..., None]
        if images.ndim != 5 or images.dtype != np.uint8:
            raise UserError(f"images must be uint8 [C, N, H, W(, ch)], got {images.dtype} {images.shape}")
        if counts is None:
            counts = np.full(images.shape[0], images.shape[1], np.int32)
        counts = np.asarray(counts, np.int32)
        class_names = tuple(class_names) or tuple(f"{name}#{i}" for i in range(images.shape[0]))
        if len(class_names) != images.shape[0] or counts.shape != (images.shape[0],):
            raise UserError("class_names and counts need one entry per class")
        return cls(jnp.asarray(images), jnp.asarray(counts), name, class_names,
                   int(counts.min()) if counts.size else 0)

    @property
    def n_classes(self) -> int:
        return self.images.shape[0]

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[2:])

    def _check(self, m: int, k: int, k_query: int) -> None:
        if not (1 <= m <= self.n_classes):
            raise UserError(f"{self.name}: m={m} ways but {self.n_classes} classes")
        if k < 1 or k_query < 0 or k + k_query > self.min_count:
            raise UserError(f"{self.name}: k + k_query = {k + k_query} > {self.min_count} examples per class")

    def sample(self, key: jax.Array, m: int, k: int, k_query: int = 1) -> Task:
        """One m-way k-shot task (see :func:`sample_task`); jit-compiled once per (m, k, k_query).

        Traceable: works inside the caller's ``jit`` and under ``jax.vmap`` over keys (a meta-batch)."""
        self._check(m, k, k_query)
        return _sample_task_jit(self.images, self.counts, key, m=m, k=k, k_query=k_query)

    def task_fn(self, m: int, k: int, k_query: int = 1) -> Callable[[jax.Array], Task]:
        """``sample_task(key) -> Task`` for a Problem. It closes over the images: under an outer ``jit``
        they become a constant of that program (fine for Omniglot-sized data; for large sources pass the
        sampler itself as an argument)."""
        self._check(m, k, k_query)
        images, counts = self.images, self.counts
        return lambda key: sample_task(images, counts, key, m, k, k_query)

    def tree_flatten(self):
        return (self.images, self.counts), (self.name, self.class_names, self.min_count)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children, *aux)


# --------------------------------------------------------------------------------------------------
# Sinusoid regression (Finn et al., 2017, Section 5.1)
# --------------------------------------------------------------------------------------------------


def sinusoid(key: jax.Array, k: int, k_query: int | None = None, *, amplitude=(0.1, 5.0), phase=(0.0, np.pi),
             x_range=(-5.0, 5.0), dtype=jnp.float32) -> Task:
    """A MAML sinusoid task: y = A sin(x - b), A ~ U[0.1, 5], b ~ U[0, pi], x ~ U[-5, 5].

    Support and query inputs are drawn independently from the same task. Pure JAX (jit/vmap over keys).

    Returns:
      Task(support_x [k, 1], support_y [k, 1], query_x [k_query, 1], query_y [k_query, 1]); k_query
      defaults to k.
    """
    k_query = k if k_query is None else k_query
    ka, kb, kx = jax.random.split(key, 3)
    amp = jax.random.uniform(ka, (), dtype, amplitude[0], amplitude[1])
    ph = jax.random.uniform(kb, (), dtype, phase[0], phase[1])
    x = jax.random.uniform(kx, (k + k_query, 1), dtype, x_range[0], x_range[1])
    y = amp * jnp.sin(x - ph)
    return Task(x[:k], y[:k], x[k:], y[k:])


# --------------------------------------------------------------------------------------------------
# Class splits and caching (numpy)
# --------------------------------------------------------------------------------------------------


def split_classes(n: int, sizes: Sequence[int], seed: int, groups: Sequence | None = None) -> list[np.ndarray]:
    """Partition ``range(n)`` into consecutive parts of the given sizes after a seeded permutation.

    With ``groups`` (one label per class, e.g. an alphabet), whole groups are permuted and assigned to the
    parts in order, each part taking groups until it has reached its size (so sizes are approximate and
    no group straddles two parts); the last part takes the rest. Returns sorted index arrays.
    """
    rng = np.random.default_rng(seed)
    if groups is None:
        perm = rng.permutation(n)
        bounds = np.cumsum([0, *sizes])
        parts = [perm[bounds[i]:bounds[i + 1]] for i in range(len(sizes))]
        return [np.sort(p) for p in parts]
    groups = np.asarray(groups)
    names = np.unique(groups)
    order = names[rng.permutation(len(names))]
    parts: list[list[int]] = [[] for _ in sizes]
    part = 0
    for g in order:
        while part < len(sizes) - 1 and len(parts[part]) >= sizes[part]:
            part += 1
        parts[part].extend(np.flatnonzero(groups == g).tolist())
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def _proportional_sizes(n: int, fractions: Sequence[float]) -> list[int]:
    """Sizes summing to n, proportional to fractions, each >= 1 when n allows."""
    sizes = [int(round(f * n)) for f in fractions[:-1]]
    if n >= len(fractions):
        sizes = [max(1, s) for s in sizes]
    sizes.append(n - sum(sizes))
    if sizes[-1] < 1 and n >= len(fractions):
        i = int(np.argmax(sizes[:-1]))
        sizes[i] -= 1 - sizes[-1]
        sizes[-1] = 1
    return sizes


def _source_stamp(paths: Sequence[Path]) -> list:
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in paths]


def default_cache_dir() -> Path:
    """``$UFOM_BENCH_CACHE`` or ``~/.cache/ufom-bench``."""
    return Path(os.environ.get("UFOM_BENCH_CACHE", Path.home() / ".cache" / "ufom-bench"))


def save_npz_atomic(path: Path, **arrays) -> None:
    """Write an .npz so that readers see either the old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def load_npz_cache(path: Path, meta: dict) -> dict | None:
    """The arrays of a cache file whose stored ``meta`` equals ``meta``; None if absent, stale or unreadable."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if json.loads(str(z["meta"])) != json.loads(json.dumps(meta)):
                return None
            return {k: z[k] for k in z.files if k != "meta"}
    except Exception:  # a damaged cache is rebuilt, never trusted
        return None


def _meta_array(meta: dict) -> np.ndarray:
    return np.asarray(json.dumps(meta, sort_keys=True))


def _group_by_class(images: np.ndarray, labels: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """[N, ...] with labels -> padded [n_classes, max_count, ...] (stable order within a class), counts."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.int32)
    out = np.zeros((n_classes, int(counts.max()) if counts.size else 0) + images.shape[1:], images.dtype)
    order = np.argsort(labels, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.arange(len(labels)) - np.repeat(starts, counts)
    out[labels[order], pos] = images[order]
    return out, counts


def _rotations(images: np.ndarray, counts: np.ndarray, names: Sequence[str]):
    """Each class and its rotations by 90, 180, 270 degrees as four classes (Santoro et al.; MAML)."""
    imgs = np.concatenate([np.rot90(images, r, axes=(2, 3)) for r in range(4)])
    return (np.ascontiguousarray(imgs), np.tile(counts, 4),
            [f"{n}@rot{90 * r}" for r in range(4) for n in names])


# --------------------------------------------------------------------------------------------------
# Omniglot
# --------------------------------------------------------------------------------------------------

OMNIGLOT_ARCHIVES = ("images_background.zip", "images_evaluation.zip")


def _read_omniglot_zip(path: Path, size: int) -> tuple[list[str], list[np.ndarray]]:
    """(class names, per-class uint8 [n_drawers, size, size]) from one Omniglot zip, or DataError."""
    from PIL import Image

    if not path.is_file():
        raise DataError(f"{path}: Omniglot archive not found (expected the standard {path.name})")
    per_class: dict[str, list[tuple[str, np.ndarray]]] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                parts = info.filename.strip("/").split("/")
                if info.is_dir() or not parts[-1].lower().endswith(".png") or len(parts) < 3:
                    continue
                alphabet, character = parts[-3], parts[-2]
                with zf.open(info) as f:  # reading to the end checks the member's CRC-32
                    raw = f.read()
                with Image.open(io.BytesIO(raw)) as im:
                    im = im.convert("L").resize((size, size), Image.Resampling.LANCZOS)
                    arr = 255 - np.asarray(im, dtype=np.uint8)  # strokes bright, background 0
                per_class.setdefault(f"{path.stem}/{alphabet}/{character}", []).append((parts[-1], arr))
    except DataError:
        raise
    except Exception as e:  # BadZipFile (truncated, bad CRC-32), zlib.error, EOFError, PIL errors, ...
        raise DataError(f"{path}: corrupt or truncated Omniglot archive ({type(e).__name__}: {e})") from e
    if not per_class:
        raise DataError(f"{path}: no alphabet/character/*.png images in the archive")
    names = sorted(per_class)
    return names, [np.stack([a for _, a in sorted(per_class[n], key=lambda t: t[0])]) for n in names]


def omniglot(directory, *, cache_dir=None, seed: int = 0, size: int = 28, rotations: bool = True,
             n_train: int = 1100, n_val: int = 100) -> FewShotSplits:
    """Omniglot (Lake et al., 2015) from ``images_background.zip`` and ``images_evaluation.zip`` in ``directory``.

    Images: 105x105 binary PNGs (alphabet/character/XXXX_YY.png; 1,623 characters x 20 drawers) are
    resized to ``size`` x ``size`` with Lanczos filtering and inverted (strokes 255, background 0), as in
    MAML's preprocessing.

    Class split (Vinyals et al. 2016 style, as in MAML): the characters of both archives, sorted by
    archive/alphabet/character, are permuted with ``numpy.random.default_rng(seed)``; the first
    ``n_train`` (1,100) are training, the next ``n_val`` (100) validation, the remaining 423 test: 1,200
    "background" characters for training+validation as in Vinyals et al. and MAML. It is the same
    *protocol*, not MAML's exact lists (those depend on Python's ``random.seed(1)`` and glob order).
    Archives with fewer than n_train + n_val + 1 characters (tests) are split in proportion 1100:100:423.

    ``rotations``: each *training* character also appears rotated by 90, 180 and 270 degrees as three
    extra classes (4 x 1,100 = 4,400 training classes); validation and test classes are not rotated, so
    evaluation is on the original characters only.

    Raises:
      DataError naming the archive if one is missing, truncated, has a bad CRC or an unreadable image.
    """
    directory = Path(directory)
    paths = [directory / a for a in OMNIGLOT_ARCHIVES]
    for p in paths:
        if not p.is_file():
            raise DataError(f"{p}: Omniglot archive not found (expected the standard {p.name})")
    meta = {"kind": "omniglot", "version": _CACHE_VERSION, "size": size, "sources": _source_stamp(paths)}
    cache = Path(cache_dir) if cache_dir is not None else directory
    cache_path = cache / f"omniglot_{size}.npz"
    cached = load_npz_cache(cache_path, meta)
    if cached is None:
        names, per_class = [], []
        for p in paths:
            n, c = _read_omniglot_zip(p, size)
            names += n
            per_class += c
        counts = np.array([len(c) for c in per_class], np.int32)
        images = np.zeros((len(per_class), int(counts.max()), size, size), np.uint8)
        for i, c in enumerate(per_class):
            images[i, : len(c)] = c
        cached = {"images": images, "counts": counts, "names": np.asarray(names)}
        try:
            save_npz_atomic(cache_path, meta=_meta_array(meta), **cached)
        except OSError:  # read-only data directory: keep going without a cache
            pass
    images, counts, names = cached["images"], cached["counts"], [str(s) for s in cached["names"]]
    n = len(names)
    if n >= n_train + n_val + 1:
        sizes = [n_train, n_val, n - n_train - n_val]
    else:
        sizes = _proportional_sizes(n, [1100 / 1623, 100 / 1623, 423 / 1623])
    tr, va, te = split_classes(n, sizes, seed)

    def make(idx, split, rotate=False):
        imgs, cnts, nms = images[idx], counts[idx], [names[i] for i in idx]
        if rotate:
            imgs, cnts, nms = _rotations(imgs, cnts, nms)
        return TaskSampler.from_numpy(imgs, cnts, f"omniglot/{split}", nms)

    return FewShotSplits(make(tr, "train", rotations), make(va, "val"), make(te, "test"))


# --------------------------------------------------------------------------------------------------
# CIFAR-100 -> CIFAR-FS
# --------------------------------------------------------------------------------------------------

CIFAR100_ARCHIVE = "cifar-100-python.tar.gz"


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles CIFAR's dicts of lists/bytes/numpy arrays and refuses every other global."""

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        module = module.replace("numpy.core.", "numpy._core.")  # pickles written by numpy < 2
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def _read_cifar100(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images uint8 [N, 32, 32, 3], fine labels [N], fine label names) from train + test, or DataError."""
    if not path.is_file():
        raise DataError(f"{path}: CIFAR-100 archive not found (expected the standard {CIFAR100_ARCHIVE})")
    try:
        with gzip.open(path, "rb") as g:  # read to the end: checks the gzip CRC-32 and length
            while g.read(1 << 22):
                pass
        with tarfile.open(path, "r:gz") as tf:
            def load(member):
                try:
                    f = tf.extractfile(f"cifar-100-python/{member}")
                except KeyError:
                    raise DataError(f"{path}: member cifar-100-python/{member} missing") from None
                return _ArrayUnpickler(io.BytesIO(f.read()), encoding="bytes").load()

            meta = load("meta")
            parts = [load("train"), load("test")]
    except DataError:
        raise
    except Exception as e:  # EOFError / BadGzipFile / zlib.error (truncated, corrupt), TarError, pickle errors
        raise DataError(f"{path}: corrupt or truncated CIFAR-100 archive ({type(e).__name__}: {e})") from e
    try:
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[b"fine_label_names"]]
        data = np.concatenate([np.asarray(p[b"data"]) for p in parts])
        labels = np.concatenate([np.asarray(p[b"fine_labels"], np.int64) for p in parts])
    except Exception as e:
        raise DataError(f"{path}: unexpected CIFAR-100 contents ({type(e).__name__}: {e})") from e
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DataError(f"{path}: expected uint8 data [N, 3072] with N fine labels, got {data.dtype} {data.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= len(names)):
        raise DataError(f"{path}: fine labels outside 0..{len(names) - 1}")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # rows are R(1024) G(1024) B(1024)
    return np.ascontiguousarray(images), labels, names


def cifar_fs(directory, *, split: str = "64/16/20", seed: int = 0, cache_dir=None,
             classes: dict[str, Sequence[str]] | None = None) -> FewShotSplits:
    """CIFAR-FS-style few-shot splits of CIFAR-100 from ``cifar-100-python.tar.gz`` in ``directory``.

    All 600 images of each fine class (train and test batches together) are used, 32x32x3, as in
    CIFAR-FS (Bertinetto et al., 2019).

    Splits:
      - ``"64/16/20"``: 64 training, 16 validation, 20 test classes. **This is not the published CIFAR-FS
        class list**: this module does not ship Bertinetto et al.'s lists (we could not verify them
        offline); the 100 fine classes are permuted with ``numpy.random.default_rng(seed)``. To reproduce
        the published split, pass its class names as ``classes={"train": [...], "val": [...], "test":
        [...]}``.
      - ``"80/20"``: the UFOM paper's split (from its released code): 80 training and 20 test classes,
        seeded the same way; ``val`` is None.
    An archive with fewer classes (tests) is split in the same proportions.

    Raises:
      DataError naming the archive if it is missing, truncated, fails its gzip CRC, lacks
      ``cifar-100-python/{meta,train,test}`` or holds unexpected arrays.
    """
    directory = Path(directory)
    path = directory / CIFAR100_ARCHIVE
    if not path.is_file():
        raise DataError(f"{path}: CIFAR-100 archive not found (expected the standard {CIFAR100_ARCHIVE})")
    meta = {"kind": "cifar100", "version": _CACHE_VERSION, "sources": _source_stamp([path])}
    cache_path = (Path(cache_dir) if cache_dir is not None else directory) / "cifar100_by_class.npz"
    cached = load_npz_cache(cache_path, meta)
    if cached is None:
        images, labels, names = _read_cifar100(path)
        grouped, counts = _group_by_class(images, labels, len(names))
        cached = {"images": grouped, "counts": counts, "names": np.asarray(names)}
        try:
            save_npz_atomic(cache_path, meta=_meta_array(meta), **cached)
        except OSError:
            pass
    images, counts, names = cached["images"], cached["counts"], [str(s) for s in cached["names"]]
    keep = np.flatnonzero(counts > 0)
    n = len(keep)
    if classes is not None:
        index = {nm: i for i, nm in enumerate(names)}
        try:
            idx = {s: np.asarray([index[c] for c in classes.get(s, ())], np.int64) for s in ("train", "val", "test")}
        except KeyError as e:
            raise UserError(f"unknown CIFAR-100 class {e}") from None
        all_idx = np.concatenate(list(idx.values()))
        if len(set(all_idx.tolist())) != len(all_idx):
            raise UserError("classes: the splits overlap")
        tr, va, te = idx["train"], idx["val"], idx["test"]
    elif split == "64/16/20":
        sizes = [64, 16, 20] if n == 100 else _proportional_sizes(n, [0.64, 0.16, 0.20])
        tr, va, te = (keep[p] for p in split_classes(n, sizes, seed))
    elif split == "80/20":
        sizes = [80, 20] if n == 100 else _proportional_sizes(n, [0.8, 0.2])
        tr, te = (keep[p] for p in split_classes(n, sizes, seed))
        va = None
    else:
        raise UserError(f"split must be '64/16/20' or '80/20', got {split!r}")

    def make(idx, s):
        if idx is None or len(idx) == 0:
            return None
        return TaskSampler.from_numpy(images[idx], counts[idx], f"cifar_fs/{s}", [names[i] for i in idx])

    return FewShotSplits(make(tr, "train"), make(va, "val"), make(te, "test"))
