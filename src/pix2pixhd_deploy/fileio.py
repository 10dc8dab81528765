"""File helpers shared by every stage: atomic writes, natural sort, progress bars, output folders.

Every file this package writes goes to a temporary name in the destination folder and is renamed into place, so an
interrupted run (Ctrl-C, SIGKILL, a full disk) never leaves a truncated file under a final name, and a re-run can
trust that a file that exists is complete.
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator, List, Optional, TypeVar

import numpy as np

from .errors import PathLike, UserError

T = TypeVar("T")

#: Prefix of temporary files; a leftover one (from SIGKILL) is never mistaken for an output.
TMP_PREFIX = ".tmp-"


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: mkstemp makes 0600 files; outputs get the usual 0666 & ~umask, like any file a program creates.
_FILE_MODE = 0o666 & ~_current_umask()


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + path.name + ".", dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: PathLike, text: str) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)


def atomic_write_array(path: PathLike, array: np.ndarray) -> None:
    """Write ``array`` raw (C order, native little-endian), as numpy's ``tofile`` and ais_bench do."""
    with atomic_open(path, "wb") as fh:
        np.ascontiguousarray(array).tofile(fh)


def atomic_save_image(path: PathLike, image: np.ndarray, **save_kwargs) -> None:
    """Save an (H, W) or (H, W, 3) uint8 array with Pillow; the format comes from the suffix."""
    from PIL import Image

    path = Path(path)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}.get(path.suffix.lower())
    if fmt is None:
        raise UserError(f"unsupported image suffix {path.suffix!r}", path=path, fix="use .png or .jpg")
    with atomic_open(path, "wb") as fh:
        Image.fromarray(image).save(fh, format=fmt, **save_kwargs)


def remove_stale_temporaries(folder: PathLike) -> int:
    """Delete temporary files a killed run left in ``folder``; return how many."""
    n = 0
    for p in Path(folder).glob(TMP_PREFIX + "*"):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            n += 1
    return n


def ensure_output_dir(path: PathLike, *, what: str = "output folder") -> Path:
    """Create ``path`` (and parents) or raise a :class:`UserError` that says why it cannot be used."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"the {what} is an existing file, not a folder", path=path,
                        fix="choose a folder path or move that file")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the {what}: {exc.strerror or exc}", path=path,
                        fix="choose a folder you can write to") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"the {what} is not writable", path=path, fix="choose a folder you can write to")
    return path


def stem_of(path: PathLike) -> str:
    """A file's name cut at its first '.', the naming rule of the seed scripts and of ais_bench."""
    return Path(path).name.split(".", 1)[0]


_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> List[object]:
    """Sort key that compares digit runs as numbers, case-insensitively (ais_bench's file order)."""
    return [int(part) if part.isdigit() else part.lower() for part in _DIGITS.split(name)]


def natural_sorted(paths: Iterable[PathLike]) -> List[Path]:
    return sorted((Path(p) for p in paths), key=lambda p: natural_key(p.name))


def progress(iterable: Iterable[T], *, desc: str, total: Optional[int] = None, unit: str = "img") -> Iterable[T]:
    """A tqdm progress bar on a terminal (stderr), nothing in logs and pipes."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=None, dynamic_ncols=True, leave=True)


def free_bytes(path: PathLike) -> int:
    """Free space on the filesystem that holds ``path`` (its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists():
        p = p.parent
    return os.statvfs(p).f_bavail * os.statvfs(p).f_frsize


#: Indirection so tests can simulate a full disk without filling one.
free_bytes_fn: Callable[[PathLike], int] = free_bytes


def check_free_space(folder: PathLike, needed: int, *, what: str) -> None:
    """Refuse, with the numbers, when ``folder``'s filesystem has less than ``needed`` bytes free."""
    free = free_bytes_fn(folder)
    if free < needed:
        gib = 1024 ** 3
        raise UserError(
            f"not enough free disk for {what}: needs {needed / gib:.2f} GiB, {free / gib:.2f} GiB free",
            path=folder, fix="free some space, choose another output folder, or process fewer images")
