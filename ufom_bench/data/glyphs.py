"""``glyphs``: an offline, Omniglot-like few-shot data set rendered from the fonts matplotlib ships.

How it is made (deterministic given ``seed`` and the installed matplotlib fonts):

1. **Alphabets** are Unicode blocks (:data:`ALPHABETS`: Latin, Greek, Cyrillic, Armenian, Hebrew, Arabic,
   Georgian, Canadian syllabics, Ogham, Tifinagh, N'Ko, Lao, letterlike symbols, arrows, mathematical
   operators, technical symbols, box drawing, geometric shapes, dingbats, Braille, ...). A code point is a
   candidate character if it is a letter, number or symbol (Unicode category L*, N*, Sm, So) and at least
   :data:`MIN_FACES` faces contain it (``FT2Font.get_char_index(cp) != 0``) and render ink for it.
2. **Faces** (:data:`FACES`): the 16 DejaVu Sans/Serif/Sans Mono and STIX General regular/bold/italic
   faces, plus the Computer Modern faces cmr10, cmti10, cmss10, cmtt10 and cmb10 for ASCII letters and
   digits only (their other code points hold TeX symbols, not the Unicode characters).
3. **Deduplication**: characters that look the same (Latin A, Greek Alpha, Cyrillic A; box-drawing
   lines of equal shape; ...) would make classes that cannot be told apart. Each candidate is rendered
   in its first available face at 14x14; a candidate is dropped if its mean absolute difference to an
   earlier kept one is below :data:`DEDUP_THRESHOLD`. Glyphs whose ink box is under 10 px at a 40 px em
   (dots, commas) are dropped too.
4. **Classes**: at most :data:`MAX_PER_ALPHABET` (55, Omniglot's largest alphabet) characters per
   alphabet, a seeded subsample. This gives about 1,300 classes in about 29 alphabets with matplotlib
   3.11's fonts (the exact number is ``len(class_names)`` and is printed by ``python -m
   ufom_bench.data.glyphs``); ``n_classes`` takes a seeded subset (for tests).
5. **Drawers**: ``per_class`` (default 20, as Omniglot) examples per class. Drawer d of class c uses the
   class's available faces in turn (face ``(d + offset_c) mod n_faces``), with a seeded random
   stroke-width change (grey-scale morphological erosion/dilation by -0.75 .. +1.5 px at 56x56, linearly
   interpolated between whole steps), then a random affine map (rotation +-15 degrees, shear +-0.25,
   per-axis scale 0.8 .. 1.1, translation +-2 px at 28x28), bilinear resampling at 56x56 and 2x2 area
   averaging to 28x28. Images are grey, strokes bright (255) on 0, stored as uint8 and returned by the
   samplers as float32 in [0, 1].
6. **Splits** are class-disjoint: ``split="class"`` (default) permutes the classes with the seed and
   takes 70% / 10% / 20% for train / validation / test (Vinyals-style); ``split="alphabet"`` assigns
   whole alphabets (Lake-style, harder: test alphabets are unseen).

The build takes a few seconds on one core (measured: see the module's ``__main__``) and is cached as an
``.npz`` under ``cache_dir`` (default ``$UFOM_BENCH_CACHE`` or ``~/.cache/ufom-bench``), written
atomically and keyed by the seed, sizes, this module's version and the font files' sizes.
"""

from __future__ import annotations

import hashlib
import json
import os
import unicodedata
from pathlib import Path

import numpy as np

from .fewshot import (
    FewShotSplits,
    TaskSampler,
    _meta_array,
    _proportional_sizes,
    default_cache_dir,
    load_npz_cache,
    save_npz_atomic,
    split_classes,
)
from ufom_bench.errors import UserError

__all__ = ["glyphs", "build_glyphs", "ALPHABETS", "FACES"]

_VERSION = 1
SIZE = 28
_HI = 2 * SIZE  # rendering / warping resolution
_EM = 40  # em size in pixels at _HI resolution
_BOX = 48  # glyphs larger than this (at _HI) are scaled down to fit
MIN_FACES = 2
MAX_PER_ALPHABET = 55
DEDUP_THRESHOLD = 0.02
SPLIT_FRACTIONS = (0.7, 0.1, 0.2)

FACES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
    "cmr10.ttf", "cmti10.ttf", "cmss10.ttf", "cmtt10.ttf", "cmb10.ttf",
)
_ASCII_ALNUM = frozenset(range(0x30, 0x3A)) | frozenset(range(0x41, 0x5B)) | frozenset(range(0x61, 0x7B))

# (name, [(first, last_exclusive), ...]). Latin Extended Additional and Greek Extended are left out:
# they are mostly base letters with accents, near-duplicates at 28x28.
ALPHABETS = (
    ("Latin", [(0x30, 0x3A), (0x41, 0x5B), (0x61, 0x7B)]),
    ("Latin-Extended", [(0xC0, 0x250)]),
    ("IPA", [(0x250, 0x2B0)]),
    ("Greek", [(0x370, 0x400)]),
    ("Cyrillic", [(0x400, 0x530), (0xA640, 0xA6A0)]),
    ("Armenian", [(0x530, 0x590)]),
    ("Hebrew", [(0x590, 0x600)]),
    ("Arabic", [(0x600, 0x700)]),
    ("NKo", [(0x7C0, 0x800)]),
    ("Lao", [(0xE80, 0xF00)]),
    ("Georgian", [(0x10A0, 0x1100)]),
    ("Canadian-Syllabics", [(0x1400, 0x1680)]),
    ("Ogham", [(0x1680, 0x16A0)]),
    ("Tifinagh", [(0x2D30, 0x2D80)]),
    ("Currency", [(0x20A0, 0x20D0)]),
    ("Letterlike", [(0x2100, 0x2150)]),
    ("Number-Forms", [(0x2150, 0x2190)]),
    ("Arrows", [(0x2190, 0x2200)]),
    ("Math-Operators", [(0x2200, 0x2300)]),
    ("Technical", [(0x2300, 0x2400)]),
    ("Enclosed", [(0x2460, 0x2500)]),
    ("Box-Drawing", [(0x2500, 0x2580)]),
    ("Block-Elements", [(0x2580, 0x25A0)]),
    ("Geometric-Shapes", [(0x25A0, 0x2600)]),
    ("Misc-Symbols", [(0x2600, 0x2700)]),
    ("Dingbats", [(0x2700, 0x27C0)]),
    ("Math-Symbols", [(0x27C0, 0x2800), (0x2980, 0x2A00)]),
    ("Braille", [(0x2801, 0x2900)]),
    ("Supplemental-Math", [(0x2A00, 0x2B00)]),
    ("Symbols-Arrows", [(0x2B00, 0x2C00)]),
)


def _font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def _load_faces():
    from matplotlib.ft2font import FT2Font

    d = _font_dir()
    return [(name, FT2Font(str(d / name))) for name in FACES if (d / name).is_file()]


def _render(font, cp: int) -> np.ndarray:
    """One glyph, float32 [_HI, _HI] in [0, 1], ink box centred, scaled down to fit _BOX if larger."""
    from matplotlib.ft2font import LoadFlags
    from PIL import Image

    font.clear()
    font.set_size(_EM, 72)
    font.set_text(chr(cp), 0.0, flags=LoadFlags.NO_HINTING)
    font.draw_glyphs_to_bitmap(antialiased=True)
    img = np.asarray(font.get_image())
    out = np.zeros((_HI, _HI), np.float32)
    ys, xs = np.nonzero(img)
    if len(ys) == 0:
        return out
    img = img[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1].astype(np.float32) / 255.0
    h, w = img.shape
    if max(h, w) > _BOX:
        s = _BOX / max(h, w)
        h, w = max(1, round(h * s)), max(1, round(w * s))
        img = np.asarray(Image.fromarray(img, mode="F").resize((w, h), Image.Resampling.BILINEAR))
    y0, x0 = (_HI - h) // 2, (_HI - w) // 2
    out[y0: y0 + h, x0: x0 + w] = np.clip(img, 0.0, 1.0)
    return out


def _ink_extent(img: np.ndarray) -> int:
    ys, xs = np.nonzero(img > 0.2)
    return 0 if len(ys) == 0 else int(max(ys.max() - ys.min(), xs.max() - xs.min()) + 1)


def _candidates(faces):
    """[(alphabet, cp, [face indices])] with >= MIN_FACES faces holding cp, in ALPHABETS order."""
    out = []
    for alphabet, ranges in ALPHABETS:
        for a, b in ranges:
            for cp in range(a, b):
                cat = unicodedata.category(chr(cp))
                if not (cat[0] in "LN" or cat in ("Sm", "So")):
                    continue
                have = [i for i, (name, f) in enumerate(faces)
                        if (not name.startswith("cm") or cp in _ASCII_ALNUM) and f.get_char_index(cp) != 0]
                if len(have) >= MIN_FACES:
                    out.append((alphabet, cp, have))
    return out


def _select(faces, seed: int):
    """Deduplicated candidates, at most MAX_PER_ALPHABET per alphabet: [(alphabet, cp, faces)]."""
    cands = _candidates(faces)
    keep = []
    thumbs = np.empty((len(cands), 14 * 14), np.float32)
    for alphabet, cp, have in cands:
        img = _render(faces[have[0]][1], cp)
        if _ink_extent(img) < 10:
            continue
        t = img.reshape(14, 4, 14, 4).mean(axis=(1, 3)).ravel()
        if keep and np.abs(thumbs[: len(keep)] - t).mean(axis=1).min() < DEDUP_THRESHOLD:
            continue
        thumbs[len(keep)] = t
        keep.append((alphabet, cp, have))
    rng = np.random.default_rng([seed, 1])
    chosen = []
    for alphabet, _ in ALPHABETS:
        members = [c for c in keep if c[0] == alphabet]
        if len(members) > MAX_PER_ALPHABET:
            idx = np.sort(rng.choice(len(members), MAX_PER_ALPHABET, replace=False))
            members = [members[i] for i in idx]
        chosen += members
    return chosen


def _morph(x: np.ndarray, op) -> np.ndarray:
    """3x3 grey-scale dilation (op=np.maximum) or erosion (np.minimum) of a stack [B, H, W]."""
    fill = 0.0 if op is np.maximum else 1.0
    p = np.pad(x, ((0, 0), (1, 1), (1, 1)), constant_values=fill)
    out = x.copy()
    h, w = x.shape[1:]
    for dy in range(3):
        for dx in range(3):
            op(out, p[:, dy: dy + h, dx: dx + w], out=out)
    return out


def _stroke(src: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Stroke-width change by s in [-1, 2] (erosion < 0 < dilation), linear between whole steps."""
    d1 = _morph(src, np.maximum)
    levels = np.stack([_morph(src, np.minimum), src, d1, _morph(d1, np.maximum)], axis=1)  # s = -1, 0, 1, 2
    lo = np.clip(np.floor(s).astype(int), -1, 1)
    f = (s - lo)[:, None, None].astype(np.float32)
    b = np.arange(len(s))
    return (1 - f) * levels[b, lo + 1] + f * levels[b, lo + 2]


def _warp(src: np.ndarray, inv: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Bilinear resampling of [B, H, W] at source = inv @ (p - c - shift) + c for each output pixel p."""
    b, h, w = src.shape
    c = (h - 1) / 2.0
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float32) - c, np.arange(w, dtype=np.float32) - c, indexing="ij")
    px = xx[None] - shift[:, 0, None, None]
    py = yy[None] - shift[:, 1, None, None]
    sx = inv[:, 0, 0, None, None] * px + inv[:, 0, 1, None, None] * py + c
    sy = inv[:, 1, 0, None, None] * px + inv[:, 1, 1, None, None] * py + c
    x0, y0 = np.floor(sx).astype(np.int64), np.floor(sy).astype(np.int64)
    fx, fy = (sx - x0).astype(np.float32), (sy - y0).astype(np.float32)
    flat = src.reshape(-1)
    base = (np.arange(b) * h * w)[:, None, None]
    out = np.zeros_like(src)
    for dy, dx, wgt in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yi, xi = y0 + dy, x0 + dx
        ok = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)
        vals = flat[base + np.clip(yi, 0, h - 1) * w + np.clip(xi, 0, w - 1)]
        out += np.where(ok, vals, 0.0) * wgt
    return out


def build_glyphs(seed: int = 0, n_classes: int | None = None, per_class: int = 20) -> dict:
    """Render the data set (no cache). Returns images uint8 [C, per_class, 28, 28], class names, alphabets."""
    faces = _load_faces()
    chosen = _select(faces, seed)
    rng = np.random.default_rng([seed, 2])
    if n_classes is not None and n_classes < len(chosen):
        idx = np.sort(rng.choice(len(chosen), n_classes, replace=False))
        chosen = [chosen[i] for i in idx]
    n = len(chosen)
    # Sources: one rendering per (class, face) the class has; drop faces that render no ink.
    sources, class_src = [], []
    for alphabet, cp, have in chosen:
        ids = []
        for fi in have:
            img = _render(faces[fi][1], cp)
            if img.max() > 0.2:
                ids.append(len(sources))
                sources.append(img)
        class_src.append(ids or [len(sources) - 1])
    sources = np.stack(sources)
    offsets = rng.integers(0, 1 << 30, n)
    src_idx = np.array([[ids[(d + off) % len(ids)] for d in range(per_class)] for ids, off in zip(class_src, offsets)])
    # Per (class, drawer) distortion parameters, drawn in one fixed order.
    shape = (n, per_class)
    rot = np.deg2rad(rng.uniform(-15, 15, shape))
    shear = rng.uniform(-0.25, 0.25, shape)
    scale = rng.uniform(0.8, 1.1, shape + (2,))
    shift = rng.uniform(-2, 2, shape + (2,)) * (_HI / SIZE)
    stroke = rng.uniform(-0.75, 1.5, shape)
    cos, sin = np.cos(rot), np.sin(rot)
    rmat = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
    smat = np.zeros(shape + (2, 2))
    smat[..., 0, 0], smat[..., 0, 1], smat[..., 1, 1] = 1.0, shear, 1.0
    fwd = rmat @ smat @ (np.eye(2) * scale[..., None, :])  # scale columns, shear, rotate
    inv = np.linalg.inv(fwd).astype(np.float32).reshape(-1, 2, 2)
    flat_src, flat_stroke, flat_shift = src_idx.reshape(-1), stroke.reshape(-1), shift.reshape(-1, 2).astype(np.float32)
    out = np.empty((n * per_class, SIZE, SIZE), np.uint8)
    chunk = 2048
    for s in range(0, n * per_class, chunk):
        e = min(s + chunk, n * per_class)
        x = _stroke(sources[flat_src[s:e]], flat_stroke[s:e])
        x = _warp(x, inv[s:e], flat_shift[s:e])
        x = x.reshape(-1, SIZE, 2, SIZE, 2).mean(axis=(2, 4))
        out[s:e] = np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)
    return {
        "images": out.reshape(n, per_class, SIZE, SIZE),
        "names": np.asarray([f"{a}/U+{cp:04X}" for a, cp, _ in chosen]),
        "alphabets": np.asarray([a for a, _, _ in chosen]),
    }


def _meta(seed, n_classes, per_class):
    d = _font_dir()
    fonts = [[f, (d / f).stat().st_size] for f in FACES if (d / f).is_file()]
    return {"kind": "glyphs", "version": _VERSION, "seed": seed, "n_classes": n_classes, "per_class": per_class,
            "fonts": fonts}


def glyphs(cache_dir=None, seed: int = 0, *, n_classes: int | None = None, per_class: int = 20,
           split: str = "class", rotations: bool = False) -> FewShotSplits:
    """The offline default few-shot source: train/val/test :class:`TaskSampler` s over rendered glyphs.

    See the module docstring for how classes, drawers and splits are made. ``seed`` fixes the rendering
    and the split; the same seed gives byte-identical images. ``n_classes`` (default: all, about 1,300)
    and ``per_class`` (default 20) shrink the set for tests. ``rotations`` adds the training classes
    rotated by 90/180/270 degrees as extra classes, as for Omniglot. Cached on disk (see module doc).
    """
    if split not in ("class", "alphabet"):
        raise UserError(f"split must be 'class' or 'alphabet', got {split!r}")
    meta = _meta(seed, n_classes, per_class)
    key = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache_dir if cache_dir is not None else default_cache_dir()) / f"glyphs_{key}.npz"
    data = load_npz_cache(path, meta)
    if data is None:
        data = build_glyphs(seed, n_classes, per_class)
        try:
            save_npz_atomic(path, meta=_meta_array(meta), **data)
        except OSError:  # unwritable cache directory: use the data without caching it
            pass
    images, names, alphabets = data["images"], [str(s) for s in data["names"]], data["alphabets"]
    n = len(names)
    sizes = _proportional_sizes(n, SPLIT_FRACTIONS)
    parts = split_classes(n, sizes, seed, groups=alphabets if split == "alphabet" else None)

    def make(idx, s, rotate=False):
        from .fewshot import _rotations

        imgs, counts, nms = images[idx], np.full(len(idx), images.shape[1], np.int32), [names[i] for i in idx]
        if rotate:
            imgs, counts, nms = _rotations(imgs, counts, nms)
        return TaskSampler.from_numpy(imgs, counts, f"glyphs/{s}", nms)

    return FewShotSplits(make(parts[0], "train", rotations), make(parts[1], "val"), make(parts[2], "test"))


if __name__ == "__main__":  # python -m ufom_bench.data.glyphs [out.png]: build time, sizes, a contact sheet
    import sys
    import time

    t = time.perf_counter()
    data = build_glyphs()
    dt = time.perf_counter() - t
    imgs = data["images"]
    print(f"{imgs.shape[0]} classes x {imgs.shape[1]} drawers in {len(set(data['alphabets'].tolist()))} alphabets, "
          f"built in {dt:.1f} s (pid {os.getpid()})")
    for a in dict.fromkeys(data["alphabets"].tolist()):
        print(f"  {a}: {int((data['alphabets'] == a).sum())}")
    if len(sys.argv) > 1:
        from PIL import Image

        rows = imgs[:: max(1, len(imgs) // 40)][:40, :20]
        sheet = rows.transpose(0, 2, 1, 3).reshape(rows.shape[0] * SIZE, rows.shape[1] * SIZE)
        Image.fromarray(255 - sheet).save(sys.argv[1])
