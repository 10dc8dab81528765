"""Uploaded label and instance maps read by the one reader (:mod:`labelmaps`), so errors say what the CLI says.

In:  the bytes of the ``label`` (and optional ``instance``) form fields, the map options of the request, and the
     server's ``--max-pixels``.
Out: :class:`labelmaps.Maps` (label uint8, instance int32 or None, both fitted; the map's own size), or a
     :class:`UserError` (:class:`TooLarge` for a map over ``--max-pixels``, which the app answers with 413).

The pixel count is checked on the PNG header before any pixel is decoded, so a decompression bomb (a tiny file that
declares a huge image) costs nothing. Errors name the form field and the uploaded file's name, never a server path.
"""
from __future__ import annotations

import io
from types import SimpleNamespace
from typing import Optional

from ..data.labelmaps import MapOptions, Maps, Upload, load_maps
from ..errors import UserError

#: what a map may hold by default: the Cityscapes size (1024x2048) four times over
DEFAULT_MAX_PIXELS = 4 * 1024 * 2048


class TooLarge(UserError):
    """A map with more pixels than the server takes (HTTP 413)."""


def upload(field: str, filename: Optional[str], data: bytes) -> Upload:
    """An upload named as errors show it: the form field and the client's file name (its last part only)."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    return Upload(f"{field} ({name})" if name else field, data)


def check_pixels(source: Upload, max_pixels: int) -> None:
    """:class:`TooLarge` when the image's header declares more than ``max_pixels`` pixels (nothing decoded)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(source.data)) as img:
            width, height = img.size
    except Exception:  # noqa: BLE001 - an unreadable header is the reader's to name, in its own words
        return
    if width * height > max_pixels:
        raise TooLarge(f"the map is {width}x{height} = {width * height} pixels, more than this server takes "
                       f"({max_pixels}, --max-pixels)", path=source,
                       fix="send a smaller map (e.g. the Cityscapes 2048x1024), or start the server with a larger "
                           "--max-pixels")


def read_maps(label: Upload, instance: Optional[Upload], options: MapOptions, max_pixels: int) -> Maps:
    """Both maps read and fitted as ``run`` reads a pair (see the module docstring)."""
    for source in (label, instance):
        if source is not None:
            if not source.data:
                raise UserError("the file is empty", path=source, fix="send the PNG's bytes")
            check_pixels(source, max_pixels)
    return load_maps(SimpleNamespace(label=label, instance=instance), options)
