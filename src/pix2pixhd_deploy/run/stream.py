"""The streaming part of ``run``: named stages with bounded queues between them.

decode (``--workers`` threads: PNG pairs -> maps, :mod:`labelmaps`) -> batcher (input order, one size per batch)
-> compute (``--streams`` threads: the adapter of :mod:`adapters` and the runner) -> write (one thread: the files
of :mod:`runfolder`). The queues are bounded (:class:`StreamLimits`), so memory stays flat however fast the runner
is, and Ctrl-C lets the writer finish the picture it is writing.
"""
from __future__ import annotations

import contextlib
import logging
import os
import queue
import resource
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..data.labelmaps import MapOptions, Pair, load_maps
from ..errors import UserError
from ..fileio import progress
from .folder import RunFolder, crop_back, write_outputs

if TYPE_CHECKING:
    from .settings import RunReport, RunSettings

log = logging.getLogger(__name__)


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
    faults: int = 0  # minor page faults of the decoding thread while it read this pair


@dataclass
class Batch:
    """Consecutive decoded pairs of one size (one forward pass); after the compute stage, their pictures."""

    items: List[Decoded]
    pictures: Optional[np.ndarray] = None
    raw: Optional[np.ndarray] = None
    seconds: float = 0.0
    stages: Dict[str, float] = field(default_factory=dict)  # the compute's split: :func:`batch_usage`, waits


@dataclass(frozen=True)
class StreamLimits:
    """How far each stage may run ahead of the next. A run's memory is bounded by these, never by its length."""

    decode_ahead: int   # pairs being decoded or decoded, not yet taken into a batch
    compute_queue: int  # batches waiting for a compute thread
    write_queue: int    # computed batches waiting for the writer
    encoding: int = 0   # pictures of earlier batches still being encoded by the encoder threads (0: no pool)

    @classmethod
    def for_run(cls, batch: int, streams: int, workers: int, encoders: int = 1) -> "StreamLimits":
        return cls(decode_ahead=batch * (streams + 1) + workers, compute_queue=1, write_queue=streams,
                   encoding=encoders if encoders > 1 else 0)

    def max_pictures(self, batch: int, streams: int) -> int:
        """Pictures computed and not yet written, at most: the write queue, one batch held by each compute thread
        waiting to hand it over, the batch being written, and with an encoder pool the pictures of earlier batches
        its threads are still encoding."""
        return (self.write_queue + streams + 1) * batch + self.encoding


def default_encoders(device_kind: str, streams: int = 1, workers: int = 2) -> int:
    """Encoder threads for a run: one when the CPU computes the pictures (the runtime has every core, and one
    writer kept up with it on the project's 2-core machine); otherwise the cores the decoders and the threads
    feeding the device leave (Pillow's PNG and JPEG encoders release the GIL)."""
    if device_kind == "cpu":
        return 1
    return max(1, (os.cpu_count() or 1) - streams - workers)


class _Stopped(Exception):
    """A stage's wait ended because the stream is stopping (an error elsewhere, or Ctrl-C)."""


class Stream:
    """decode -> compute -> write, each stage its own threads, with bounded queues between them.

    * **decode** (``workers`` threads): PNG pairs -> maps, checked; at most ``decode_ahead`` pairs ahead of the
      batcher (Pillow and zlib release the GIL, so decoding overlaps the compute);
    * the **batcher** (the calling thread): takes the decoded pairs in input order and groups consecutive pairs of
      one size, up to ``batch_size``, into the ``to_compute`` queue;
    * **compute** (``streams`` threads): ``engine(labels, insts, want_raw) -> (pictures, raw)`` into ``to_write``;
    * **write** (one thread, or a pool of ``encoders`` threads when the device is not the CPU): each picture
      encoded, its files written atomically, and its manifest entry.

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
        self.options = settings.map_options()
        self.batch = max(1, settings.batch_size)
        self.streams = max(1, settings.streams)
        self.workers = max(1, workers)
        self.encoders = settings.encoders or default_encoders(settings.device_kind(), self.streams, self.workers)
        self.limits = StreamLimits.for_run(self.batch, self.streams, self.workers, self.encoders)
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
        self.recorded: List[Dict[str, object]] = []  # this run's manifest entries, in the order written
        self.started = time.perf_counter()
        self._count = threading.Lock()
        self._bar = None
        self._side: List[int] = []  # native ids of the decode and write threads: their page faults are their own
        self._retired: Dict[int, int] = {}  # such threads that ended, with their final count

    # ---------------------------------------------------------------------------------- the calling thread
    def run(self, todo: Sequence[Pair]) -> None:
        self.started = time.perf_counter()
        for item in enumerate(todo):
            self.to_decode.put(item)
        self._bar = progress(range(len(todo)), desc="run", unit="img") if self.show_progress else None
        decoders = [self._start(f"decode-{i}", self._decode_stage, side=True) for i in range(self.workers)]
        computers = [self._start(f"compute-{i}", self._compute_stage) for i in range(self.streams)]
        writer = self._start("write", self._write_stage, side=True)
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
            before = resource.getrusage(resource.RUSAGE_THREAD)
            item = decode_pair(index, pair, self.options)
            item.faults = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before.ru_minflt
            self.decoded.put(item)

    def _compute_stage(self) -> None:
        while True:
            waited = time.perf_counter()
            if (batch := self._get(self.to_compute)) is None:
                return
            labels = np.stack([item.label for item in batch.items])
            insts = np.stack([item.inst for item in batch.items]) if self.settings.use_instance else None
            start = time.perf_counter()
            # the side threads are read after the process here and before it at the end: their window lies inside
            # the process's, so nothing is subtracted that the process did not count
            before = resource.getrusage(resource.RUSAGE_SELF)
            side = self._side_faults()
            try:
                batch.pictures, batch.raw = self.engine(labels, insts, self.settings.save_raw)
            except UserError as exc:
                self._skip(batch.items, exc)
                continue
            batch.seconds = time.perf_counter() - start
            side_now = self._side_faults()
            usage = batch_usage(before)
            # the runtime's own faults: what the decode and write threads touched meanwhile is theirs, counted
            # with the picture they worked on (a picture's encode overlaps the next one's computation)
            usage["minor_faults"] = max(0, usage["minor_faults"] - sum(n - side.get(t, 0) for t, n in side_now.items()))
            batch.stages = {"wait_s": start - waited, **usage, **last_stages(self.engine)}
            for item in batch.items:
                item.inst = None  # only the label map is written
            with self._count:
                self.unwritten += len(batch.items)
                self.peak_unwritten = max(self.peak_unwritten, self.unwritten)
            self._put(self.to_write, batch)

    def _write_stage(self) -> None:
        if self.encoders == 1:  # encode and write in this thread, picture after picture
            while (batch := self._get(self.to_write)) is not None:
                self.report.compute_seconds += batch.seconds
                for i, item in enumerate(batch.items):
                    if self.stopping.is_set():
                        return
                    self._write_one(item, batch, i)
            return
        # a pool: at most ``encoders`` pictures encoding at once; on a stop, those started finish, no other starts
        slots = threading.Semaphore(self.encoders)
        with ThreadPoolExecutor(self.encoders, thread_name_prefix="run-encode",
                                initializer=self._side_thread) as pool:
            while (batch := self._get(self.to_write)) is not None:
                self.report.compute_seconds += batch.seconds
                for i, item in enumerate(batch.items):
                    self._acquire(slots)
                    pool.submit(self._encode_task, slots, item, batch, i)

    def _encode_task(self, slots: threading.Semaphore, item: Decoded, batch: Batch, i: int) -> None:
        try:
            if not self.stopping.is_set():
                self._write_one(item, batch, i)
        except BaseException as exc:  # the first error stops the run, as in any stage
            if self.failure is None:
                self.failure = exc
            self.stopping.set()
        finally:
            slots.release()

    def _write_one(self, item: Decoded, batch: Batch, i: int) -> None:
        before = resource.getrusage(resource.RUSAGE_THREAD)
        written = write_outputs(self.folder.out, item.pair.name, self.settings,
                                *crop_back(self.settings, item.size, batch.pictures[i], item.label,
                                           batch.raw[i] if batch.raw is not None else None))
        write_faults = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before.ru_minflt
        n = len(batch.items)
        # a batch's seconds and page faults, shared evenly among its pictures
        shares = {k: (v / n if k.endswith("_s") else int(v) // n) for k, v in batch.stages.items()}
        # a picture's page faults: its share of the runtime's, and those of its own decoding and writing
        faults = {"compute_minor_faults": shares.get("minor_faults", 0), "decode_minor_faults": item.faults,
                  "write_minor_faults": write_faults}
        shares["minor_faults"] = sum(faults.values())
        entry = {"decode_s": round(item.seconds, 4), "compute_s": round(batch.seconds / n, 4), "batch": n,
                 "height": int(item.label.shape[0]), "width": int(item.label.shape[1]),
                 **{k: round(v, 4) if k.endswith("_s") else v for k, v in {**shares, **written}.items()}, **faults}
        entry["done_s"] = round(time.perf_counter() - self.started, 3)  # since the stream started
        self.folder.record(item.pair.name, entry)
        self.recorded.append({"name": item.pair.name, **entry})
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
        self.folder.failed.add(exc, *(item.pair.name for item in items))

    def _side_thread(self) -> None:
        """Called first in a decode or write thread: its page faults are counted apart from the runtime's."""
        with self._count:
            self._side.append(threading.get_native_id())

    def _side_faults(self) -> Dict[int, int]:
        """The minor page faults of every decode and write thread so far, those that ended included."""
        with self._count:  # no thread ends between the two readings
            return {**self._retired, **threads_minor_faults(self._side)}

    def _start(self, name: str, stage, side: bool = False) -> threading.Thread:
        def body() -> None:
            if side:
                self._side_thread()
            try:
                stage()
            except _Stopped:
                pass
            except BaseException as exc:  # handed to the calling thread, which raises it
                if self.failure is None:
                    self.failure = exc
                self.stopping.set()
            finally:
                if side:  # its count outlives it (/proc forgets a thread that ended)
                    with self._count:
                        tid = threading.get_native_id()
                        self._retired[tid] = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
                        self._side.remove(tid)

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


def batch_usage(before) -> Dict[str, float]:
    """What the process used since the ``getrusage`` reading ``before``: page faults (minor: memory touched for
    the first time; major: read from disk) and CPU seconds in the kernel and in user space, every thread counted
    (the runtime's own threads, and the decode and write stages while they overlap)."""
    now = resource.getrusage(resource.RUSAGE_SELF)
    return {"minor_faults": now.ru_minflt - before.ru_minflt, "major_faults": now.ru_majflt - before.ru_majflt,
            "system_s": now.ru_stime - before.ru_stime, "user_s": now.ru_utime - before.ru_utime}


def threads_minor_faults(native_ids: Sequence[int]) -> Dict[int, int]:
    """The minor page faults of these threads of this process so far (``/proc/self/task/<id>/stat``, field 10),
    by thread; a thread that has ended, or a system without ``/proc``, is left out."""
    faults = {}
    for tid in list(native_ids):
        try:
            with open(f"/proc/self/task/{tid}/stat", "rb") as f:
                faults[tid] = int(f.read().rsplit(b")", 1)[1].split()[7])
        except (OSError, IndexError, ValueError):
            pass
    return faults


def last_stages(engine) -> Dict[str, float]:
    """The engine's split of its last batch (:meth:`MapsAdapter.last_stages`), or nothing for one without it."""
    split = getattr(engine, "last_stages", None)
    return split() if callable(split) else {}


def decode_pair(index: int, pair: Pair, options: MapOptions) -> Decoded:
    """One pair read by the one reader (:func:`labelmaps.load_maps`), timed: the uint8 label map (its ids checked),
    the int32 instance map (from its file or derived; None without instances) and the map's size, or the
    :class:`UserError` that stopped it. The local and the Ray engine decode with it."""
    start = time.perf_counter()
    try:
        label, inst, size = load_maps(pair, options)
        item = Decoded(index, pair, label, inst, size=size)
    except UserError as exc:
        item = Decoded(index, pair, error=exc)
    item.seconds = time.perf_counter() - start
    return item
