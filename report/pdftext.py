"""Best-effort text and page count of a PDF written by reportlab: a test helper, not a general PDF reader.

No PDF library is a dependency of the project, so this reads what reportlab writes with its standard
Type 1 fonts: each content stream (ASCII85 and/or Flate encoded, or plain), and in it the string operands
of the text operators Tj, TJ, ' and ". Strings are decoded with the font's encoding (WinAnsi, or the
Symbol / ZapfDingbats encodings that reportlab substitutes for characters such as Greek letters).
Line moves (Td, TD, Tm, T*, ET) become newlines. Embedded TrueType subsets, object streams and other
writers' PDFs are out of scope.
"""

from __future__ import annotations

import base64
import os
import re
import zlib
from typing import Iterator, Union

from reportlab.pdfbase.rl_codecs import RL_Codecs

RL_Codecs.register()  # the 'symbol' and 'zapfdingbats' codecs

_STREAM = re.compile(rb"stream\r?\n")
_LENGTH = re.compile(rb"/Length\s+(\d+)(?!\s+\d+\s+R)")
_FILTERS = re.compile(rb"/Filter\s*(\[[^\]]*\]|/\w+)")
_FONT_OBJ = re.compile(rb"<<[^<>]*?/Type\s*/Font[^<>]*?>>")
_CODECS = {"Symbol": "symbol", "ZapfDingbats": "zapfdingbats"}
_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"f": b"\f"}
_LINE_OPS = {b"Td", b"TD", b"Tm", b"T*", b"ET", b"'", b'"'}
_DELIMS = b"()<>[]{}/% \t\r\n\f\x00"


def _read(path: Union[str, os.PathLike]) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def pdf_page_count(path: Union[str, os.PathLike]) -> int:
    """Number of page objects (`/Type /Page`) in the file."""
    return len(re.findall(rb"/Type\s*/Page(?![A-Za-z])", _read(path)))


def _streams(data: bytes) -> Iterator[bytes]:
    """Decoded payloads of the non-image streams, in file order."""
    for m in _STREAM.finditer(data):
        head = data[data.rfind(b"obj", 0, m.start()) : m.start()]
        if b"/Image" in head or b"/FontFile" in head:
            continue
        length = _LENGTH.search(head)
        if length:
            body = data[m.end() : m.end() + int(length.group(1))]
        else:
            end = data.find(b"endstream", m.end())
            body = data[m.end() : end if end >= 0 else len(data)]
        filters = _FILTERS.search(head)
        names = re.findall(rb"/(\w+)", filters.group(1)) if filters else []
        try:
            for name in names:
                if name in (b"ASCII85Decode", b"A85"):
                    body = base64.a85decode(body.strip(), adobe=True)
                elif name in (b"FlateDecode", b"Fl"):
                    body = zlib.decompress(body)
                else:
                    raise ValueError(name)
        except Exception:
            continue  # not something we can read: skip the stream
        yield body


def _fonts(data: bytes) -> dict:
    """Resource name (e.g. b'F1') -> Python codec for its strings."""
    out = {}
    for m in _FONT_OBJ.finditer(data):
        d = m.group(0)
        name, base = re.search(rb"/Name\s*/(\w+)", d), re.search(rb"/BaseFont\s*/([\w\-+]+)", d)
        if name and base:
            out[name.group(1)] = _CODECS.get(base.group(1).decode("latin-1").split("+")[-1], "cp1252")
    return out


def _literal(s: bytes, i: int) -> tuple:
    """Parse the literal string starting after '(' at s[i]; return (bytes, index after ')')."""
    out, depth, n = bytearray(), 1, len(s)
    while i < n:
        ch = s[i : i + 1]
        if ch == b"\\":
            nxt = s[i + 1 : i + 2]
            if nxt in _ESCAPES:
                out += _ESCAPES[nxt]
                i += 2
            elif nxt and nxt in b"01234567":
                j = i + 1
                while j < min(i + 4, n) and s[j] in b"01234567":
                    j += 1
                out.append(int(s[i + 1 : j], 8) & 0xFF)
                i = j
            elif nxt in (b"\r", b"\n"):  # line continuation
                i += 2 + (nxt == b"\r" and s[i + 2 : i + 3] == b"\n")
            else:
                out += nxt
                i += 2
            continue
        if ch == b"(":
            depth += 1
        elif ch == b")":
            depth -= 1
            if depth == 0:
                return bytes(out), i + 1
        out += ch
        i += 1
    return bytes(out), n


def _content_text(stream: bytes, fonts: dict) -> str:
    """Text shown by one content stream; a newline for each line move."""
    parts, pending, codec = [], [], "cp1252"
    i, n, last_name = 0, len(stream), None
    while i < n:
        ch = stream[i : i + 1]
        if ch in b" \t\r\n\f\x00[]":
            i += 1
        elif ch == b"(":
            raw, i = _literal(stream, i + 1)
            pending.append(raw.decode(codec, errors="replace"))
        elif ch == b"<":
            if stream[i + 1 : i + 2] == b"<":
                i += 2
                continue
            j = stream.find(b">", i)
            j = n if j < 0 else j
            hexs = re.sub(rb"\s", b"", stream[i + 1 : j])
            try:
                pending.append(bytes.fromhex((hexs + b"0" * (len(hexs) % 2)).decode()).decode(codec, "replace"))
            except ValueError:
                pass
            i = j + 1
        elif ch == b">":
            i += 1
        elif ch == b"%":
            j = stream.find(b"\n", i)
            i = n if j < 0 else j
        elif ch == b"/":
            j = i + 1
            while j < n and stream[j : j + 1] not in _DELIMS:
                j += 1
            last_name, i = stream[i + 1 : j], j
        else:
            j = i
            while j < n and stream[j : j + 1] not in _DELIMS:
                j += 1
            tok, i = stream[i:j], max(j, i + 1)
            if tok == b"Tf" and last_name is not None:
                codec = fonts.get(last_name, "cp1252")
            elif tok in (b"Tj", b"TJ", b"'", b'"'):
                if tok in (b"'", b'"'):
                    parts.append("\n")
                parts.append("".join(pending))
            if not tok[:1].isdigit() and tok[:1] not in (b"-", b"+", b"."):
                pending = []  # an operator consumes its operands
            if tok in _LINE_OPS and tok not in (b"'", b'"'):
                parts.append("\n")
    return "".join(parts)


def pdf_text(path: Union[str, os.PathLike]) -> str:
    """Best-effort text of a reportlab PDF (test helper; see the module docstring for the scope).

    Returns the text of all pages in file order, one line per line of text as laid out (a paragraph
    wrapped over two lines gives two lines; runs in different fonts within a line are joined).
    """
    data = _read(path)
    fonts = _fonts(data)
    text = "".join(_content_text(s, fonts) for s in _streams(data))
    return re.sub(r"\n\s*\n+", "\n", text).strip()
