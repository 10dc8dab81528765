"""``index.html``: each coloured label map beside its synthesized picture, like upstream test.py's page.

Upstream (``util/html.py``) writes an ``<h3>`` with the image name and a one-row table of 512-px images, each linked
to its file. This page does the same with relative links, so the folder can be moved or served as it is.
"""
from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence, Tuple

from .errors import PathLike
from .fileio import atomic_write_text


@dataclass(frozen=True)
class IndexRow:
    name: str
    images: Sequence[Tuple[str, Path]]  # (caption, file)


def write_index_html(path: PathLike, rows: Iterable[IndexRow], *, title: str, notice: Optional[str] = None,
                     width: int = 512) -> Path:
    path = Path(path)
    base = path.parent
    parts = [
        "<!DOCTYPE html>", "<html><head><meta charset=\"utf-8\">", f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:1em}td{padding:4px;text-align:center;vertical-align:top}"
        ".notice{background:#fff3cd;border:1px solid #e0c36c;padding:.5em 1em}</style>",
        "</head><body>", f"<h1>{html.escape(title)}</h1>",
    ]
    if notice:
        parts.append(f"<p class=\"notice\">{html.escape(notice)}</p>")
    for row in rows:
        parts.append(f"<h3>{html.escape(row.name)}</h3><table><tr>")
        for caption, file in row.images:
            rel = html.escape(Path(os.path.relpath(file, base)).as_posix(), quote=True)
            parts.append(f"<td><a href=\"{rel}\"><img src=\"{rel}\" width=\"{width}\" alt=\"{html.escape(caption)}\">"
                         f"</a><br>{html.escape(caption)}</td>")
        parts.append("</tr></table>")
    parts.append("</body></html>")
    atomic_write_text(path, "\n".join(parts) + "\n")
    return path
