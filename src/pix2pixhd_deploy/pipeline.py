"""``pix2pixhd-deploy run``: label maps in, photos out, streaming, with nothing in between on disk.

In:  PNG pairs (``DATAROOT/test_label`` + ``test_inst``, or a Cityscapes gtFine split) and a model.
Out: ``OUTPUT/images/<name>_synthesized_image.png`` and ``<name>_input_label.png`` (upstream test.py's names, PNG by
     default), optional raw outputs in ais_bench's layout (``OUTPUT/raw/<name>_0.bin``), ``OUTPUT/manifest.json``
     (settings, versions, the checkpoint's hash, per-image times) and ``OUTPUT/index.html``.

Where the work happens:

* decoding PNGs runs in a thread pool ahead of the compute (Pillow and zlib release the GIL), and writing pictures
  in another, so the compute is rarely kept waiting;
* with the torch backend the one-hot + edge encoding and the conversion to uint8 run on the compute device
  (:func:`encoding.encode_input_torch`, :func:`postprocess.tensor2im_torch`); only the uint8 label map, the integer
  instance map and the uint8 picture cross between host and device;
* other runners take the 36-channel float input, encoded on the host in memory (never written to disk).

Every file is written to a temporary name and renamed; a re-run skips images whose picture exists, so a killed run
resumes where it stopped. A lock file keeps two runs out of the same output folder.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .adapters import make_engine
from .dataset import Pair, cityscapes_pairs, find_pairs, resolve_instances
from .errors import PathLike, UserError, failed_inputs_error
from .fileio import (TMP_PREFIX, atomic_save_image, atomic_write_array, atomic_write_text, check_free_space,
                     ensure_output_dir, open_own_file, progress, remove_stale_temporaries)
from .labelmaps import MapOptions, Maps, crop_to, load_maps, planned_size
from .labels import LABEL_NC, colorize
from .provenance import machine, model_file, model_hash, versions
from .report import IndexRow, write_index_html
from .runners.base import Runner

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
JOURNAL = ".manifest-journal.jsonl"
LOCK = ".pix2pixhd-deploy.lock"


@dataclass
class RunSettings:
    """What defines a run's outputs; saved in the manifest and checked on resume."""

    model: str
    backend: str
    device: Optional[str] = None
    fp16: bool = False
    batch_size: int = 1
    image_format: str = "png"
    save_raw: bool = False
    label_nc: int = LABEL_NC
    use_instance: bool = True
    size_multiple: int = 32
    streams: int = 1              # batches computed at once (each runtime then uses cores / streams threads)
    fast_convs: bool = False      # torch: fastconv's Winograd and row-sum convolutions
    checkpoint: Optional[str] = None    # the checkpoint a cached graph was built from (:mod:`choose`)
    cache_dir: Optional[str] = None     # --cache-dir (None: the default model cache)
    compiled_dir: Optional[str] = None  # where the runtime keeps its compiled form of the graph
    graph_key: Optional[Dict[str, object]] = None  # the cache key of that graph (a Ray node builds its own)
    instances: str = "files"      # files | labels | none (labelmaps); "none" goes with use_instance=False
    fit: str = "resize"           # resize | pad (labelmaps)

    @classmethod
    def from_choice(cls, choice, **fields) -> "RunSettings":
        """The settings of a run of what :func:`choose.choose` picked (``fields``: the run's other settings)."""
        return cls(model=choice.model, backend=choice.backend, checkpoint=choice.checkpoint,
                   compiled_dir=choice.compiled_dir, graph_key=choice.cache["key"] if choice.cache else None,
                   **fields)

    def identity(self) -> Dict[str, object]:
        """The settings that change the pictures (a resume with different ones would mix outputs).

        Not in it: what only changes speed or which files are written (batch size, streams, workers, format,
        --save-raw). The model's own identity is :func:`model_identity`.
        """
        keys = ["backend", "fp16", "label_nc", "use_instance", "size_multiple"]
        # each only when not its default, so folders written before the option existed still resume
        if self.fast_convs:
            keys.append("fast_convs")
        if self.instances == "labels":  # "none" is use_instance=False, already there
            keys.append("instances")
        if self.fit != "resize":
            keys.append("fit")
        identity = {k: getattr(self, k) for k in keys}
        kind = self.device_kind()
        if kind != "cpu":  # a GPU rounds differently; only off the CPU, so older CPU folders still resume
            identity["device"] = kind
        return identity

    def map_options(self) -> MapOptions:
        """How this run reads its maps (:mod:`labelmaps`)."""
        return MapOptions(label_nc=self.label_nc, instances=self.instances if self.use_instance else "none",
                          fit=self.fit, base=self.size_multiple)

    def device_kind(self) -> str:
        """``cpu``, ``cuda``, ``npu``...: the kind of device the pictures are computed on."""
        if self.backend == "torch":
            from .runners.torch_runner import resolve_device

            return resolve_device(self.device).split(":")[0]
        text = str(self.device or "cpu").strip().lower()
        return "cpu" if text.isdigit() and self.backend != "ais_bench" else text.split(":")[0]


@dataclass
class RunReport:
    output: Path
    done: int = 0
    skipped: int = 0
    failed: List[Tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    compute_seconds: float = 0.0
    index: Optional[Path] = None

    @property
    def images_per_second(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        text = (f"run: {self.done} pictures in {self.seconds:.1f} s ({self.images_per_second:.3f} images/s, "
                f"compute {self.compute_seconds:.1f} s), {self.skipped} already done -> {self.output}")
        if self.index:
            text += f"\nopen {self.index}"
        return text


# ----------------------------------------------------------------------------------------------- runners

def runner_for_run(model: PathLike, *, backend: Optional[str] = None, device: Optional[str] = None,
                   fp16: bool = False, streams: int = 1, threads: Optional[int] = None, label_nc: int = LABEL_NC,
                   use_instance: bool = True, save_raw: bool = False, **options):
    """The runner ``run`` uses, with the CPU's cores shared among ``streams`` concurrent batches, or limited to
    ``threads`` (a Ray actor's CPUs). A torch checkpoint runs in the maps form with uint8 output (encoding and
    ``tensor2im`` on the device; float output with ``save_raw``), like the graphs export makes for ``run``.

    In-process, two single-threaded ONNX Runtime streams ran 8% faster than one two-threaded one on a 2-core CPU;
    end to end (benchmarks/run_vs_upstream.py) they did not help there, so the default is one stream.
    """
    from .runners import backend_for, make_runner

    name = backend_for(model, backend)
    if threads is None and streams > 1:
        threads = max(1, (os.cpu_count() or 1) // streams)
    if name in ("onnxruntime", "openvino") and threads and not options.get("intra_op_threads"):
        options["intra_op_threads"] = threads
    if name not in ("openvino", "onnxruntime"):
        options.pop("compiled_dir", None)
    if name == "torch":
        if threads:
            import torch

            torch.set_num_threads(threads)
        options.update(input_format="maps", output_format="float" if save_raw else "uint8", label_nc=label_nc,
                       use_instance=use_instance)
    return make_runner(model, backend=name, device=device, fp16=fp16, **options)


def runner_for_settings(settings: "RunSettings", *, threads: Optional[int] = None):
    """:func:`runner_for_run` for a run's settings (the local engine and each Ray actor build theirs here)."""
    return runner_for_run(settings.model, backend=settings.backend, device=settings.device, fp16=settings.fp16,
                          streams=settings.streams, threads=threads, label_nc=settings.label_nc,
                          use_instance=settings.use_instance, save_raw=settings.save_raw,
                          fast_convs=settings.fast_convs, compiled_dir=settings.compiled_dir)


def open_runner(settings: "RunSettings", choice=None, *, threads: Optional[int] = None):
    """The run's runner, activated. A graph from the model cache that does not load (damaged where its size did
    not show it) is rebuilt once, with one line saying so; ``settings`` then names the new graph."""
    runner = runner_for_settings(settings, threads=threads)
    try:
        return runner.activate()
    except UserError as exc:
        if choice is None or not choice.cache:
            raise
        from .choose import graph_for_key

        new = graph_for_key(choice.checkpoint, choice.cache["key"], cache_dir=settings.cache_dir,
                            rebuild_reason=f"it did not load ({exc.problem})")
        settings.model, settings.compiled_dir = new.model, new.compiled_dir
        return runner_for_settings(settings, threads=threads).activate()


# ---------------------------------------------------------------------------------------------- helpers

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


def model_identity(model: PathLike) -> Dict[str, object]:
    """What of the model decides the pictures: the file's hash and, for an exported graph, the checkpoint hash it
    records and the hash of the stem weights beside it (a stems graph's ``.stems.npz``).

    A stems graph whose ``.npz`` records another checkpoint than the graph is refused here, before anything runs.
    """
    from .cache import cached_sha256

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
    from .stems import StemWeights, sidecar_path

    sidecar = sidecar_path(path)
    if input_format == "stems" or sidecar.is_file():
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
                  raw: Optional[np.ndarray]) -> None:
    """One image's files, each atomically: raw output (if asked), coloured label map, then the picture, whose
    presence marks the image complete."""
    pic_path, label_path = image_paths(out, name, settings.image_format)
    if raw is not None:
        atomic_write_array(out / "raw" / f"{name}_0.bin", raw)
    atomic_save_image(label_path, colorize(label))
    atomic_save_image(pic_path, picture)


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


# ------------------------------------------------------------------------------------------------- run

def discover(dataroot: Optional[PathLike], cityscapes: Optional[PathLike], *, use_instance: bool = True,
             instances: Optional[str] = None, phase: str = "test") -> Tuple[List[Pair], str]:
    """The pairs to run and where their instance maps come from (``instances`` resolved: files, labels or none;
    None means ``files`` when the data has instance maps, else ``labels``)."""
    if (dataroot is None) == (cityscapes is None):
        raise UserError("give exactly one of --dataroot and --cityscapes",
                        fix="--dataroot DIR (with test_label/ and test_inst/) or --cityscapes gtFine/val")
    if not use_instance:
        instances = "none"
    if cityscapes is not None:
        instances = instances or "files"
        return cityscapes_pairs(cityscapes, instances=instances), instances
    instances = resolve_instances(dataroot, instances, phase=phase)
    return find_pairs(dataroot, phase=phase, instances=instances), instances


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
        settings.image_format = settings.image_format.lower().replace("jpeg", "jpg")
        if settings.image_format not in ("png", "jpg"):
            raise UserError(f"unknown image format {settings.image_format!r}", fix="use png or jpg")
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
            identity = {**self.settings.identity(), **self._model_identity()}
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
            self.failed: Dict[str, Dict[str, str]] = {}
            self.manifest: Dict[str, object] = {
                "tool": "pix2pixhd-deploy run", "identity": identity, "settings": dataclasses.asdict(self.settings),
                "versions": versions(), "machine": machine(), "images": self.images, "failed": self.failed}
            if self.engine:
                self.manifest["engine"] = self.engine
        except BaseException:
            self.__exit__(*sys.exc_info())  # releases the lock and removes what this run made
            raise
        return self

    def _model_identity(self) -> Dict[str, object]:
        """A graph from the model cache is known by its key (the checkpoint's hash, the size, the recipe and the
        versions), which stays the same when the entry is rebuilt; any other model by its files."""
        key = self.settings.graph_key
        if key:
            from .cache import key_digest

            return {"checkpoint_sha256": key["checkpoint_sha256"], "graph_key": key_digest(key)}
        return model_identity(self.settings.model)

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
        if len(todo) < len(pairs):
            log.info("%d of %d pictures are already complete in %s; skipping them", len(pairs) - len(todo),
                     len(pairs), self.out)
        return todo

    def record(self, name: str, entry: Dict[str, object]) -> None:
        """One finished picture's manifest entry: kept, and appended to the journal (thread-safe)."""
        self._append({"name": name, "entry": entry})
        self.images[name] = entry

    def record_failure(self, name: str, exc: UserError) -> None:
        """One input that failed under ``--keep-going``: the same record under every engine."""
        self.failed[name] = {"error": exc.problem, "path": exc.path or "", "fix": exc.fix or ""}

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
        if report.failed:
            raise failed_inputs_error(report.failed, report.done, what="image", path=self.out)


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


def run(pairs: Sequence[Pair], output: PathLike, runner, settings: RunSettings, *, keep_going: bool = False,
        workers: int = 2, show_progress: bool = True, write_index: bool = True,
        choice: Optional[Dict[str, object]] = None) -> RunReport:
    """Stream ``pairs`` through ``runner`` into ``output``; see the module docstring. ``runner``: a runner
    (activated here), or a function that returns one activated (:func:`open_runner`), called only when there is
    work. ``choice``: what :mod:`choose` decided, for the manifest."""
    with RunFolder(output, settings) as folder:
        report = RunReport(output=folder.out)
        todo = folder.todo(pairs)
        report.skipped = len(pairs) - len(todo)
        start = time.perf_counter()
        if choice:
            folder.manifest["choice"] = choice
        if todo:
            if callable(runner) and not isinstance(runner, Runner):
                runner = runner()
            with runner:  # a model that does not load fails here, before anything is written
                engine = make_engine(runner, settings.label_nc, settings.use_instance,
                                     threads=getattr(runner, "intra_op_threads", None))
                first = planned_size(todo[0], settings.size_multiple, settings.fit)
                if min(first) > 0:  # a map too small gets its own error when it is read
                    engine.check_size(*first, path=todo[0].label)
                folder.manifest["runner"] = runner.describe()
                folder.manifest["model_form"] = engine.describe()
                folder.prepare(todo)
                try:
                    Stream(folder, engine, settings, report, keep_going=keep_going, workers=workers,
                           show_progress=show_progress).run(todo)
                finally:
                    report.seconds = time.perf_counter() - start
                    folder.save()
        folder.finish(pairs, report, write_index=write_index)
    return report


# ------------------------------------------------------------------------------------------- streaming

@dataclass
class Decoded:
    """One pair read from disk: its maps and how long reading took, or the error that stopped it."""

    index: int
    pair: Pair
    label: Optional[np.ndarray] = None
    inst: Optional[np.ndarray] = None
    seconds: float = 0.0
    error: Optional[UserError] = None
    size: Optional[Tuple[int, int]] = None  # the map's own size, which fit=pad crops the picture back to


@dataclass
class Batch:
    """Consecutive decoded pairs of one size (one forward pass); after the compute stage, their pictures."""

    items: List[Decoded]
    pictures: Optional[np.ndarray] = None
    raw: Optional[np.ndarray] = None
    seconds: float = 0.0


@dataclass(frozen=True)
class StreamLimits:
    """How far each stage may run ahead of the next. A run's memory is bounded by these, never by its length."""

    decode_ahead: int   # pairs being decoded or decoded, not yet taken into a batch
    compute_queue: int  # batches waiting for a compute thread
    write_queue: int    # computed batches waiting for the writer

    @classmethod
    def for_run(cls, batch: int, streams: int, workers: int) -> "StreamLimits":
        return cls(decode_ahead=batch * (streams + 1) + workers, compute_queue=1, write_queue=streams)

    def max_pictures(self, batch: int, streams: int) -> int:
        """Pictures computed and not yet written, at most: the write queue, one batch held by each compute thread
        waiting to hand it over, and the batch being written."""
        return (self.write_queue + streams + 1) * batch


class _Stopped(Exception):
    """A stage's wait ended because the stream is stopping (an error elsewhere, or Ctrl-C)."""


class Stream:
    """decode -> compute -> write, each stage its own threads, with bounded queues between them.

    * **decode** (``workers`` threads): PNG pairs -> maps, checked; at most ``decode_ahead`` pairs ahead of the
      batcher (Pillow and zlib release the GIL, so decoding overlaps the compute);
    * the **batcher** (the calling thread): takes the decoded pairs in input order and groups consecutive pairs of
      one size, up to ``batch_size``, into the ``to_compute`` queue;
    * **compute** (``streams`` threads): ``engine(labels, insts, want_raw) -> (pictures, raw)`` into ``to_write``;
    * **write** (one thread): each picture's files, atomically, and its manifest entry.

    Every queue is bounded, so a device faster than the writer waits instead of piling pictures up in memory
    (:meth:`StreamLimits.max_pictures`). The first error stops every stage at its next item; on Ctrl-C the writer
    finishes the picture it is writing and the queued backlog is dropped (a batch still computing finishes first, as
    a thread cannot leave torch midway: one forward pass at most).
    ``--keep-going`` records an input that fails to decode or to compute (a :class:`UserError`) and goes on.
    """

    def __init__(self, folder: RunFolder, engine, settings: RunSettings, report: RunReport, *,
                 keep_going: bool = False, workers: int = 2, show_progress: bool = True):
        self.folder, self.engine, self.settings, self.report = folder, engine, settings, report
        self.keep_going = keep_going
        self.batch = max(1, settings.batch_size)
        self.streams = max(1, settings.streams)
        self.workers = max(1, workers)
        self.limits = StreamLimits.for_run(self.batch, self.streams, self.workers)
        self.show_progress = show_progress
        self.to_decode: "queue.Queue[Optional[Tuple[int, Pair]]]" = queue.Queue()  # paths only
        self.decoded: "queue.Queue[Decoded]" = queue.Queue()  # bounded by decode_slots
        self.decode_slots = threading.Semaphore(self.limits.decode_ahead)
        self.to_compute: "queue.Queue[Optional[Batch]]" = queue.Queue(maxsize=self.limits.compute_queue)
        self.to_write: "queue.Queue[Optional[Batch]]" = queue.Queue(maxsize=self.limits.write_queue)
        self.stopping = threading.Event()
        self.failure: Optional[BaseException] = None
        self.unwritten = 0        # pictures computed and not yet written
        self.peak_unwritten = 0
        self._count = threading.Lock()
        self._bar = None

    # ---------------------------------------------------------------------------------- the calling thread
    def run(self, todo: Sequence[Pair]) -> None:
        for item in enumerate(todo):
            self.to_decode.put(item)
        self._bar = progress(range(len(todo)), desc="run", unit="img") if self.show_progress else None
        decoders = [self._start(f"decode-{i}", self._decode_stage) for i in range(self.workers)]
        computers = [self._start(f"compute-{i}", self._compute_stage) for i in range(self.streams)]
        writer = self._start("write", self._write_stage)
        for _ in decoders:
            self.to_decode.put(None)
        try:
            for batch in self._batches(len(todo)):
                self._put(self.to_compute, batch)
            for _ in computers:
                self._put(self.to_compute, None)
            for thread in computers:
                self._join(thread)
            self._put(self.to_write, None)
            self._join(writer)
        except _Stopped:
            self._stop_all(decoders + computers + [writer])
            raise self.failure from None
        except BaseException:  # Ctrl-C or an error of the batcher: the writer finishes its picture, then stops
            self._stop_all(decoders + computers + [writer])
            raise
        finally:
            if self._bar is not None:
                self._bar.close()

    def _stop_all(self, threads: Sequence[threading.Thread]) -> None:
        """Every stage ends at its next item: the writer after the picture it is writing, a compute thread after
        its batch (its result is dropped), a decoder after its pair. Waited for, as a thread still inside torch at
        interpreter exit aborts the process."""
        self.stopping.set()
        for thread in threads:
            thread.join()

    def _batches(self, count: int) -> Iterator[Batch]:
        """The decoded pairs in input order, consecutive pairs of one size grouped up to ``batch_size``."""
        early: Dict[int, Decoded] = {}
        group: List[Decoded] = []
        for index in range(count):
            while index not in early:
                item = self._get(self.decoded)
                early[item.index] = item
            item = early.pop(index)
            self.decode_slots.release()
            if item.error is not None:
                self._skip([item], item.error)
                continue
            if group and item.label.shape != group[0].label.shape:
                yield Batch(group)  # a different size starts a new batch
                group = []
            group.append(item)
            if len(group) == self.batch:
                yield Batch(group)
                group = []
        if group:
            yield Batch(group)

    # --------------------------------------------------------------------------------------------- stages
    def _decode_stage(self) -> None:
        while True:
            self._acquire(self.decode_slots)
            task = self.to_decode.get()
            if task is None:
                self.decode_slots.release()
                return
            index, pair = task
            start = time.perf_counter()
            try:
                label, inst, size = decode_pair(pair, self.settings)
                item = Decoded(index, pair, label, inst, size=size)
            except UserError as exc:
                item = Decoded(index, pair, error=exc)
            item.seconds = time.perf_counter() - start
            self.decoded.put(item)

    def _compute_stage(self) -> None:
        while (batch := self._get(self.to_compute)) is not None:
            labels = np.stack([item.label for item in batch.items])
            insts = np.stack([item.inst for item in batch.items]) if self.settings.use_instance else None
            start = time.perf_counter()
            try:
                batch.pictures, batch.raw = self.engine(labels, insts, self.settings.save_raw)
            except UserError as exc:
                self._skip(batch.items, exc)
                continue
            batch.seconds = time.perf_counter() - start
            for item in batch.items:
                item.inst = None  # only the label map is written
            with self._count:
                self.unwritten += len(batch.items)
                self.peak_unwritten = max(self.peak_unwritten, self.unwritten)
            self._put(self.to_write, batch)

    def _write_stage(self) -> None:
        while (batch := self._get(self.to_write)) is not None:
            self.report.compute_seconds += batch.seconds
            for i, item in enumerate(batch.items):
                if self.stopping.is_set():
                    return
                self._write_one(item, batch, i)

    def _write_one(self, item: Decoded, batch: Batch, i: int) -> None:
        start = time.perf_counter()
        write_outputs(self.folder.out, item.pair.name, self.settings,
                      *crop_back(self.settings, item.size, batch.pictures[i], item.label,
                                 batch.raw[i] if batch.raw is not None else None))
        self.folder.record(item.pair.name, {
            "decode_s": round(item.seconds, 4), "compute_s": round(batch.seconds / len(batch.items), 4),
            "write_s": round(time.perf_counter() - start, 4), "batch": len(batch.items),
            "height": int(item.label.shape[0]), "width": int(item.label.shape[1])})
        with self._count:
            self.unwritten -= 1
        self.report.done += 1
        if self._bar is not None:
            self._bar.update(1)

    # ------------------------------------------------------------------------------------------ plumbing
    def _skip(self, items: Sequence[Decoded], exc: UserError) -> None:
        """``--keep-going``: record the inputs and go on; otherwise the error stops the run."""
        if not self.keep_going:
            raise exc
        log.error("%s", exc)
        for item in items:
            self.report.failed.append((item.pair.name, exc.problem))
            self.folder.record_failure(item.pair.name, exc)

    def _start(self, name: str, stage) -> threading.Thread:
        def body() -> None:
            try:
                stage()
            except _Stopped:
                pass
            except BaseException as exc:  # handed to the calling thread, which raises it
                if self.failure is None:
                    self.failure = exc
                self.stopping.set()

        thread = threading.Thread(target=body, name=f"run-{name}")
        thread.start()
        return thread

    def _wait(self, attempt) -> object:
        """Retry a blocking step every 0.1 s until it succeeds; raise :class:`_Stopped` once the stream stops."""
        while True:
            with contextlib.suppress(queue.Empty, queue.Full, TimeoutError):
                return attempt()
            if self.stopping.is_set():
                raise _Stopped

    def _put(self, q: queue.Queue, item) -> None:
        self._wait(lambda: q.put(item, timeout=0.1))

    def _get(self, q: queue.Queue):
        return self._wait(lambda: q.get(timeout=0.1))

    def _acquire(self, slots: threading.Semaphore) -> None:
        def attempt() -> bool:
            if not slots.acquire(timeout=0.1):
                raise TimeoutError
            return True

        self._wait(attempt)

    def _join(self, thread: threading.Thread) -> None:
        while thread.is_alive():
            thread.join(0.1)
            if self.stopping.is_set() and thread.is_alive():
                raise _Stopped
        if self.failure is not None:
            raise _Stopped


def decode_pair(pair: Pair, settings: RunSettings) -> Maps:
    """One pair read by the one reader (:func:`labelmaps.load_maps`) as the settings say: the uint8 label map (its
    ids checked), the int32 instance map (from its file or derived; None without instances) and the map's size."""
    return load_maps(pair, settings.map_options())
