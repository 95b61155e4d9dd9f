"""`Report`: a small PDF builder on reportlab platypus for ufom-bench's results.

    rep = Report("ufom-bench", "UFOM's theory against measurements")
    rep.section("Bias and variance")
    rep.paragraph("UFOM is unbiased for every q; its variance grows like 1/q (Lemma 1).")
    rep.figure(fig, caption="What to see: ...", title="Variance against q")
    rep.table(df, caption="...")
    rep.claims_table([{"claim": ..., "source": "Lemma 1", "measured": "0.12 ± 0.03",
                       "criterion": "|z| < 4", "verdict": "holds"}])
    rep.build("results/report.pdf")

Every `add`-style method renders its content at once (a figure is saved to PNG when `figure` is called,
a formula is typeset when `formula` is called), so later changes to a figure do not leak into the
document and errors point at the call that caused them. `build` lays everything out and writes the file
atomically: a temporary file beside the target, moved over it with `os.replace` only when complete.

Figures are 200 dpi PNGs scaled to the text width; formulas are matplotlib mathtext drawn as vector
outlines (no TeX needed), with a monospace fallback counted in `Report.formula_fallbacks`. Text uses the
PDF standard fonts (Helvetica, Courier; reportlab substitutes the Symbol font for Greek letters), so the
text can be searched and extracted. Headings, figure titles and table titles are PDF text, numbered (figures
and tables only with ``number_floats``), in the PDF outline (bookmarks) and, for sections, in the table of
contents. `summary` puts a paragraph on the first page, under the title, that may be computed at build time
from the sections added (`sections`), so that it names every section however the report was assembled.
"""

from __future__ import annotations

import datetime as _dt
import io
import math
import numbers
import os
import re
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Optional, Sequence, Union
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.enums import TA_RIGHT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import cm
from reportlab.lib.utils import ImageReader
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.platypus import (
    CondPageBreak,
    Flowable,
    HRFlowable,
    Image,
    KeepTogether,
    ListFlowable,
    ListItem,
    PageBreak,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)
from reportlab.platypus.flowables import _listWrapOn
from reportlab.platypus.tableofcontents import TableOfContents

from ufom_bench.report._math import MathFlowable, parse_math, sanitize
from ufom_bench.report.pdftext import pdf_page_count, pdf_text  # the report's page count; re-exported for the tests

__all__ = ["Report", "FormulaFallback", "VERDICTS", "pdf_text", "pdf_page_count", "sanitize"]

VERDICTS = ("holds", "fails", "inconclusive")
# A cell that reads as a number (or a missing value): right-aligned in tables.
_NUMBER = re.compile(r"^\s*(?:[-+\u2212]?(?:\d[\d,]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?%?|\u2013|\u2192 0|nan|inf|-inf)\s*$")
FIGURE_DPI = 200

# --- look -------------------------------------------------------------------------------------------------
_INK = colors.HexColor("#1a1a1a")
_ACCENT = colors.HexColor("#1f3b5a")  # headings
_MUTED = colors.HexColor("#555555")
_RULE = colors.HexColor("#8a96a3")
_HEADER_BG = colors.HexColor("#e4e9f0")
_ZEBRA = colors.HexColor("#f4f6f9")
# Verdict cells: light fills with dark text of the same hue (readable in grey print; the word says it too).
_VERDICT_STYLE = {
    "holds": (colors.HexColor("#cde9d3"), colors.HexColor("#14532d")),
    "fails": (colors.HexColor("#f5cfcd"), colors.HexColor("#7f1d1d")),
    "inconclusive": (colors.HexColor("#e2e2e2"), colors.HexColor("#333333")),
}


def _styles() -> dict:
    body = ParagraphStyle("body", fontName="Helvetica", fontSize=10, leading=14, textColor=_INK,
                          spaceAfter=6)
    return {
        "body": body,
        "small": ParagraphStyle("small", parent=body, fontSize=8.5, leading=11.5, spaceAfter=4),
        "title": ParagraphStyle("title", parent=body, fontName="Helvetica-Bold", fontSize=22, leading=27,
                                textColor=_ACCENT, spaceAfter=6),
        "subtitle": ParagraphStyle("subtitle", parent=body, fontSize=13, leading=17, textColor=_MUTED,
                                   spaceAfter=4),
        "meta": ParagraphStyle("meta", parent=body, fontSize=8.5, leading=11, textColor=_MUTED),
        "h1": ParagraphStyle("h1", parent=body, fontName="Helvetica-Bold", fontSize=15, leading=19,
                             textColor=_ACCENT, spaceBefore=16, spaceAfter=8, keepWithNext=1),
        "h2": ParagraphStyle("h2", parent=body, fontName="Helvetica-Bold", fontSize=12, leading=15,
                             textColor=_ACCENT, spaceBefore=12, spaceAfter=5, keepWithNext=1),
        "figtitle": ParagraphStyle("figtitle", parent=body, fontName="Helvetica-Bold", fontSize=10.5,
                                   leading=13.5, spaceBefore=8, spaceAfter=4, keepWithNext=1),
        "caption": ParagraphStyle("caption", parent=body, fontSize=8.5, leading=11.5, textColor=_MUTED,
                                  spaceBefore=3, spaceAfter=10),
        "cell": ParagraphStyle("cell", parent=body, fontSize=8.5, leading=10.5, spaceAfter=0),
        "cell_num": ParagraphStyle("cell_num", parent=body, fontSize=8.5, leading=10.5, spaceAfter=0,
                                   alignment=TA_RIGHT),
        "cell_head": ParagraphStyle("cell_head", parent=body, fontName="Helvetica-Bold", fontSize=8.5,
                                    leading=10.5, spaceAfter=0),
        "cell_mono": ParagraphStyle("cell_mono", parent=body, fontName="Courier", fontSize=8,
                                    leading=10.5, spaceAfter=0),
        "mono": ParagraphStyle("mono", parent=body, fontName="Courier", fontSize=8.5, leading=11,
                               leftIndent=12, spaceAfter=2),
        "formula_label": ParagraphStyle("formula_label", parent=body, fontName="Courier", fontSize=8,
                                        leading=10, textColor=_MUTED, alignment=TA_RIGHT, spaceAfter=0),
        "toc_head": ParagraphStyle("toc_head", parent=body, fontName="Helvetica-Bold", fontSize=11,
                                   leading=14, textColor=_ACCENT, spaceBefore=10, spaceAfter=4),
    }


class FormulaFallback(NamedTuple):
    """A formula that mathtext could not typeset and that is shown as its LaTeX source instead."""

    label: str
    latex: str
    error: str


# --- platypus plumbing --------------------------------------------------------------------------------------
class _Heading(Paragraph):
    """A paragraph that goes into the PDF outline (and, if `toc`, the table of contents) when placed."""

    def __init__(self, text: str, style, outline_level: int, key: str, toc: bool):
        super().__init__(escape(text), style)
        self.outline = (outline_level, text, key, toc)


class _PageTotal(Flowable):
    """Zero-size indexing flowable: `multiBuild` repeats until the page total is stable ("page N of M")."""

    def __init__(self, doc: "_Doc"):
        super().__init__()
        self.doc, self.total, self._before = doc, None, None

    def wrap(self, availWidth, availHeight):
        return 0, 0

    def draw(self):
        pass

    def isIndexing(self):
        return 1

    def beforeBuild(self):
        self._before = self.total

    def notify(self, kind, stuff):  # multiBuild sends every indexing flowable the TOC entries
        pass

    def afterBuild(self):
        self.total = self.doc.page

    def isSatisfied(self):
        return self.total is not None and self.total == self._before


class _Doc(SimpleDocTemplate):
    def afterFlowable(self, flowable):
        info = getattr(flowable, "outline", None)
        if info is None:
            return
        level, text, key, toc = info
        self.canv.bookmarkPage(key)
        self.canv.addOutlineEntry(text, key, level=level, closed=level >= 1)
        if toc:
            self.notify("TOCEntry", (level, text, self.page, key))


class _LeadIn(KeepTogether):
    """Head flowables (titles, caption) and a long table that may run over pages.

    KeepTogether would move the whole block to a new page whenever it does not fit, leaving most of a
    page empty before a long table. This starts a new page only if the head and the table's first rows
    (`lead`, a Table used only to measure them) do not fit in the space left.
    """

    def __init__(self, head: list, table: Table, lead: Table):
        super().__init__(list(head) + [table])
        self._head, self._table, self._lead = list(head), table, lead
        for f in self._head:  # split() already keeps them with the first rows; keepWithNext would
            f.keepWithNext = 0  # glue them to the whole table and move it all to the next page

    def with_prefix(self, prefix: list) -> "_LeadIn":
        return _LeadIn(list(prefix) + self._head, self._table, self._lead)

    def split(self, aW, aH):
        _, h = _listWrapOn(self._head + [self._lead], aW, self.canv)
        frame = getattr(self, "_frame", None)
        at_top = frame is not None and getattr(frame, "_atTop", False)
        parts = self._content[:]
        if h > aH and not at_top:
            parts.insert(0, self.FrameBreak())
        return parts


_LEAD_ROWS = 5  # rows of a long table that must fit under its title, else it starts on the next page
_KEEP_ROWS = 25  # tables up to this many rows are kept on one page with their title


def _table_block(head: list, data: list, widths: list, style: list) -> Flowable:
    """A styled table under its head: kept together when short, else a `_LeadIn`."""
    t = Table(data, colWidths=widths, repeatRows=1, hAlign="LEFT")
    t.setStyle(TableStyle(style))
    if len(data) <= _KEEP_ROWS + 1:
        return KeepTogether(list(head) + [t])
    # Fresh paragraphs for the measuring copy (a flowable should not sit in two tables).
    lead_rows = [[Paragraph(c.text, c.style) if isinstance(c, Paragraph) else c for c in row]
                 for row in data[: _LEAD_ROWS + 1]]
    lead = Table(lead_rows, colWidths=widths, hAlign="LEFT")
    lead.setStyle(TableStyle(Report._table_style()))
    return _LeadIn(head, t, lead)


def _bind_headings(story: list) -> list:
    """Keep headings on the page of the block that follows them.

    reportlab's keepWithNext does not join a heading to a following KeepTogether (a container), so a
    section heading could end a page while its figure or table starts the next. Here trailing headings
    (with the CondPageBreaks among them) are moved into the next KeepTogether.
    """
    out: list = []
    for f in story:
        if isinstance(f, KeepTogether):
            j = len(out)
            while j > 0 and isinstance(out[j - 1], (_Heading, CondPageBreak)):
                j -= 1
            heads = [g for g in out[j:] if isinstance(g, _Heading)]
            if heads:
                lead = [g for g in out[j:] if isinstance(g, CondPageBreak)][:1]
                del out[j:]
                merged = f.with_prefix(heads) if isinstance(f, _LeadIn) else KeepTogether(heads + list(f._content))
                out += lead + [merged]
                continue
        out.append(f)
    return out


def _close_figure(fig) -> None:
    """Release pyplot's reference to `fig` (without importing pyplot, which would pick a backend)."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        plt.close(fig)


def _figure_title(fig) -> Optional[str]:
    """The figure's suptitle, else the first non-empty axes title (seaborn FacetGrid puts it in suptitle)."""
    sup = getattr(fig, "_suptitle", None)
    if sup is not None and sup.get_text().strip():
        return sup.get_text().strip()
    for ax in fig.get_axes():
        for loc in ("center", "left", "right"):
            t = ax.get_title(loc=loc).strip()
            if t:
                return t
    return None


def _text(x: Any, float_format: str) -> str:
    """A table cell as text: floats by `float_format`, missing values as an en dash, bools as yes/no."""
    if x is None:
        return "\u2013"
    if isinstance(x, (bool,)) or type(x).__name__ == "bool_":
        return "yes" if x else "no"
    if isinstance(x, numbers.Integral):
        return str(int(x))
    if isinstance(x, numbers.Real):
        x = float(x)
        if math.isnan(x):
            return "\u2013"
        return float_format.format(x)
    try:
        import pandas as pd

        if pd.isna(x):
            return "\u2013"
    except (TypeError, ValueError):
        pass
    return str(x)


def _paras(text: str) -> list:
    """Split text into paragraphs at blank lines; single newlines are spaces."""
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]


# --- the builder --------------------------------------------------------------------------------------------
class Report:
    """A PDF document assembled piece by piece, written by `build`.

    Args:
      title: shown on the first page, in the footer of every page and in the PDF's metadata.
      subtitle: a line under the title.
      author: optional, shown under the subtitle and in the metadata.
      date: shown under the subtitle; default today's date (pass "" to show none).
      toc: include a table of contents (sections and subsections) after the title when there are at
        least two sections.
      numbered: number sections ("2", "2.1").
      number_floats: number figures and tables ("Figure 3", "Table 2"); with False their headings are their
        titles alone (for a report whose subject has its own numbered figures and tables).
      pagesize: a reportlab page size, default A4.
    Attributes:
      formula_fallbacks: FormulaFallback for each formula shown as LaTeX source because mathtext
        could not typeset it.
    """

    def __init__(self, title: str, subtitle: str = "", *, author: str = "", date: Optional[str] = None,
                 toc: bool = True, numbered: bool = True, number_floats: bool = True, pagesize=A4):
        self.title, self.subtitle, self.author = title, subtitle, author
        self.number_floats = numbered and number_floats
        self.sections: list[tuple[str, str, str]] = []  # (number, title, one-line summary) per section
        self.texts: list[str] = []  # every paragraph, bullet and caption added, in order (tests look for repeats)
        self._summary: Optional[Callable[["Report"], str]] = None
        self.date = _dt.date.today().isoformat() if date is None else date
        self.toc, self.numbered, self.pagesize = toc, numbered, pagesize
        self.margins = dict(leftMargin=2.2 * cm, rightMargin=2.2 * cm, topMargin=2.0 * cm,
                            bottomMargin=2.2 * cm)
        self.styles = _styles()
        self.formula_fallbacks: list[FormulaFallback] = []
        # Each item makes fresh flowables on every build (platypus consumes and splits flowables).
        self._items: list[Callable[[], list]] = []
        self._sec = [0, 0]  # section, subsection counters
        self._level = -1  # outline level of the last heading (-1: none yet)
        self._n_fig = self._n_tab = self._n_keys = 0

    # geometry
    @property
    def text_width(self) -> float:
        """Width of the text frame in points."""
        return self.pagesize[0] - self.margins["leftMargin"] - self.margins["rightMargin"]

    @property
    def text_height(self) -> float:
        """Height of the text frame in points (less platypus's frame padding)."""
        return self.pagesize[1] - self.margins["topMargin"] - self.margins["bottomMargin"] - 12

    @property
    def n_sections(self) -> int:
        return self._sec[0]

    def _key(self) -> str:
        self._n_keys += 1
        return f"k{self._n_keys}"

    def _add(self, make: Callable[[], list]) -> "Report":
        self._items.append(make)
        return self

    # --- structure ---
    def section(self, title: str, summary: str = "") -> "Report":
        """Start a numbered section (outline level 0, in the table of contents); ``summary``, a phrase saying
        what it holds, is kept in `sections` for the first page's `summary`."""
        self._sec = [self._sec[0] + 1, 0]
        self.sections.append((str(self._sec[0]) if self.numbered else "", title, summary))
        text = f"{self._sec[0]} {title}" if self.numbered else title
        self._level = 0
        key, st = self._key(), self.styles["h1"]
        return self._add(lambda: [CondPageBreak(4 * cm), _Heading(text, st, 0, key, True)])

    def subsection(self, title: str) -> "Report":
        """Start a subsection of the current section (outline level 1, in the table of contents)."""
        if self._sec[0] == 0:
            return self.section(title)
        self._sec[1] += 1
        text = f"{self._sec[0]}.{self._sec[1]} {title}" if self.numbered else title
        self._level = 1
        key, st = self._key(), self.styles["h2"]
        return self._add(lambda: [CondPageBreak(3 * cm), _Heading(text, st, 1, key, True)])

    def summary(self, text: Union[str, Callable[["Report"], str]]) -> "Report":
        """Set the paragraph shown on the first page under the title: text, or a function of this report
        called at build time (so it can name every section in `sections`, added before or after this call)."""
        self._summary = text if callable(text) else (lambda _rep: text)
        return self

    def page_break(self) -> "Report":
        return self._add(lambda: [PageBreak()])

    # --- text ---
    def paragraph(self, text: str, *, markup: bool = False, style: str = "body") -> "Report":
        """Add text; blank lines separate paragraphs.

        Args:
          text: plain text (escaped), or reportlab paragraph markup (<b>, <i>, <sub>, <super>, <font>)
            if `markup`.
          style: 'body' or 'small'.
        """
        st = self.styles[style]
        self.texts += _paras(text)
        parts = _paras(text) if markup else [escape(p) for p in _paras(text)]
        return self._add(lambda: [Paragraph(p, st) for p in parts])

    def bullets(self, items: Iterable[str], *, markup: bool = False) -> "Report":
        """Add a bulleted list of short texts."""
        st = self.styles["body"]
        items = list(items)
        self.texts += items
        texts = [t if markup else escape(t) for t in items]

        def make():
            return [ListFlowable([ListItem(Paragraph(t, st), leftIndent=14) for t in texts],
                                 bulletType="bullet", start="\u2022", leftIndent=14, bulletFontSize=8)]

        return self._add(make)

    def add(self, *flowables: Flowable) -> "Report":
        """Escape hatch: add reportlab flowables as they are.

        Unlike the other methods' content, these objects are shared by every `build` of this report;
        platypus usually copes, but a flowable that keeps layout state may not survive a second build.
        """
        items = list(flowables)
        return self._add(lambda: list(items))

    # --- figures ---
    def figure(self, fig, caption: str = "", title: Optional[str] = None, *, width: float = 1.0,
               close: bool = True) -> "Report":
        """Add a matplotlib (or seaborn) figure as a 200 dpi PNG scaled to `width` x the text width.

        The figure is rendered now (later changes to it do not show), with a tight bounding box.

        Args:
          fig: a matplotlib Figure, or an object with a `.figure` / `.fig` one (a seaborn grid).
          caption: shown under the figure; say what the reader should see.
          title: heading above the figure ("Figure n. title"), PDF text and a bookmark; default the
            figure's suptitle or first axes title.
          width: fraction of the text width, in (0, 1]. The height follows the aspect ratio and is capped
            so that heading, figure and caption fit on one page.
          close: close the figure in pyplot afterwards (frees it; avoids pyplot's many-figures warning).
        """
        if not 0 < width <= 1:
            raise ValueError(f"width must be in (0, 1], got {width}")
        mpl_fig = fig if hasattr(fig, "savefig") and hasattr(fig, "get_axes") else getattr(
            fig, "figure", getattr(fig, "fig", fig))
        title = title if title is not None else _figure_title(mpl_fig)
        buf = io.BytesIO()
        mpl_fig.savefig(buf, format="png", dpi=FIGURE_DPI, bbox_inches="tight", pad_inches=0.04,
                        facecolor="white")
        png = buf.getvalue()
        if close:
            _close_figure(mpl_fig)
        px_w, px_h = ImageReader(io.BytesIO(png)).getSize()
        w = self.text_width * width
        h = w * px_h / px_w
        max_h = self.text_height - 3.5 * cm
        if h > max_h:
            w, h = w * max_h / h, max_h
        self._n_fig += 1
        if caption:
            self.texts.append(caption)
        label = f"Figure {self._n_fig}" if self.number_floats else "Figure"
        head = (f"{label}. {title}" if self.number_floats else title) if title else label
        level, key = self._level + 1, self._key()
        st_t, st_c = self.styles["figtitle"], self.styles["caption"]

        def make():
            img = Image(io.BytesIO(png), width=w, height=h)
            img.hAlign = "CENTER"
            parts = [_Heading(head, st_t, level, key, False), img]
            if caption:
                parts.append(Paragraph(escape(caption), st_c))
            else:
                parts.append(Spacer(1, 8))
            return [KeepTogether(parts)]

        return self._add(make)

    # --- tables ---
    def _col_widths(self, col_widths, header: list, rows: list, style_w: float = 8.5) -> list:
        n = len(header)
        avail = self.text_width
        if col_widths is not None:
            cw = [float(x) for x in col_widths]
            if len(cw) != n:
                raise ValueError(f"col_widths has {len(cw)} entries for {n} columns")
            return [x * avail for x in cw] if sum(cw) <= 1.0 + 1e-9 else cw
        # Natural widths: the longest cell (capped) and the whole header on one line, if that fits; else
        # the header may wrap at its words; if still too wide, wide columns share what narrow ones leave.
        pad = 9
        longest = [max((stringWidth(r[j], "Helvetica", style_w) for r in rows[:200]), default=0)
                   for j in range(n)]
        cap = 0.45 * avail
        head_full = [stringWidth(str(h), "Helvetica-Bold", style_w) for h in header]
        head_word = [max((stringWidth(w, "Helvetica-Bold", style_w) for w in str(h).split()), default=0)
                     for h in header]
        for heads in (head_full, head_word):
            nat = [max(min(c, cap), min(h, cap), 14) + pad for c, h in zip(longest, heads)]
            if sum(nat) <= avail:
                return nat
        total = sum(nat)
        fair = avail / n
        narrow = [x for x in nat if x <= fair]
        wide_total = total - sum(narrow)
        room = avail - sum(narrow)
        return [x if x <= fair else x * room / wide_total for x in nat]

    @staticmethod
    def _table_style() -> list:
        return [
            ("BACKGROUND", (0, 0), (-1, 0), _HEADER_BG),
            ("LINEABOVE", (0, 0), (-1, 0), 0.8, _RULE),
            ("LINEBELOW", (0, 0), (-1, 0), 0.6, _RULE),
            ("LINEBELOW", (0, -1), (-1, -1), 0.8, _RULE),
            ("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, _ZEBRA]),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ("LEFTPADDING", (0, 0), (-1, -1), 4),
            ("RIGHTPADDING", (0, 0), (-1, -1), 4),
            ("TOPPADDING", (0, 0), (-1, -1), 2.5),
            ("BOTTOMPADDING", (0, 0), (-1, -1), 2.5),
        ]

    def _caption_block(self, kind: str, caption: str, title: Optional[str]) -> tuple:
        """(heading flowable factory, caption paragraph or None) for a numbered table."""
        self._n_tab += 1
        if caption:
            self.texts.append(caption)
        label = f"{kind} {self._n_tab}" if self.number_floats else kind
        head = (f"{label}. {title}" if self.number_floats else title) if title else label
        level, key = self._level + 1, self._key()
        st_t, st_c = self.styles["figtitle"], self.styles["caption"]
        cap = escape(caption) if caption else ""

        def heading():
            return _Heading(head, st_t, level, key, False)

        def cap_para():
            return Paragraph(cap, ParagraphStyle("tcap", parent=st_c, spaceBefore=0, spaceAfter=4,
                                                 keepWithNext=1)) if cap else None

        return heading, cap_para

    def table(self, df, caption: str = "", col_widths: Optional[Sequence[float]] = None, *,
              title: Optional[str] = None, index: Optional[bool] = None, float_format: str = "{:.4g}",
              formatters: Optional[Mapping[str, Callable[[Any], str]]] = None,
              max_rows: Optional[int] = 200, mono_columns: Sequence[str] = ()) -> "Report":
        """Add a pandas DataFrame as a table: styled header (repeated on each page), zebra rows, wrapping.

        Args:
          df: the data. Column names become the header; a MultiIndex's levels are joined with " / ".
          caption: shown above the table, under its title.
          col_widths: fractions of the text width (if they sum to <= 1) or points, one per column;
            default from the content (natural widths when they fit, else shared).
          title: "Table n. title" heading (PDF text and a bookmark).
          index: include the index as leading column(s); default when it is not a plain RangeIndex.
          float_format: format for floats; integers print as they are, NaN/None as an en dash.
          formatters: column name -> function giving the cell text, overriding the defaults.
          max_rows: show at most this many rows (a note under the table says how many were left out);
            None shows all.
          mono_columns: columns set in a monospace font (hashes, identifiers).
        """
        import pandas as pd

        if index is None:
            index = not isinstance(df.index, pd.RangeIndex) or any(n is not None for n in df.index.names)
        frame = df.reset_index() if index else df
        n_total = len(frame)
        if max_rows is not None and n_total > max_rows:
            frame = frame.iloc[:max_rows]
        header = [" / ".join(str(x) for x in c if str(x)) if isinstance(c, tuple) else str(c)
                  for c in frame.columns]
        formatters = dict(formatters or {})
        rows = []
        for rec in frame.itertuples(index=False, name=None):
            rows.append([formatters[h](v) if h in formatters else _text(v, float_format)
                         for h, v in zip(header, rec)])
        # Right-align columns whose cells all read as numbers (also numbers given as text).
        numeric = [bool(rows) and all(_NUMBER.match(r[j]) for r in rows) for j in range(len(header))]
        widths = self._col_widths(col_widths, header, rows)
        mono = set(mono_columns)
        S = self.styles
        heading, cap_para = self._caption_block("Table", caption, title)
        more = n_total - len(frame)
        note = f"{more} more rows not shown ({n_total} in all)." if more > 0 else ""

        head_num = ParagraphStyle("cell_head_num", parent=S["cell_head"], alignment=TA_RIGHT)

        def make():
            data = [[Paragraph(escape(h), head_num if num else S["cell_head"]) for h, num in zip(header, numeric)]]
            for r in rows:
                data.append([Paragraph(escape(c), S["cell_mono"] if h in mono else
                                       S["cell_num"] if num else S["cell"])
                             for c, h, num in zip(r, header, numeric)])
            head = [heading()]
            cp = cap_para()
            if cp is not None:
                head.append(cp)
            out = [_table_block(head, data, widths, self._table_style())]
            if note:
                out.append(Paragraph(escape(note), S["caption"]))
            else:
                out.append(Spacer(1, 10))
            return out

        return self._add(make)

    def claims_table(self, rows: Sequence[Mapping[str, str]], caption: str = "", *,
                     title: str = "Claims and verdicts") -> "Report":
        """Add the claims checked against measurements, one row each, with a coloured verdict cell.

        Args:
          rows: dicts with keys claim, source (e.g. "Lemma 1"), measured (with its uncertainty),
            criterion (the test and its level), verdict (one of "holds", "fails", "inconclusive"), and
            optionally note (shown under the claim) and id (e.g. "C3", shown in a first column when any row
            has one; ids must be unique). Missing optional keys show as empty cells.
          caption: shown above the table.
          title: the table's heading.
        A summary line (how many hold, fail, are inconclusive) precedes the table. The verdict is
        written as a word in its cell; the colour only repeats it.
        Raises:
          ValueError: an unknown verdict or key, a row without a claim, or a repeated id.
        """
        allowed = {"claim", "source", "measured", "criterion", "verdict", "note", "id"}
        clean = []
        for i, row in enumerate(rows):
            extra = set(row) - allowed
            if extra:
                raise ValueError(f"claims row {i}: unknown keys {sorted(extra)} (allowed: {sorted(allowed)})")
            verdict = str(row.get("verdict", "")).strip().lower()
            if verdict not in VERDICTS:
                raise ValueError(f"claims row {i}: verdict must be one of {VERDICTS}, got {row.get('verdict')!r}")
            if not str(row.get("claim", "")).strip():
                raise ValueError(f"claims row {i}: no claim")
            clean.append({k: str(row.get(k, "") or "") for k in allowed} | {"verdict": verdict})
        ids = [r["id"] for r in clean if r["id"]]
        if len(ids) != len(set(ids)):
            raise ValueError(f"claims ids repeat: {sorted({i for i in ids if ids.count(i) > 1})}")
        with_id = bool(ids)
        counts = {v: sum(r["verdict"] == v for r in clean) for v in VERDICTS}
        n = len(clean)
        summary = (f"{n} claim{'s' if n != 1 else ''}: " + ", ".join(f"{counts[v]} {v}" for v in VERDICTS)
                   + ".")
        fractions = (0.06, 0.29, 0.11, 0.19, 0.22, 0.13) if with_id else (0.31, 0.12, 0.19, 0.23, 0.15)
        widths = [f * self.text_width for f in fractions]
        S = self.styles
        heading, cap_para = self._caption_block("Table", caption, title)
        v_col = len(widths) - 1

        def make():
            head = ["ID"] * with_id + ["Claim", "Source", "Measured", "Criterion", "Verdict"]
            data = [[Paragraph(h, S["cell_head"]) for h in head]]
            style = self._table_style()
            for i, r in enumerate(clean, start=1):
                claim = escape(r["claim"])
                if r["note"]:
                    claim += f'<br/><font size="7.5" color="#555555"><i>{escape(r["note"])}</i></font>'
                bg, fg = _VERDICT_STYLE[r["verdict"]]
                vstyle = ParagraphStyle("verdict", parent=S["cell_head"], textColor=fg)
                data.append([Paragraph(escape(r["id"]), S["cell_head"])] * with_id + [
                             Paragraph(claim, S["cell"]), Paragraph(escape(r["source"]), S["cell"]),
                             Paragraph(escape(r["measured"]), S["cell"]),
                             Paragraph(escape(r["criterion"]), S["cell"]),
                             Paragraph(r["verdict"], vstyle)])
                style.append(("BACKGROUND", (v_col, i), (v_col, i), bg))
            top = [heading()]
            cp = cap_para()
            if cp is not None:
                top.append(cp)
            top.append(Paragraph(escape(summary), S["small"]))
            return [_table_block(top, data, widths, style), Spacer(1, 10)]

        return self._add(make)

    def provenance(self, info: Mapping[str, Any], caption: str = "", *, title: str = "Provenance") -> "Report":
        """Add a two-column key/value table (versions, backend, device, git commit, ...).

        Nested mappings are flattened to dotted keys; lists and tuples are joined with ", ".
        """
        flat: list[tuple] = []

        def walk(prefix: str, value):
            if isinstance(value, Mapping):
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else str(k), v)
            elif isinstance(value, (list, tuple)):
                flat.append((prefix, ", ".join(str(v) for v in value)))
            else:
                flat.append((prefix, "\u2013" if value is None else str(value)))

        walk("", info)
        S = self.styles
        widths = [0.3 * self.text_width, 0.7 * self.text_width]
        heading, cap_para = self._caption_block("Table", caption, title)

        def make():
            data = [[Paragraph("Item", S["cell_head"]), Paragraph("Recorded", S["cell_head"])]]
            data += [[Paragraph(escape(k), S["cell"]), Paragraph(escape(v), S["cell_mono"])] for k, v in flat]
            top = [heading()]
            cp = cap_para()
            if cp is not None:
                top.append(cp)
            return [_table_block(top, data, widths, self._table_style()), Spacer(1, 10)]

        return self._add(make)

    # --- formulas ---
    def formula(self, latex: str, label: str = "", *, caption: str = "", size: float = 12.0,
                align: str = "center") -> bool:
        """Add a display formula typeset by matplotlib mathtext (vector), with an optional label at right.

        LaTeX that mathtext lacks is rewritten first (`sanitize`: \\le -> \\leq, \\tfrac -> \\frac, ...).
        If it still cannot be typeset, the LaTeX source is shown in monospace and the failure is
        recorded in `formula_fallbacks` (no exception).

        Args:
          latex: the formula, without or with surrounding $...$.
          label: shown at the right (e.g. "(19)" or a name); PDF text.
          caption: a small note under the formula, kept on the same page.
          size: font size in points (formulas wider than the text are scaled down to fit).
          align: 'center' or 'left'.
        Returns:
          True if typeset, False if shown as source.
        """
        if align not in ("center", "left"):
            raise ValueError(f"align must be 'center' or 'left', got {align!r}")
        try:
            path = parse_math(latex, size=size)
            ok = True
        except ValueError as e:
            path, ok = None, False
            self.formula_fallbacks.append(FormulaFallback(label, latex, str(e)))
        S = self.styles
        label_w = 0.0
        if label:
            label_w = min(stringWidth(label, "Courier", 8) + 10, 0.35 * self.text_width)
        cap = escape(caption)
        src = escape(latex)
        indent = 12 if align == "left" else 0
        # A label beside a formula too wide to share the line would shrink it: set the label on its own
        # line, below at the right (as amsmath does with tags).
        label_below = bool(label) and ok and path.get_extents().width + indent > self.text_width - label_w

        def make():
            if ok:
                body = MathFlowable(path, align=align, indent=indent)
            else:
                body = Paragraph(src + '  <font name="Helvetica" size="7" color="#555555">'
                                 "[LaTeX source: not typeset by mathtext]</font>", S["mono"])
            parts = [body]
            if label_below:  # (no nested KeepTogether: its wrap reports a huge height, forcing breaks)
                parts.append(Paragraph(escape(label), S["formula_label"]))
            elif label:
                t = Table([[body, Paragraph(escape(label), S["formula_label"])]],
                          colWidths=[self.text_width - label_w, label_w], hAlign="LEFT")
                t.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
                                       ("LEFTPADDING", (0, 0), (-1, -1), 0),
                                       ("RIGHTPADDING", (0, 0), (-1, -1), 0),
                                       ("TOPPADDING", (0, 0), (-1, -1), 1),
                                       ("BOTTOMPADDING", (0, 0), (-1, -1), 1)]))
                parts = [t]
            if cap:
                parts.append(Paragraph(cap, ParagraphStyle("fcap", parent=S["small"], leftIndent=12,
                                                           textColor=_MUTED, spaceAfter=6)))
            else:
                parts.append(Spacer(1, 4))
            return [KeepTogether(parts)]

        self._add(make)
        return ok

    # --- output ---
    def _front_matter(self, doc: _Doc) -> list:
        S = self.styles
        out = [Paragraph(escape(self.title), S["title"])]
        if self.subtitle:
            out.append(Paragraph(escape(self.subtitle), S["subtitle"]))
        meta = " \u00b7 ".join(x for x in (self.author, self.date) if x)
        if meta:
            out.append(Paragraph(escape(meta), S["meta"]))
        out += [Spacer(1, 6), HRFlowable(width="100%", thickness=0.8, color=_RULE, spaceAfter=8)]
        if self._summary is not None:
            out += [Paragraph(escape(p), S["body"]) for p in _paras(self._summary(self))]
        if self.toc and self._sec[0] >= 2:
            toc = TableOfContents(dotsMinLevel=0)
            toc.levelStyles = [
                ParagraphStyle("toc0", parent=S["body"], fontSize=10, leading=13, leftIndent=0,
                               firstLineIndent=0, spaceBefore=2, spaceAfter=0),
                ParagraphStyle("toc1", parent=S["body"], fontSize=9, leading=12, leftIndent=16,
                               firstLineIndent=0, spaceAfter=0, textColor=_MUTED),
            ]
            out += [Paragraph("Contents", S["toc_head"]), toc,
                    HRFlowable(width="100%", thickness=0.5, color=_RULE, spaceBefore=8, spaceAfter=4)]
        return out

    def _footer(self, total: _PageTotal, canvas, doc) -> None:
        canvas.saveState()
        y = self.margins["bottomMargin"] - 0.9 * cm
        x0, x1 = self.margins["leftMargin"], self.pagesize[0] - self.margins["rightMargin"]
        canvas.setStrokeColor(_RULE)
        canvas.setLineWidth(0.4)
        canvas.line(x0, y + 10, x1, y + 10)
        canvas.setFont("Helvetica", 7.5)
        canvas.setFillColor(_MUTED)
        title = self.title if len(self.title) <= 90 else self.title[:87] + "..."
        canvas.drawString(x0, y, title)
        page = f"Page {doc.page}" + (f" of {total.total}" if total.total else "")
        canvas.drawRightString(x1, y, page)
        canvas.restoreState()

    def build(self, path: Union[str, os.PathLike], *, compress: bool = True, invariant: bool = False) -> Path:
        """Lay out the document and write it to `path` atomically; return the path.

        The PDF is written to a temporary file in the target's directory and moved over `path` with
        `os.replace` only when complete: on an exception the target is untouched (an old report stays)
        and the temporary file is removed. Parent directories are created.

        Args:
          compress: compress the page content streams (text stays extractable with `pdf_text`).
          invariant: reproducible output (fixed creation date and document id), e.g. for tests.
        """
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        try:
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; the report is an ordinary file
            doc = _Doc(tmp, pagesize=self.pagesize, title=self.title, subject=self.subtitle,
                       author=self.author, creator="ufom-bench report (reportlab)",
                       pageCompression=1 if compress else 0, invariant=1 if invariant else 0,
                       **self.margins)
            total = _PageTotal(doc)
            story: list = [total] + self._front_matter(doc)
            for make in self._items:
                story.extend(make())
            story = _bind_headings(story)
            footer = partial(self._footer, total)
            doc.multiBuild(story, onFirstPage=footer, onLaterPages=footer)
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        return target
