"""A ``run`` output folder and what it holds: the lock, the manifest (settings, identity, per-image entries via an
append-only journal), the pictures' names and files, the resume check and ``index.html``.

In:  an output folder and a run's :class:`~pix2pixhd_deploy.run.local.RunSettings`.
Out: ``OUTPUT/images/<name>_synthesized_image.png`` and ``<name>_input_label.png`` (upstream test.py's names),
     ``OUTPUT/raw/<name>_0.bin`` with ``--save-raw`` (ais_bench's layout), ``OUTPUT/manifest.json``,
     ``OUTPUT/index.html``; a folder made with other weights or settings is refused instead of mixed.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..compare.page import IndexRow, write_index_html
from ..data.labelmaps import Pair, crop_to
from ..data.labels import colorize
from ..errors import Failures, PathLike, UserError
from ..fileio import (
    TMP_PREFIX,
    atomic_write_array,
    atomic_write_bytes,
    atomic_write_text,
    check_free_space,
    encode_image,
    ensure_output_dir,
    image_format,
    open_own_file,
    remove_stale_temporaries,
)
from ..model import forms
from ..provenance import machine, model_file, model_hash, versions

if TYPE_CHECKING:
    from .settings import RunReport, RunSettings

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
JOURNAL = ".manifest-journal.jsonl"
LOCK = ".pix2pixhd-deploy.lock"


@contextlib.contextmanager
def output_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on the output folder for the whole run (released by the OS if the process dies).

    The lock file is opened without following links (:func:`fileio.open_own_file`): a link planted in its place is
    one clear error, and the file it points at is never written.
    """
    fd = open_own_file(folder / LOCK, what="lock file of this output folder")
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise UserError(f"another run is writing to this output folder ({owner})", path=folder,
                            fix="wait for it to finish or choose another --output") from None
        text = f"pid {os.getpid()}".encode()
        os.pwrite(fd, text, 0)
        os.ftruncate(fd, len(text))  # ours: open_own_file checked it is a plain file of this user with one name
        yield
    finally:
        os.close(fd)


def resume_model_identity(model: PathLike) -> Dict[str, object]:
    """What of the model decides the pictures: the file's hash and, for an exported graph, the checkpoint hash it
    records and the hash of the stem weights beside it (a stems graph's ``.stems.npz``).

    A stems graph whose ``.npz`` records another checkpoint than the graph is refused here, before anything runs.
    """
    from ..cache import cached_sha256

    path = model_file(model)
    identity: Dict[str, object] = {"model_sha256": model_hash(path)}
    if path.suffix.lower() != ".onnx":
        return identity
    props = graph_properties(path)
    graph_checkpoint = props.get("pix2pixhd.checkpoint_sha256")
    if graph_checkpoint:
        identity["checkpoint_sha256"] = graph_checkpoint
    try:
        input_format = json.loads(props.get("pix2pixhd.export", "{}")).get("input_format")
    except ValueError:
        input_format = None
    from ..model.stems import StemWeights, sidecar_path

    sidecar = sidecar_path(path)
    if input_format == forms.STEMS or sidecar.is_file():
        stems_checkpoint = StemWeights.recorded_checkpoint(sidecar)  # a missing or unreadable file: one line
        if graph_checkpoint and stems_checkpoint and stems_checkpoint != graph_checkpoint:
            raise UserError(f"the stem weights beside this graph come from another checkpoint (sha256 "
                            f"{stems_checkpoint[:12]}..., the graph's is {graph_checkpoint[:12]}...)", path=sidecar,
                            fix=f"keep {path.name} with the {sidecar.name} exported with it, or export the graph "
                                "again with --input-format stems")
        identity["stems_sha256"] = cached_sha256(sidecar)
    return identity


def graph_properties(path: PathLike) -> Dict[str, str]:
    """An ONNX file's ``metadata_props`` (where :mod:`export` records provenance), read by skipping over the graph
    and its weights instead of parsing them; {} when the file is not a well-formed ONNX model."""
    import mmap

    def varint(pos: int) -> Tuple[int, int]:
        value = shift = 0
        while True:
            byte = buf[pos]
            value |= (byte & 0x7F) << shift
            pos, shift = pos + 1, shift + 7
            if not byte & 0x80:
                return value, pos

    def fields(start: int, end: int) -> Iterator[Tuple[int, int, int]]:
        """(field number, start, end) of each length-delimited field between start and end."""
        pos = start
        while pos < end:
            tag, pos = varint(pos)
            kind = tag & 7
            if kind == 0:
                _, pos = varint(pos)
            elif kind == 1:
                pos += 8
            elif kind == 5:
                pos += 4
            elif kind == 2:
                n, pos = varint(pos)
                yield tag >> 3, pos, pos + n
                pos += n
            else:
                raise ValueError(f"wire type {kind}")

    props: Dict[str, str] = {}
    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            for number, start, end in fields(0, len(buf)):
                if number == 14:  # ModelProto.metadata_props: StringStringEntryProto {key = 1, value = 2}
                    entry = {n: buf[a:b].decode("utf-8", "replace") for n, a, b in fields(start, end)}
                    props[entry.get(1, "")] = entry.get(2, "")
    except (OSError, ValueError, IndexError):
        return {}
    return props


def image_paths(out: Path, name: str, fmt: str) -> Tuple[Path, Path]:
    """(picture, coloured label map) of one image in a run's output folder."""
    return (out / "images" / f"{name}_synthesized_image.{fmt}", out / "images" / f"{name}_input_label.png")


def write_outputs(out: Path, name: str, settings: RunSettings, picture: np.ndarray, label: np.ndarray,
                  raw: Optional[np.ndarray]) -> Dict[str, float]:
    """One image's files, each atomically: raw output (if asked), coloured label map, then the picture, whose
    presence marks the image complete. Returns the seconds spent encoding the two pictures and writing the files
    (fsync included)."""
    pic_path, label_path = image_paths(out, name, settings.image_format)
    start = time.perf_counter()
    label_data = encode_image(label_path, colorize(label))
    picture_data = encode_image(pic_path, picture)
    encoded = time.perf_counter()
    if raw is not None:
        atomic_write_array(out / "raw" / f"{name}_0.bin", raw)
    atomic_write_bytes(label_path, label_data)
    atomic_write_bytes(pic_path, picture_data)
    return {"encode_s": encoded - start, "write_s": time.perf_counter() - encoded}


def crop_back(settings: RunSettings, size: Optional[Tuple[int, int]], picture: np.ndarray, label: np.ndarray,
              raw: Optional[np.ndarray]) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """With ``fit="pad"``: the picture, label map and raw output cut back to the map's own ``size`` (h, w)."""
    if settings.fit != "pad" or size is None:
        return picture, label, raw
    return crop_to(picture, size), crop_to(label, size), \
        (crop_to(raw, size, channels_first=True) if raw is not None else None)


def _complete(out: Path, pair: Pair, settings: RunSettings) -> bool:
    picture, label = image_paths(out, pair.name, settings.image_format)
    raw_ok = not settings.save_raw or (out / "raw" / f"{pair.name}_0.bin").is_file()
    return picture.is_file() and label.is_file() and raw_ok


def _load_manifest(out: Path) -> Optional[Dict[str, object]]:
    path = out / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"the run manifest is unreadable ({exc})", path=path,
                        fix="delete it to start the folder afresh, or choose another --output") from exc


class RunFolder:
    """An output folder of ``run``, shared by every engine: locked for the run, checked against the settings and
    weights it was made with, its manifest kept, and ``index.html`` and the failed-images summary at the end.

    The manifest (``manifest.json``: identity, settings, versions, one entry per picture) is written by
    :meth:`prepare`, before the first picture, so that no picture ever exists without a manifest naming its weights.
    Entries are then appended to a journal (``.manifest-journal.jsonl``, one JSON line each) and merged into the
    manifest when the run ends, or by the next run after a SIGKILL: saving is linear in the number of pictures.

    Use as a context manager; :meth:`todo` lists the pairs whose outputs are not complete yet.
    """

    def __init__(self, output: PathLike, settings: RunSettings, *, engine: Optional[Dict[str, object]] = None):
        settings.image_format = image_format(settings.image_format)
        self.settings = settings
        self.created = not Path(output).exists()
        self.out = ensure_output_dir(output)
        self.subfolders = ("images", "raw") if settings.save_raw else ("images",)
        self.engine = engine
        self._lock = None
        self._journal: Optional[int] = None
        self._journal_lock = threading.Lock()
        self._manifest_ours = False  # this run wrote the first manifest of the folder

    def __enter__(self) -> "RunFolder":
        self._lock = output_lock(self.out)
        self._lock.__enter__()
        try:
            identity = {**self.settings.identity(), **self._resume_model_identity()}
            previous = _load_manifest(self.out)
            if previous is not None and previous.get("identity") != identity and self.has_outputs():
                old = previous.get("identity", {})
                diffs = [f"{k}: {old.get(k)!r} -> {identity.get(k)!r}" for k in sorted(set(old) | set(identity))
                         if old.get(k) != identity.get(k)]
                raise UserError("this output folder holds pictures made with other settings (" + "; ".join(diffs)
                                + ")", path=self.out, fix="choose a new --output, or delete the folder to start again")
            same = previous is not None and previous.get("identity") == identity
            self.images: Dict[str, Dict[str, object]] = dict(previous.get("images", {})) if same else {}
            if same:
                self.images.update(_read_journal(self.out / JOURNAL))  # what a killed run had not merged yet
            self.failed = Failures("image")  # --keep-going's record, the same under every engine
            self.manifest: Dict[str, object] = {
                "tool": "pix2pixhd-deploy run", "identity": identity, "settings": dataclasses.asdict(self.settings),
                "versions": versions(), "machine": machine(), "images": self.images,
                "failed": self.failed.records}
            if self.engine:
                self.manifest["engine"] = self.engine
        except BaseException:
            self.__exit__(*sys.exc_info())  # releases the lock and removes what this run made
            raise
        return self

    def _resume_model_identity(self) -> Dict[str, object]:
        """A graph from the model cache is known by its key (the checkpoint's hash, the size, the recipe and the
        versions), which stays the same when the entry is rebuilt; any other model by its files."""
        key = self.settings.graph_key
        if key:
            from ..cache import key_digest

            return {"checkpoint_sha256": key["checkpoint_sha256"], "graph_key": key_digest(key)}
        return resume_model_identity(self.settings.model)

    def __exit__(self, *exc) -> None:
        if self._journal is not None:
            os.close(self._journal)
            self._journal = None
        if not (self.out / MANIFEST).exists() or (self._manifest_ours and not self.has_outputs()):
            # nothing was made (the model did not load, the first input was bad): leave no trace
            with contextlib.suppress(OSError):
                for name in (MANIFEST, JOURNAL, LOCK):
                    with contextlib.suppress(FileNotFoundError):
                        (self.out / name).unlink()
                for sub in self.subfolders:
                    if (self.out / sub).is_dir() and not any((self.out / sub).iterdir()):
                        (self.out / sub).rmdir()
                if self.created and not any(self.out.iterdir()):
                    self.out.rmdir()
        self._lock.__exit__(*exc)

    def has_outputs(self) -> bool:
        """Whether any file under images/ or raw/ is a finished output (not a temporary one)."""
        return any(not p.name.startswith(TMP_PREFIX) for sub in ("images", "raw") if (self.out / sub).is_dir()
                   for p in (self.out / sub).iterdir())

    def prepare(self, todo: Sequence[Pair]) -> None:
        """Before the first write: the subfolders, leftovers of an interrupted run removed, free disk checked, and
        the manifest written, so that every picture has one naming its weights."""
        self.clean()
        if todo and self.settings.save_raw:
            from PIL import Image

            with Image.open(todo[0].label) as img:  # reads the header only
                w, h = img.size
            check_free_space(self.out, len(todo) * 3 * h * w * 4,
                             what=f"{len(todo)} raw outputs of {3 * h * w * 4 / 2**20:.0f} MiB (--save-raw)")
        self._manifest_ours = not (self.out / MANIFEST).exists()
        self.save()

    def clean(self) -> None:
        """Remove temporary files an interrupted run (or a dead worker) left."""
        for sub in self.subfolders:
            remove_stale_temporaries(ensure_output_dir(self.out / sub))

    def todo(self, pairs: Sequence[Pair]) -> List[Pair]:
        todo = [p for p in pairs if not _complete(self.out, p, self.settings)]
        waiting = {p.name for p in todo}
        for p in pairs:
            if p.name not in waiting and p.name not in self.images:
                # complete on disk, never recorded: a run killed between the picture's rename and its journal line
                self.images[p.name] = {"recovered": True}
        if len(todo) < len(pairs):
            log.info("%d of %d pictures are already complete in %s; skipping them", len(pairs) - len(todo),
                     len(pairs), self.out)
        return todo

    def record(self, name: str, entry: Dict[str, object]) -> None:
        """One finished picture's manifest entry: kept, and appended to the journal (thread-safe)."""
        self._append({"name": name, "entry": entry})
        self.images[name] = entry

    def _append(self, record: Dict[str, object]) -> None:
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        with self._journal_lock:
            if self._journal is None:
                self._journal = open_own_file(self.out / JOURNAL, os.O_WRONLY | os.O_APPEND,
                                              what="manifest journal")
            os.write(self._journal, line)

    def save(self) -> None:
        """Write the whole manifest (atomically, fsynced), then empty the journal it now holds."""
        with self._journal_lock:
            self.manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            atomic_write_text(self.out / MANIFEST, json.dumps(self.manifest, indent=1, sort_keys=True))
            if self._journal is not None:
                os.close(self._journal)
                self._journal = None
            with contextlib.suppress(FileNotFoundError):
                (self.out / JOURNAL).unlink()

    def finish(self, pairs: Sequence[Pair], report: "RunReport", *, write_index: bool = True) -> None:
        """Save the manifest, write index.html; raise the failed-images summary if any failed."""
        self.save()
        if write_index:
            rows = []
            for p in pairs:
                picture, label = image_paths(self.out, p.name, self.settings.image_format)
                if picture.is_file() and label.is_file():
                    rows.append(IndexRow(p.name, [("input_label", label), ("synthesized_image", picture)]))
            report.index = write_index_html(self.out / "index.html", rows,
                                            title=f"pix2pixhd-deploy run: {self.out.name}")
        if self.failed:
            raise self.failed.error(report.done, path=self.out)


def _read_journal(path: Path) -> Dict[str, Dict[str, object]]:
    """The entries of a journal a killed run left; a torn last line (killed mid-write) is skipped."""
    entries: Dict[str, Dict[str, object]] = {}
    if path.is_symlink() or not path.is_file():
        return entries
    for line in path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError, TypeError, KeyError):
            record = json.loads(line)
            entries[str(record["name"])] = dict(record["entry"])
    return entries
