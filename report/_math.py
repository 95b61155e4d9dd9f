"""Formulas typeset with matplotlib's mathtext and drawn on the reportlab canvas as vector outlines.

No TeX installation is needed: mathtext lays the formula out and `TextPath` gives the glyph outlines and
rules (fraction bars, radicals) as one matplotlib `Path`, which `MathFlowable` replays as a PDF path.
The result is sharp at any zoom and adds no images to the PDF. mathtext knows a subset of LaTeX;
`sanitize` rewrites the common commands it lacks, and what still fails to parse is reported to the caller
(`parse_math` raises ValueError), who shows the source instead.
"""

from __future__ import annotations

import re
from typing import Optional

from matplotlib.font_manager import FontProperties
from matplotlib.path import Path
from matplotlib.textpath import TextPath
from reportlab.lib.colors import Color, black
from reportlab.pdfgen.canvas import FILL_NON_ZERO
from reportlab.platypus import Flowable

# (pattern, replacement) for LaTeX that mathtext does not know, applied in order. `(?![A-Za-z])` keeps a
# command from matching the start of a longer one (\le must not touch \left).
_REWRITES: tuple = (
    (r"\\(?:displaystyle|textstyle|scriptstyle|limits|nolimits)(?![A-Za-z])\s*", ""),
    (r"\\le(?![A-Za-z])", r"\\leq"),
    (r"\\ge(?![A-Za-z])", r"\\geq"),
    (r"\\ne(?![A-Za-z])", r"\\neq"),
    (r"\\iff(?![A-Za-z])", r"\\Leftrightarrow"),
    (r"\\implies(?![A-Za-z])", r"\\Rightarrow"),
    (r"\\impliedby(?![A-Za-z])", r"\\Leftarrow"),
    (r"\\(?:tfrac|cfrac)(?![A-Za-z])", r"\\frac"),
    (r"\\[lr]Vert(?![A-Za-z])", r"\\Vert"),
    (r"\\[lr]vert(?![A-Za-z])", r"|"),
    (r"\\operatorname\*", r"\\operatorname"),
    (r"\\textrm(?![A-Za-z])", r"\\mathrm"),
    (r"\\textbf(?![A-Za-z])", r"\\mathbf"),
    (r"\\textit(?![A-Za-z])", r"\\mathit"),
    (r"\\(?:bm|boldsymbol)(?![A-Za-z])", r"\\mathbf"),
    (r"\\coloneqq(?![A-Za-z])", r":="),
    (r"\\eqqcolon(?![A-Za-z])", r"=:"),
)


def _display_fractions(s: str) -> str:
    """\\frac outside any braces -> \\dfrac, as in a LaTeX display (mathtext shrinks every \\frac)."""
    out, depth, i = [], 0, 0
    while i < len(s):
        if s.startswith("\\frac", i) and not s[i + 5 : i + 6].isalpha():
            out.append("\\dfrac" if depth == 0 else "\\frac")
            i += 5
            continue
        if s[i] == "\\":  # keep escaped characters (\{, \}) and command names whole
            j = i + 1
            while j < len(s) and s[j].isalpha():
                j += 1
            j = max(j, i + 2)
            out.append(s[i:j])
            i = j
            continue
        depth += {"{": 1, "}": -1}.get(s[i], 0)
        out.append(s[i])
        i += 1
    return "".join(out)


def sanitize(latex: str, display: bool = True) -> str:
    """Rewrite LaTeX commands that mathtext lacks into ones it has (\\le -> \\leq, \\tfrac -> \\frac, ...).

    Surrounding `$...$` (or `\\(...\\)`) is removed, since the caller adds its own math delimiters.
    With `display`, top-level fractions are set at full size (\\dfrac), nested ones stay small.
    """
    s = latex.strip()
    if s.startswith("$") and s.endswith("$") and len(s) >= 2:
        s = s.strip("$").strip()
    elif s.startswith(r"\(") and s.endswith(r"\)"):
        s = s[2:-2].strip()
    if display:  # before the rewrites, so that \\tfrac (-> \\frac) stays small
        s = _display_fractions(s)
    for pattern, repl in _REWRITES:
        s = re.sub(pattern, repl, s)
    return s


def parse_math(latex: str, size: float = 11.0, fontset: str = "cm") -> Path:
    """The outline of `latex` (sanitized, set in math mode) at `size` points, baseline at y = 0.

    Raises:
      ValueError: mathtext cannot typeset it (the message names the problem).
    """
    s = sanitize(latex)
    if not s:
        raise ValueError("empty formula")
    try:
        path = TextPath((0, 0), f"${s}$", size=size, prop=FontProperties(math_fontfamily=fontset))
    except Exception as e:  # pyparsing errors arrive as ValueError; anything else is a failure too
        msg = str(e).strip().splitlines()
        raise ValueError(f"mathtext cannot typeset {latex!r}: {msg[-1] if msg else type(e).__name__}") from e
    if len(path.vertices) == 0:
        raise ValueError(f"mathtext produced nothing for {latex!r}")
    return path


class MathFlowable(Flowable):
    """A typeset formula as a platypus flowable: vector outlines, scaled down (never up) to fit the width.

    Args:
      path: from `parse_math`.
      align: 'left' (with `indent` points), 'center' or 'right' within the available width.
      pad: vertical space above and below the formula, points.
    """

    def __init__(self, path: Path, align: str = "center", indent: float = 0.0, pad: float = 3.0,
                 color: Optional[Color] = None):
        super().__init__()
        if align not in ("left", "center", "right"):
            raise ValueError(f"align must be 'left', 'center' or 'right', got {align!r}")
        self.path, self.align, self.indent, self.pad = path, align, indent, pad
        self.color = color or black
        ext = path.get_extents()
        self._x0, self._y0, self._w, self._h = ext.x0, ext.y0, ext.width, ext.height
        self._scale = 1.0

    def wrap(self, availWidth, availHeight):
        room = max(availWidth - self.indent, 1.0)
        self._scale = min(1.0, room / self._w) if self._w > 0 else 1.0
        self.width = availWidth
        self.height = self._h * self._scale + 2 * self.pad
        return self.width, self.height

    def draw(self):
        c, s = self.canv, self._scale
        w = self._w * s
        if self.align == "left":
            x = self.indent
        elif self.align == "right":
            x = self.width - w
        else:
            x = max(self.indent, (self.width - w) / 2)
        c.saveState()
        c.translate(x, self.pad)
        c.scale(s, s)
        c.translate(-self._x0, -self._y0)
        c.setFillColor(self.color)
        c.drawPath(_to_reportlab(c, self.path), stroke=0, fill=1, fillMode=FILL_NON_ZERO)
        c.restoreState()


def _to_reportlab(canvas, path: Path):
    """Replay a matplotlib Path as a reportlab path (quadratic Beziers raised to cubic ones)."""
    p = canvas.beginPath()
    cur = start = (0.0, 0.0)
    for verts, code in path.iter_segments(simplify=False, curves=True):
        if code == Path.MOVETO:
            cur = start = (verts[0], verts[1])
            p.moveTo(*cur)
        elif code == Path.LINETO:
            cur = (verts[0], verts[1])
            p.lineTo(*cur)
        elif code == Path.CURVE3:
            (cx, cy), end = (verts[0], verts[1]), (verts[2], verts[3])
            c1 = (cur[0] + 2 / 3 * (cx - cur[0]), cur[1] + 2 / 3 * (cy - cur[1]))
            c2 = (end[0] + 2 / 3 * (cx - end[0]), end[1] + 2 / 3 * (cy - end[1]))
            p.curveTo(*c1, *c2, *end)
            cur = end
        elif code == Path.CURVE4:
            p.curveTo(*verts[:6])
            cur = (verts[4], verts[5])
        elif code == Path.CLOSEPOLY:
            p.close()
            cur = start
    return p
