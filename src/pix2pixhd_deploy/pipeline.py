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
import platform
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Deque, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from . import __version__
from .dataset import Pair, cityscapes_pairs, find_pairs, load_pair
from .adapters import make_engine
from .dataset import planned_size
from .encoding import check_label_ids
from .errors import PathLike, UserError, failed_inputs_error
from .fileio import (atomic_save_image, atomic_write_array, atomic_write_text, check_free_space, ensure_output_dir,
                     progress, remove_stale_temporaries)
from .labels import LABEL_NC, colorize
from .report import IndexRow, write_index_html
from .runners.base import Runner

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
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

    def identity(self) -> Dict[str, object]:
        """The settings that change the pictures (a resume with different ones would mix outputs)."""
        keys = ["backend", "fp16", "label_nc", "use_instance", "size_multiple"]
        if self.fast_convs:  # only when set, so folders written before the option existed still resume
            keys.append("fast_convs")
        return {k: getattr(self, k) for k in keys}


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
    if name != "openvino":
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
    """An exclusive lock on the output folder for the whole run (released by the OS if the process dies)."""
    path = folder / LOCK
    fh = open(path, "a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            owner = fh.read().strip() or "another process"
            raise UserError(f"another run is writing to this output folder ({owner})", path=folder,
                            fix="wait for it to finish or choose another --output") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        yield
    finally:
        fh.close()


def versions() -> Dict[str, str]:
    out = {"pix2pixhd_deploy": __version__, "python": platform.python_version(), "numpy": np.__version__}
    for mod in ("torch", "onnxruntime", "PIL"):
        m = sys.modules.get(mod)
        if m is not None:
            out[mod] = getattr(m, "__version__", "?")
    return out


def machine() -> Dict[str, object]:
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count()}


def model_hash(model: PathLike) -> str:
    from .cache import cached_sha256
    from .network import resolve_checkpoint

    path = Path(model)
    if path.is_dir():
        path = resolve_checkpoint(path)
    if not path.is_file():
        raise UserError("the model file does not exist", path=path,
                        fix="check the --checkpoint or --model path (latest_net_G.pth, or its folder; .onnx; .om)")
    return cached_sha256(path)


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
             phase: str = "test") -> List[Pair]:
    if (dataroot is None) == (cityscapes is None):
        raise UserError("give exactly one of --dataroot and --cityscapes",
                        fix="--dataroot DIR (with test_label/ and test_inst/) or --cityscapes gtFine/val")
    if cityscapes is not None:
        return cityscapes_pairs(cityscapes)
    return find_pairs(dataroot, phase=phase, use_instance=use_instance)


class RunFolder:
    """An output folder of ``run``, shared by every engine: locked for the run, checked against the settings and
    weights it was made with, its manifest kept (saved at most every few seconds, and at the end), and
    ``index.html`` and the failed-images summary at the end.

    Use as a context manager; :meth:`todo` lists the pairs whose outputs are not complete yet.
    """

    SAVE_EVERY_S = 2.0

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
        self._last_save = 0.0

    def __enter__(self) -> "RunFolder":
        self._lock = output_lock(self.out)
        self._lock.__enter__()
        try:
            identity = {**self.settings.identity(),
                        "model_sha256": model_hash(self.settings.checkpoint or self.settings.model)}
            previous = _load_manifest(self.out)
            if previous is not None and previous.get("identity") != identity:
                old = previous.get("identity", {})
                diffs = [f"{k}: {old.get(k)!r} -> {identity.get(k)!r}" for k in sorted(set(old) | set(identity))
                         if old.get(k) != identity.get(k)]
                raise UserError("this output folder holds pictures made with other settings (" + "; ".join(diffs)
                                + ")", path=self.out, fix="choose a new --output, or delete the folder to start again")
            self.images: Dict[str, Dict[str, object]] = dict(previous.get("images", {})) if previous else {}
            self.manifest: Dict[str, object] = {
                "tool": "pix2pixhd-deploy run", "identity": identity, "settings": dataclasses.asdict(self.settings),
                "versions": versions(), "machine": machine(), "images": self.images}
            if self.engine:
                self.manifest["engine"] = self.engine
        except BaseException:
            self.__exit__(*sys.exc_info())  # releases the lock and removes what this run made
            raise
        return self

    def __exit__(self, *exc) -> None:
        if not (self.out / MANIFEST).exists():  # nothing was made (e.g. the model did not load): leave no trace
            with contextlib.suppress(OSError):
                (self.out / LOCK).unlink()
                for sub in self.subfolders:
                    if (self.out / sub).is_dir() and not any((self.out / sub).iterdir()):
                        (self.out / sub).rmdir()
                if self.created and not any(self.out.iterdir()):
                    self.out.rmdir()
        self._lock.__exit__(*exc)

    def prepare(self, todo: Sequence[Pair]) -> None:
        """Before the first write: the subfolders, leftovers of an interrupted run removed, free disk checked."""
        self.clean()
        if todo and self.settings.save_raw:
            from PIL import Image

            with Image.open(todo[0].label) as img:  # reads the header only
                w, h = img.size
            check_free_space(self.out, len(todo) * 3 * h * w * 4,
                             what=f"{len(todo)} raw outputs of {3 * h * w * 4 / 2**20:.0f} MiB (--save-raw)")

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
        self.images[name] = entry
        if time.monotonic() - self._last_save >= self.SAVE_EVERY_S:
            self.save()

    def save(self) -> None:
        self.manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        atomic_write_text(self.out / MANIFEST, json.dumps(self.manifest, indent=1, sort_keys=True))
        self._last_save = time.monotonic()

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
                first = planned_size(todo[0], settings.size_multiple)
                if min(first) > 0:  # a map too small gets its own error when it is read
                    engine.check_size(*first, path=todo[0].label)
                folder.manifest["runner"] = runner.describe()
                folder.manifest["model_form"] = engine.describe()
                folder.prepare(todo)
                try:
                    _stream(todo, folder, engine, settings, report, keep_going, workers, show_progress)
                finally:
                    report.seconds = time.perf_counter() - start
                    folder.save()
        folder.finish(pairs, report, write_index=write_index)
    return report


def _stream(todo: List[Pair], folder: RunFolder, engine, settings: RunSettings, report: RunReport,
            keep_going: bool, workers: int, show_progress: bool) -> None:
    out, base = folder.out, settings.size_multiple
    batch = max(1, settings.batch_size)
    streams = max(1, settings.streams)
    use_instance = settings.use_instance

    def decode(pair: Pair):
        t = time.perf_counter()
        label, inst = load_pair(pair, base=base)
        check_label_ids(label, settings.label_nc, path=pair.label)
        return label, inst, time.perf_counter() - t

    def compute(labels: np.ndarray, insts: Optional[np.ndarray]):
        t = time.perf_counter()
        pictures, raw = engine(labels, insts, settings.save_raw)
        return pictures, raw, time.perf_counter() - t

    def write(pair: Pair, picture: np.ndarray, label: np.ndarray, raw: Optional[np.ndarray]) -> float:
        t = time.perf_counter()
        write_outputs(out, pair.name, settings, picture, label, raw)
        return time.perf_counter() - t

    bar = progress(range(len(todo)), desc="run", unit="img") if show_progress else None
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="decode") as decoders, \
            ThreadPoolExecutor(max_workers=streams, thread_name_prefix="compute") as computers, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="write") as writers:
        ahead: Deque[Tuple[Pair, Future]] = deque()
        computing: Deque[Tuple[list, Future]] = deque()
        pending_writes: Deque[Tuple[Pair, Future, Dict[str, object]]] = deque()
        queue = iter(todo)
        prefetch = batch * (streams + 1) + 1

        def refill() -> None:
            while len(ahead) < prefetch:
                pair = next(queue, None)
                if pair is None:
                    return
                ahead.append((pair, decoders.submit(decode, pair)))

        def drain(block: bool) -> None:
            while pending_writes and (block or pending_writes[0][1].done()):
                pair, fut, entry = pending_writes.popleft()
                entry["write_s"] = round(fut.result(), 4)
                folder.record(pair.name, entry)
                report.done += 1
                if bar is not None:
                    bar.update(1)

        def collect(block: bool) -> None:
            """Hand finished batches (in order) to the writer."""
            while computing and (block or computing[0][1].done()):
                group, fut = computing.popleft()
                pictures, raw, seconds = fut.result()
                report.compute_seconds += seconds
                for i, (pair, label, _inst, dt) in enumerate(group):
                    entry = {"decode_s": round(dt, 4), "compute_s": round(seconds / len(group), 4),
                             "batch": len(group), "height": int(label.shape[0]), "width": int(label.shape[1])}
                    w = writers.submit(write, pair, pictures[i], label, raw[i] if raw is not None else None)
                    pending_writes.append((pair, w, entry))

        refill()
        while ahead:
            group: List[Tuple[Pair, np.ndarray, Optional[np.ndarray], float]] = []
            while ahead and len(group) < batch:
                pair, fut = ahead.popleft()
                try:
                    label, inst, dt = fut.result()
                except UserError as exc:
                    if not keep_going:
                        raise
                    log.error("%s", exc)
                    report.failed.append((pair.name, exc.problem))
                    continue
                finally:
                    refill()
                if group and label.shape != group[0][1].shape:
                    ahead.appendleft((pair, _done_future((label, inst, dt))))
                    break  # a different size starts a new batch
                group.append((pair, label, inst if use_instance else None, dt))
            if not group:
                continue
            labels = np.stack([g[1] for g in group])
            insts = np.stack([g[2] for g in group]) if use_instance else None
            if len(computing) >= streams:  # at most `streams` batches in flight: wait for the oldest
                wait([computing[0][1]])
                collect(block=False)
            computing.append((group, computers.submit(compute, labels, insts)))
            collect(block=False)
            drain(block=False)
        collect(block=True)
        drain(block=True)
    if bar is not None:
        bar.close()


def _done_future(value) -> Future:
    fut: Future = Future()
    fut.set_result(value)
    return fut
