"""HTML pages of linked pictures: ``run``'s and ``demo``'s ``index.html``, and ``compare``'s report.

In:  rows of (caption, picture file) under a name. Out: one self-contained page whose links are relative (and
URL-quoted), so the folder can be moved or served as it is.

:func:`write_index_html` is upstream test.py's page (``util/html.py``): an ``<h3>`` with the image name and a one-row
table of 512-px images, each linked to its file. :func:`picture_cell` and :func:`page_start` are the pieces the
compare report (:mod:`compare_report`) builds its page from as well.
"""
from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple
from urllib.parse import quote

from ..errors import PathLike
from ..fileio import atomic_write_text


@dataclass(frozen=True)
class IndexRow:
    name: str
    images: Sequence[Tuple[str, Path]]  # (caption, file)


def page_start(title: str, style: str) -> List[str]:
    """The head of a page and its ``<h1>``."""
    e = html.escape
    return ["<!DOCTYPE html>", "<html><head><meta charset=\"utf-8\">", f"<title>{e(title)}</title>",
            f"<style>{style}</style>", "</head><body>", f"<h1>{e(title)}</h1>"]


def picture_cell(file: PathLike, base: Path, caption: str, *, width: int, alt: Optional[str] = None) -> str:
    """One table cell: the picture, ``width`` px wide and linked to its file (relative to ``base``), captioned."""
    e = html.escape
    rel = e(quote(Path(os.path.relpath(file, base)).as_posix()), quote=True)
    return (f"<td><a href=\"{rel}\"><img src=\"{rel}\" width=\"{width}\" alt=\"{e(alt or caption)}\"></a>"
            f"<br>{e(caption)}</td>")


def write_page(path: Path, parts: List[str]) -> Path:
    """Close the page and write it atomically."""
    atomic_write_text(path, "\n".join([*parts, "</body></html>"]) + "\n")
    return path


def write_index_html(path: PathLike, rows: Iterable[IndexRow], *, title: str, notice: Optional[str] = None,
                     width: int = 512) -> Path:
    path = Path(path)
    parts = page_start(title, "body{font-family:sans-serif;margin:1em}td{padding:4px;text-align:center;"
                              "vertical-align:top}.notice{background:#fff3cd;border:1px solid #e0c36c;"
                              "padding:.5em 1em}")
    if notice:
        parts.append(f"<p class=\"notice\">{html.escape(notice)}</p>")
    for row in rows:
        parts.append(f"<h3>{html.escape(row.name)}</h3><table><tr>")
        parts.extend(picture_cell(file, path.parent, caption, width=width) for caption, file in row.images)
        parts.append("</tr></table>")
    return write_page(path, parts)
