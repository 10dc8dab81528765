"""The model cache: graphs that ``run --checkpoint`` builds once per checkpoint, map size and runtime, then reuses.

Where: ``--cache-dir``, else ``$XDG_CACHE_HOME/pix2pixhd-deploy``, else ``~/.cache/pix2pixhd-deploy``. The folder
must belong to the user and be writable by nobody else (a planted graph or compiled blob would be loaded); a
default folder that cannot be used gives way to a private temporary one, with one line saying so.

Layout::

    graphs/<key>/entry.json          the entry's key (checkpoint sha256, size, recipe, runtime and versions) and its
                                     files' sizes; written last, so an entry without it is incomplete
    graphs/<key>/model.onnx          the exported graph (+ model.onnx.stems.npz for the stems form)
    graphs/<key>/compiled/           the runtime's compiled form (OpenVINO's CACHE_DIR blob)
    locks/<key>.lock                 held while one process builds the entry; another waits, then uses it
    hashes.json                      checkpoint sha256 by (path, size, mtime, ctime, inode): a warm start reads no weights

An entry is built in a temporary folder beside the others and renamed into place, so two processes filling the
cache at once both end with a complete entry. One whose ``entry.json`` is missing, names another key, or whose files
have other sizes (cut short, replaced) is removed and rebuilt, with one line saying so.
"""
from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

from .errors import PathLike, UserError
from .fileio import atomic_write_text, file_sha256

log = logging.getLogger(__name__)

ENTRY = "entry.json"
GRAPH = "model.onnx"
COMPILED = "compiled"
_FALLBACK: Dict[str, Path] = {}


def default_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pix2pixhd-deploy"


def _private_problem(path: Path) -> Optional[str]:
    """Why ``path`` is not a folder only this user can write to (None when it is)."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        return exc.strerror or str(exc)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        return "it is not a folder (or is a symbolic link)"
    if st.st_uid != os.getuid():
        return f"it belongs to another user (uid {st.st_uid})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return "others can write to it"
    if not os.access(path, os.W_OK | os.X_OK):
        return "it cannot be written"
    return None


def cache_root(cache_dir: Optional[PathLike] = None) -> Path:
    """The cache folder, made if needed (mode 0700). A ``cache_dir`` that cannot be used is a UserError; the
    default one gives way to a private temporary folder for this process."""
    root = Path(cache_dir).expanduser() if cache_dir else default_root()
    problem = None
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        problem = exc.strerror or str(exc)
    problem = problem or _private_problem(root)
    if problem is None:
        return root
    if cache_dir:
        raise UserError(f"the model cache folder cannot be used: {problem}", path=root,
                        fix="pass a --cache-dir of your own (made by you, not writable by others)")
    if str(root) not in _FALLBACK:
        _FALLBACK[str(root)] = Path(tempfile.mkdtemp(prefix="pix2pixhd-deploy-cache-"))
        atexit.register(shutil.rmtree, _FALLBACK[str(root)], ignore_errors=True)  # gigabytes, of no use later
        log.warning("the model cache folder %s cannot be used (%s): building into %s for this run only; pass "
                    "--cache-dir to keep the graph between runs", root, problem, _FALLBACK[str(root)])
    return _FALLBACK[str(root)]


# --------------------------------------------------------------------------------------------- hashes

def cached_sha256(path: PathLike, root: Optional[Path] = None) -> str:
    """The file's sha256 (a checkpoint, a graph), remembered in the cache by (real path, size, mtime, ctime, inode)
    so that a warm start does not read 700 MB of weights again. The ctime is there because a file rewritten in place
    can keep its path, size, inode and even its mtime (``cp -p``, ``touch -r``, ``os.utime``), but every write sets
    the ctime to now and nothing short of changing the clock sets it back."""
    path = Path(path).resolve()
    st = path.stat()
    ident = f"{path}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}"
    table_path = (root or cache_root()) / "hashes.json"
    table: Dict[str, str] = {}
    with contextlib.suppress(OSError, ValueError):
        table = json.loads(table_path.read_text())
    digest = table.get(ident)
    if isinstance(digest, str) and len(digest) == 64:
        return digest
    digest = file_sha256(path)
    table = {k: v for k, v in table.items() if not k.startswith(f"{path}|")}  # the file's older versions go
    table[ident] = digest
    with contextlib.suppress(OSError):
        atomic_write_text(table_path, json.dumps(table, indent=1, sort_keys=True))
    return digest


# ---------------------------------------------------------------------------------------------- entries

def key_digest(key: Dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


@dataclass
class CacheEntry:
    folder: Path
    key: Dict[str, object]
    built_s: Optional[float] = None  # seconds this process spent building it (None: found in the cache)

    @property
    def graph(self) -> Path:
        return self.folder / GRAPH

    @property
    def compiled(self) -> Path:
        return self.folder / COMPILED

    def describe(self) -> Dict[str, object]:
        return {"folder": str(self.folder), "key": self.key, "built_s": self.built_s}


def _files(folder: Path) -> Dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file() and p.name != ENTRY}


def entry_problem(folder: Path, key: Dict[str, object]) -> Optional[str]:
    """Why the entry in ``folder`` cannot be used for ``key`` (None when it can)."""
    try:
        recorded = json.loads((folder / ENTRY).read_text())
    except FileNotFoundError:
        return "it is incomplete (no entry.json)"
    except (OSError, ValueError) as exc:
        return f"its entry.json is unreadable ({exc})"
    if recorded.get("key") != key:
        return "it was made for another checkpoint, size or version"
    files = recorded.get("files") or {}
    try:
        actual = _files(folder)
    except OSError as exc:
        return f"it cannot be read ({exc})"
    changed = sorted(n for n in files if actual.get(n) != files[n])
    if changed or GRAPH not in files:
        return f"its files were changed or cut short ({', '.join(changed) or GRAPH})"
    return None


@contextlib.contextmanager
def _locked(path: Path, wait: bool = True) -> Iterator[bool]:
    """An exclusive lock on ``path`` (never through a symbolic link); yields False when ``wait`` is False and
    another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def get_or_build(key: Dict[str, object], build: Callable[[Path], None], *, root: Path,
                 rebuild_reason: Optional[str] = None) -> CacheEntry:
    """The entry for ``key``: found, or made by ``build(folder)`` (which writes ``model.onnx`` and its side files
    into an empty folder). ``rebuild_reason``: the caller found the entry unusable (e.g. it did not load)."""
    digest = key_digest(key)
    folder = root / "graphs" / digest
    with _locked(root / "locks" / f"{digest}.lock"):
        problem = rebuild_reason or (entry_problem(folder, key) if folder.exists() else None)
        if folder.exists() and problem is None:
            return CacheEntry(folder, key)
        if folder.exists():
            log.warning("the cached graph in %s is rebuilt: %s", folder, problem)
            shutil.rmtree(folder)
        start = time.perf_counter()
        folder.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{digest}.", dir=folder.parent))
        try:
            build(tmp)
            atomic_write_text(tmp / ENTRY, json.dumps({"key": key, "files": _files(tmp),
                                                       "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=1))
            os.rename(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return CacheEntry(folder, key, built_s=round(time.perf_counter() - start, 1))


def list_entries(root: Path) -> List[Dict[str, object]]:
    """Every entry: its folder, key, size on disk and whether it is usable."""
    out = []
    for folder in sorted((root / "graphs").glob("*")) if (root / "graphs").is_dir() else []:
        if folder.name.startswith(".tmp-"):
            continue
        recorded = _recorded(folder)
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        key = recorded.get("key") or {}
        out.append({"folder": str(folder), "key": key, "bytes": size, "created": recorded.get("created"),
                    "usable": bool(key) and entry_problem(folder, key) is None})
    return out


def clear(root: Path, only: Optional[Callable[[Dict[str, object]], bool]] = None) -> int:
    """Remove every entry (waiting for one being rebuilt) and what interrupted builds left; returns the bytes
    freed. A build in progress in another process is left alone. ``only``: remove just the entries whose recorded
    key it accepts (an incomplete entry's key is ``{}``) and what interrupted builds left; the rest, the remembered
    hashes included, stay."""
    freed = 0
    graphs = root / "graphs"
    for folder in sorted(graphs.glob("*")) if graphs.is_dir() else []:
        building = folder.name.startswith(".tmp-")
        if only is not None and not building and not only(_recorded(folder).get("key") or {}):
            continue
        digest = folder.name.split(".")[1] if building else folder.name
        with _locked(root / "locks" / f"{digest}.lock", wait=not building) as held:
            if held:
                freed += sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
                shutil.rmtree(folder, ignore_errors=True)
    if only is None:
        with contextlib.suppress(FileNotFoundError):
            (root / "hashes.json").unlink()
    return freed


def _recorded(folder: Path) -> Dict[str, object]:
    """An entry's entry.json ({} when it is missing or unreadable)."""
    try:
        recorded = json.loads((folder / ENTRY).read_text())
    except (OSError, ValueError):
        return {}
    return recorded if isinstance(recorded, dict) else {}
