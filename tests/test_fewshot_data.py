"""Few-shot task samplers and loaders (issue 7, item 1): shapes, labels, disjoint splits, determinism,
round-trips through tiny archives in the standard formats, and DataError on missing/corrupt archives."""

import io
import os
import pickle
import tarfile
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from ufom_bench.data.fewshot import DataError, TaskSampler, cifar_fs, omniglot, sinusoid
from ufom_bench.data.glyphs import build_glyphs, glyphs


def _coded_sampler(n_classes=7, n_per=6, counts=None):
    """Image [c, n] carries c at pixel (0, 0) and n at (0, 1); padded rows are marked 255 everywhere."""
    imgs = np.zeros((n_classes, n_per, 4, 5), np.uint8)
    imgs[:, :, 0, 0] = np.arange(n_classes)[:, None]
    imgs[:, :, 0, 1] = np.arange(n_per)[None, :]
    if counts is not None:
        for c, k in enumerate(counts):
            imgs[c, k:] = 255
    return TaskSampler.from_numpy(imgs, counts, "coded")


def _decode(x):
    v = np.rint(np.asarray(x)[:, 0, :2, 0] * 255).astype(int)
    return v[:, 0], v[:, 1]


@pytest.mark.parametrize("m,k,kq", [(5, 1, 1), (3, 2, 3), (7, 4, 2)])
def test_sampler_shapes_labels_and_distinct_examples(m, k, kq):
    s = _coded_sampler()
    for seed in range(5):
        t = s.sample(jax.random.PRNGKey(seed), m, k, kq)
        assert t.support_x.shape == (m * k, 4, 5, 1) and t.query_x.shape == (m * kq, 4, 5, 1)
        assert t.support_x.dtype == jnp.float32 and t.support_y.dtype == jnp.int32
        assert np.array_equal(np.bincount(np.asarray(t.support_y), minlength=m), np.full(m, k))
        assert np.array_equal(np.bincount(np.asarray(t.query_y), minlength=m), np.full(m, kq))
        sc, se = _decode(t.support_x)
        qc, qe = _decode(t.query_x)
        sy, qy = np.asarray(t.support_y), np.asarray(t.query_y)
        label_class = {}
        for c, y in [*zip(sc, sy), *zip(qc, qy)]:
            assert label_class.setdefault(y, c) == c  # one class per label
        assert len(set(label_class.values())) == m  # m distinct classes
        for y in range(m):  # k + kq distinct examples of the class
            ex = np.concatenate([se[sy == y], qe[qy == y]])
            assert len(set(ex.tolist())) == k + kq


def test_sampler_label_assignment_is_random_and_padding_never_drawn():
    counts = [3, 6, 4, 3, 5]
    s = _coded_sampler(5, 6, counts)
    assert s.min_count == 3
    first = set()
    for seed in range(40):
        t = s.sample(jax.random.PRNGKey(seed), 5, 2, 1)
        assert float(jnp.max(t.support_x)) < 1.0 and float(jnp.max(t.query_x)) < 1.0  # no 255 rows
        sc, _ = _decode(t.support_x)
        first.add(int(sc[0]))
    assert first == set(range(5))  # label 0 goes to every class sometime
    with pytest.raises(ValueError):
        s.sample(jax.random.PRNGKey(0), 5, 3, 1)  # k + kq > smallest class
    with pytest.raises(ValueError):
        s.sample(jax.random.PRNGKey(0), 6, 1, 1)  # more ways than classes


def test_sampler_determinism_jit_vmap_and_pytree():
    s = _coded_sampler()
    key = jax.random.PRNGKey(3)
    a, b = s.sample(key, 4, 2, 1), s.sample(key, 4, 2, 1)
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    c = s.sample(jax.random.PRNGKey(4), 4, 2, 1)
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    keys = jax.random.split(key, 8)
    batch = jax.jit(jax.vmap(s.task_fn(4, 2, 1)))(keys)
    assert batch.support_x.shape == (8, 8, 4, 5, 1)
    one = s.task_fn(4, 2, 1)(keys[5])
    assert np.array_equal(batch.support_x[5], one.support_x)
    via_arg = jax.jit(lambda smp, k: jax.vmap(lambda kk: smp.sample(kk, 4, 2, 1))(k))(s, keys)
    assert np.array_equal(via_arg.query_x, batch.query_x)


def test_sinusoid_ranges_and_determinism():
    keys = jax.random.split(jax.random.PRNGKey(0), 2000)
    t = jax.jit(jax.vmap(lambda k: sinusoid(k, 10, 15)))(keys)
    assert t.support_x.shape == (2000, 10, 1) and t.query_y.shape == (2000, 15, 1)
    x = np.concatenate([t.support_x, t.query_x], 1)[..., 0]
    y = np.concatenate([t.support_y, t.query_y], 1)[..., 0]
    assert x.min() >= -5 and x.max() <= 5 and x.min() < -4.9 and x.max() > 4.9
    assert np.abs(y).max() <= 5.0
    # Recover A and b per task by least squares on y = A cos(b) sin x - A sin(b) cos x.
    basis = np.stack([np.sin(x), -np.cos(x)], -1)
    coef = np.stack([np.linalg.lstsq(basis[i], y[i], rcond=None)[0] for i in range(len(x))])
    amp, phase = np.hypot(coef[:, 0], coef[:, 1]), np.arctan2(coef[:, 1], coef[:, 0])
    assert amp.min() >= 0.1 - 1e-4 and amp.max() <= 5 + 1e-4 and amp.min() < 0.2 and amp.max() > 4.9
    assert phase.min() >= -1e-4 and phase.max() <= np.pi + 1e-4
    again = sinusoid(keys[7], 10, 15)
    assert np.array_equal(again.support_y, t.support_y[7])


# ---------------------------------------------------------------------------------------------- glyphs


@pytest.fixture(scope="module")
def glyph_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("glyphs")


def test_glyphs_splits_shapes_disjoint_and_cached(glyph_cache):
    sp = glyphs(glyph_cache, seed=0, n_classes=60, per_class=20)
    names = [set(s.class_names) for s in sp]
    assert sum(len(n) for n in names) == 60
    assert not (names[0] & names[1]) and not (names[0] & names[2]) and not (names[1] & names[2])
    assert sp.train.images.shape[1:] == (20, 28, 28, 1) and sp.train.images.dtype == jnp.uint8
    assert (sp.train.n_classes, sp.val.n_classes, sp.test.n_classes) == (42, 6, 12)
    t = sp.test.sample(jax.random.PRNGKey(0), 5, 1, 3)
    assert t.support_x.shape == (5, 28, 28, 1) and 0 <= float(t.query_x.min()) and float(t.query_x.max()) <= 1
    # Drawers differ from one another; images have ink.
    imgs = np.asarray(sp.train.images[..., 0], np.float32)
    assert (imgs.max(axis=(2, 3)) > 100).all()
    assert np.abs(imgs[:, 0] - imgs[:, 1]).mean() > 5
    files = list(glyph_cache.glob("glyphs_*.npz"))
    assert len(files) == 1 and not list(glyph_cache.glob("*.tmp"))
    again = glyphs(glyph_cache, seed=0, n_classes=60, per_class=20)  # from the cache
    assert np.array_equal(again.train.images, sp.train.images) and again.test.class_names == sp.test.class_names
    by_alpha = glyphs(glyph_cache, seed=0, n_classes=60, per_class=20, split="alphabet")
    alpha = [{n.split("/")[0] for n in s.class_names} for s in by_alpha]
    assert not (alpha[0] & alpha[1]) and not (alpha[0] & alpha[2]) and not (alpha[1] & alpha[2])
    rot = glyphs(glyph_cache, seed=0, n_classes=60, per_class=20, rotations=True)
    assert rot.train.n_classes == 4 * 42 and rot.test.class_names == sp.test.class_names


def test_glyphs_byte_identical_by_seed():
    a = build_glyphs(seed=1, n_classes=12, per_class=20)
    b = build_glyphs(seed=1, n_classes=12, per_class=20)
    assert a["images"].tobytes() == b["images"].tobytes() and np.array_equal(a["names"], b["names"])
    c = build_glyphs(seed=2, n_classes=12, per_class=20)
    assert a["images"].tobytes() != c["images"].tobytes()


# -------------------------------------------------------------------------------------------- Omniglot


def _png(pattern_id: int, drawer: int) -> bytes:
    """A 105x105 mode-'1' PNG as in Omniglot: white background, a black stroke that depends on both ids."""
    a = np.ones((105, 105), bool)
    r = 10 + 7 * pattern_id
    a[r: r + 8, 5 + drawer: 90] = False
    a[10:95, 40 + 3 * pattern_id: 46 + 3 * pattern_id] = False
    buf = io.BytesIO()
    Image.fromarray(a).convert("1").save(buf, format="PNG")
    return buf.getvalue()


def _omniglot_zip(path, top, alphabets, n_chars=3, n_drawers=4, base=0):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{top}/", b"")
        pid = base
        for alpha in alphabets:
            for c in range(1, n_chars + 1):
                for d in range(1, n_drawers + 1):
                    zf.writestr(f"{top}/{alpha}/character{c:02d}/{pid:04d}_{d:02d}.png", _png(pid - base, d))
                pid += 1


@pytest.fixture
def omniglot_dir(tmp_path):
    _omniglot_zip(tmp_path / "images_background.zip", "images_background", ["Alpha_Script", "Beta_Runes"])
    _omniglot_zip(tmp_path / "images_evaluation.zip", "images_evaluation", ["Gamma"], base=6)
    return tmp_path


def test_omniglot_round_trip(omniglot_dir, tmp_path):
    sp = omniglot(omniglot_dir, cache_dir=tmp_path / "cache")
    base = [set(s.class_names) for s in (sp.test, sp.val)]
    train = {n.split("@")[0] for n in sp.train.class_names}
    assert len(train) + len(base[0]) + len(base[1]) == 9
    assert not (train & base[0]) and not (train & base[1]) and not (base[0] & base[1])
    assert sp.train.n_classes == 4 * len(train)  # rotations: training classes only
    assert all("@" not in n for n in sp.test.class_names + sp.val.class_names)
    assert sp.train.images.shape[1:] == (4, 28, 28, 1)
    # Every class's images equal the source PNG resized to 28x28 (Lanczos) and inverted.
    everything = dict(zip(sp.test.class_names + sp.val.class_names + sp.train.class_names,
                          np.concatenate([sp.test.images, sp.val.images, sp.train.images])))
    name = "images_background/Beta_Runes/character02"
    with Image.open(io.BytesIO(_png(4, 3))) as im:
        want = 255 - np.asarray(im.convert("L").resize((28, 28), Image.Resampling.LANCZOS))
    got = everything.get(name, everything.get(name + "@rot0"))
    assert np.array_equal(got[2, ..., 0], want)
    tr = sp.train
    i0 = tr.class_names.index(tr.class_names[0].split("@")[0] + "@rot0")
    i90 = tr.class_names.index(tr.class_names[0].split("@")[0] + "@rot90")
    assert np.array_equal(np.rot90(np.asarray(tr.images[i0]), 1, axes=(1, 2)), tr.images[i90])
    t = sp.train.sample(jax.random.PRNGKey(0), 5, 1, 1)
    assert t.support_x.shape == (5, 28, 28, 1)
    assert list((tmp_path / "cache").glob("omniglot_28.npz"))
    again = omniglot(omniglot_dir, cache_dir=tmp_path / "cache")
    assert again.test.class_names == sp.test.class_names and np.array_equal(again.test.images, sp.test.images)


def test_omniglot_missing_archive(omniglot_dir):
    os.remove(omniglot_dir / "images_evaluation.zip")
    with pytest.raises(DataError, match="images_evaluation.zip"):
        omniglot(omniglot_dir)


@pytest.mark.parametrize("damage", ["truncate", "crc"])
def test_omniglot_corrupt_archive(omniglot_dir, tmp_path, damage):
    path = omniglot_dir / "images_background.zip"
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) * 2 // 3]
    else:  # flip a byte inside a stored member's image data: the zip's CRC-32 no longer matches
        i = raw.index(b"IDAT") + 12
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="images_background.zip"):
        omniglot(omniglot_dir, cache_dir=cache)
    assert not cache.exists() or not list(cache.iterdir())  # nothing half-read was cached


# ---------------------------------------------------------------------------------------------- CIFAR


_CIFAR_NAMES = [f"class_{i}" for i in range(10)]


def _cifar_arrays(n, seed):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), n)
    rng.shuffle(labels)
    data = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
    return data, labels


def _cifar_tar(path, members=("meta", "train", "test")):
    tr, te = _cifar_arrays(5, 0), _cifar_arrays(1, 1)
    content = {
        "meta": {b"fine_label_names": [n.encode() for n in _CIFAR_NAMES], b"coarse_label_names": [b"c"]},
        "train": {b"filenames": [], b"fine_labels": tr[1].tolist(), b"coarse_labels": [0] * len(tr[1]), b"data": tr[0]},
        "test": {b"filenames": [], b"fine_labels": te[1].tolist(), b"coarse_labels": [0] * len(te[1]), b"data": te[0]},
    }
    with tarfile.open(path, "w:gz") as tf:
        for name in members:
            raw = pickle.dumps(content[name], protocol=2)
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(raw)
            tf.addfile(info, io.BytesIO(raw))
    return tr, te


def test_cifar_fs_round_trip_and_splits(tmp_path):
    tr, te = _cifar_tar(tmp_path / "cifar-100-python.tar.gz")
    sp = cifar_fs(tmp_path, cache_dir=tmp_path / "c")
    sets = [set(s.class_names) for s in sp]
    assert [len(s) for s in sets] == [6, 2, 2] and not (sets[0] & sets[1] | sets[0] & sets[2] | sets[1] & sets[2])
    assert set().union(*sets) == set(_CIFAR_NAMES)
    assert sp.train.images.shape[1:] == (6, 32, 32, 3)
    # Class 3's first image is the first train row with fine label 3, decoded as R, G, B planes.
    name = "class_3"
    split = next(s for s in sp if name in s.class_names)
    img = np.asarray(split.images[split.class_names.index(name), 0])
    row = tr[0][np.flatnonzero(tr[1] == 3)[0]]
    assert np.array_equal(img, row.reshape(3, 32, 32).transpose(1, 2, 0))
    t = sp.train.sample(jax.random.PRNGKey(1), 3, 1, 5)
    assert t.support_x.shape == (3, 32, 32, 3) and t.query_x.shape == (15, 32, 32, 3)
    p = cifar_fs(tmp_path, split="80/20", cache_dir=tmp_path / "c")
    assert p.val is None and (p.train.n_classes, p.test.n_classes) == (8, 2)
    assert not set(p.train.class_names) & set(p.test.class_names)
    given = cifar_fs(tmp_path, cache_dir=tmp_path / "c", classes={"train": _CIFAR_NAMES[:5], "test": _CIFAR_NAMES[5:]})
    assert given.train.class_names == tuple(_CIFAR_NAMES[:5]) and given.val is None


def test_cifar_fs_missing_archive(tmp_path):
    with pytest.raises(DataError, match="cifar-100-python.tar.gz"):
        cifar_fs(tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "flip", "no_meta"])
def test_cifar_fs_corrupt_archive(tmp_path, damage):
    path = tmp_path / "cifar-100-python.tar.gz"
    if damage == "no_meta":
        _cifar_tar(path, members=("train", "test"))
        match = "cifar-100-python.tar.gz.*meta"
    else:
        _cifar_tar(path)
        raw = bytearray(path.read_bytes())
        if damage == "truncate":
            raw = raw[: len(raw) - 200]
        else:
            raw[len(raw) // 2] ^= 0xFF
        path.write_bytes(bytes(raw))
        match = "cifar-100-python.tar.gz"
    with pytest.raises(DataError, match=match):
        cifar_fs(tmp_path, cache_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").iterdir())
