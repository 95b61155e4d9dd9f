"""Text and page count of a PDF, read with pypdf (the report's page count; the tests read its text)."""

from __future__ import annotations

import os
from typing import Union

from pypdf import PdfReader


def pdf_page_count(path: Union[str, os.PathLike]) -> int:
    """Number of pages of the PDF at ``path``."""
    return len(PdfReader(path).pages)


def pdf_text(path: Union[str, os.PathLike]) -> str:
    """The text of all pages in order, one line per line of text as pypdf extracts it (stripped, blank
    lines dropped; a wrapped paragraph or a table row may span several lines)."""
    lines = (line.strip() for page in PdfReader(path).pages for line in (page.extract_text() or "").splitlines())
    return "\n".join(line for line in lines if line)
