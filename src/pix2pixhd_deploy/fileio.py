"""File helpers shared by every stage: atomic writes, natural sort, progress bars, output folders.

Every file this package writes goes to a temporary name in the destination folder and is renamed into place, so an
interrupted run (Ctrl-C, SIGKILL, a full disk) never leaves a truncated file under a final name, and a re-run can
trust that a file that exists is complete. The file is fsynced before its rename and the folder after it, so a
power cut too leaves either the old state or the new one (docs/reliability.md gives the measured cost).
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import math
import os
import re
import stat
import tempfile
import zlib
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator, List, Optional, Tuple, TypeVar

import numpy as np

from .errors import PathLike, UserError

T = TypeVar("T")

#: Prefix of temporary files; a leftover one (from SIGKILL) is never mistaken for an output. The full name is
#: ``.tmp-<final name>.<pid>.<random>``: the writer's process id tells a live run's file from a dead run's.
TMP_PREFIX = ".tmp-"


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: mkstemp makes 0600 files; outputs get the usual 0666 & ~umask, like any file a program creates.
_FILE_MODE = 0o666 & ~_current_umask()


#: errors of writing a file that the user can fix (a full disk, a read-only or missing folder, a folder in the way)
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR,
                 errno.EISDIR}


def _write_error(exc: OSError, path: Path) -> UserError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return UserError("the disk filled up while writing this file (nothing was left under its name)", path=path,
                         fix="free some space or choose another output folder, then run the same command again")
    return UserError(f"cannot write this file: {exc.strerror or exc}", path=path,
                     fix="choose an output path in a folder you can write to")


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; rename it onto ``path`` only if the block succeeds.

    A full disk or an output path that cannot be written is a :class:`UserError` naming ``path``.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError("the output path is a folder, so the file cannot be written there", path=path,
                        fix="give a file name, or move that folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}.{os.getpid()}.", dir=path.parent)
    except OSError as exc:
        if exc.errno in _WRITE_ERRNOS:
            raise _write_error(exc, path) from exc
        raise
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())  # the data is on disk before the name points at it
        os.replace(tmp, path)
        fsync_dir(path.parent)  # and the rename itself survives a power cut
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _write_error(exc, path) from exc
        raise


def fsync_dir(folder: PathLike) -> None:
    """Make a rename or a new file in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems (and every Windows one) refuse to fsync a folder
        pass
    finally:
        os.close(fd)


def open_own_file(path: PathLike, flags: int = os.O_RDWR, *, what: str = "file") -> int:
    """Open (creating it 0644) a bookkeeping file of ours, such as a lock or a journal, as a raw descriptor.

    It never follows a symbolic link (``O_NOFOLLOW``) and refuses anything but a plain file of this user with one
    name, so a link or a hard link planted in a shared output folder is one clear error and the file it points at
    is left untouched.
    """
    path = Path(path)
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags | os.O_CREAT | nofollow | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK) or path.is_symlink():
            raise UserError(f"the {what} is a symbolic link, which this program never follows", path=path,
                            fix="remove the link (someone else may have planted it) and run again") from exc
        if exc.errno in _WRITE_ERRNOS:
            raise _write_error(exc, path) from exc
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_uid != os.getuid():
        os.close(fd)
        raise UserError(f"the {what} is not a plain file of yours (a device, a pipe, a hard link or another "
                        "user's file)", path=path, fix="remove it and run again")
    return fd


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


#: the formats pictures are written in: PNG (lossless) and JPEG (upstream test.py's, Pillow's quality 75)
IMAGE_FORMATS = ("png", "jpg")


def image_format(fmt: str) -> str:
    """``png`` or ``jpg`` from a user's spelling of it (``PNG``, ``.jpeg``...); anything else is a UserError."""
    name = fmt.lower().lstrip(".").replace("jpeg", "jpg")
    if name not in IMAGE_FORMATS:
        raise UserError(f"unknown image format {fmt!r}", fix="use png or jpg")
    return name


#: how PNGs are compressed: zlib's run-length strategy after PNG's row filters. The pixels are the same at any setting.
#: Against Pillow's default (level 6, default strategy) on 2048x1024 pictures, one core of the 2-core EPYC
#: (benchmarks/png_level.py, docs/cpu.md): 0.48x the encoding time for a photo-like picture and 0.68x for `run`'s
#: random-weight pictures, at the same size; coloured label maps 0.63-0.76x the time, 0.92-1.29x the size (~20 KB)
PNG_OPTIONS = {"compress_level": 6, "compress_type": zlib.Z_RLE}


def encode_image(path: PathLike, image: np.ndarray, **save_kwargs) -> bytes:
    """An (H, W) or (H, W, 3) uint8 array encoded by Pillow in the format of ``path``'s suffix (PNGs with
    :data:`PNG_OPTIONS` unless ``save_kwargs`` say otherwise)."""
    import io

    from PIL import Image

    path = Path(path)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}.get(path.suffix.lower())
    if fmt is None:
        raise UserError(f"unsupported image suffix {path.suffix!r}", path=path, fix="use .png or .jpg")
    if fmt == "PNG":
        save_kwargs = {**PNG_OPTIONS, **save_kwargs}
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, **save_kwargs)
    return buf.getvalue()


def atomic_save_image(path: PathLike, image: np.ndarray, **save_kwargs) -> None:
    """Save an (H, W) or (H, W, 3) uint8 array with Pillow; the format comes from the suffix."""
    atomic_write_bytes(path, encode_image(path, image, **save_kwargs))


def _writer_alive(tmp_name: str) -> bool:
    """Whether the process that named this temporary file still runs (another run writing the same folder)."""
    parts = tmp_name.rsplit(".", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return False  # an older name without a process id
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def remove_stale_temporaries(folder: PathLike) -> int:
    """Delete temporary files that killed runs left in ``folder``; return how many.

    Files of runs still alive (two runs writing one folder, e.g. two ``preprocess``) are left to finish.
    """
    n = 0
    for p in Path(folder).glob(TMP_PREFIX + "*"):
        if _writer_alive(p.name):
            continue
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
        raise UserError(f"not enough free disk for {what}: needs {format_bytes(needed)}, {format_bytes(free)} free",
                        path=folder, fix="free some space, choose another output folder, or process fewer images")


def format_bytes(n: int) -> str:
    """``1.25 GiB``, ``3.4 MiB``, ``1000 bytes``: binary units, as ``df -h`` counts them."""
    for unit, size in (("TiB", 1024 ** 4), ("GiB", 1024 ** 3), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.{2 if unit in ('TiB', 'GiB') else 1}f} {unit}"
    return f"{n} bytes"


def load_npy(path: Path, mmap_mode: Optional[str] = None) -> np.ndarray:
    """``np.load`` of a plain array (never a pickle); anything unreadable is one UserError naming the file."""
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise UserError(f"cannot read this .npy file ({first})", path=path,
                        fix="make it again with numpy.save (plain float32, no pickled objects)") from exc


# ------------------------------------------------------------------------------------------- checkpoints

CHECKPOINT_NAME = "latest_net_G.pth"


def resolve_checkpoint(path: PathLike) -> Path:
    """A checkpoint file, or a folder holding ``latest_net_G.pth`` (the seed's ``--load_pretrain DIR/``)."""
    path = Path(path)
    if path.is_dir():
        candidate = path / CHECKPOINT_NAME
        if not candidate.is_file():
            found = sorted(p.name for p in path.glob("*_net_G.pth"))
            fix = (f"pass one of {', '.join(found)} directly" if found
                   else f"put pix2pixHD's {CHECKPOINT_NAME} there (e.g. ./pix2pixHD/checkpoints/label2city_1024p/)")
            raise UserError(f"the folder has no {CHECKPOINT_NAME}", path=path, fix=fix)
        return candidate
    if not path.exists():
        raise UserError("the checkpoint does not exist", path=path,
                        fix=f"pass the path of {CHECKPOINT_NAME} or of the folder that holds it")
    return path


def file_sha256(path: PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def raw_file_hw(n_bytes: int, channels: int, *, path: Optional[PathLike] = None,
             hw: Optional[Tuple[int, int]] = None, size_flag: str = "--dymHW", itemsize: int = 4,
             dtype: str = "float32") -> Tuple[int, int]:
    """(H, W) of a raw float32 (C, H, W) file: from ``hw`` if given, else the 1:2 Cityscapes aspect.

    ``size_flag``: the option that gives the size to the command at hand, for the error messages.
    """
    if n_bytes == 0:
        raise UserError("the file is empty", path=path,
                        fix="make it again: an interrupted copy or a full disk leaves empty files")
    if n_bytes % (itemsize * channels):
        raise UserError(f"the file has {n_bytes} bytes, which is not a whole {dtype} ({channels}, H, W) tensor",
                        path=path, fix="use the .bin files written by pix2pixhd_preprocess.py for this model")
    pixels = n_bytes // (itemsize * channels)
    if hw is not None:
        if hw[0] * hw[1] != pixels:
            raise UserError(f"the file holds {pixels} pixels per channel, not {hw[0]}x{hw[1]} "
                            f"({channels}x{hw[0]}x{hw[1]} {dtype} = {itemsize * channels * hw[0] * hw[1]} bytes, file "
                            f"has {n_bytes})", path=path, fix=f"pass the size the files were made at ({size_flag} H,W)")
        return hw
    h = int(round(math.sqrt(pixels / 2)))
    if h * 2 * h != pixels:
        raise UserError(f"cannot tell the image size: {pixels} pixels is not a 1:2 image", path=path,
                        fix=f"pass {size_flag} HEIGHT,WIDTH")
    return h, 2 * h
