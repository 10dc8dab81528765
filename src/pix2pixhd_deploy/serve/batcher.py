"""Dynamic batching: concurrent requests for maps of one size computed as one batch, from a bounded queue.

In:  :class:`Job` (one request's label map (H, W) uint8 and instance map (H, W) int32 or None), via
     :meth:`Batcher.submit` on the server's event loop.
Out: :class:`Done` for each job (its picture, the batch's compute seconds and size), or the batch's error.

Rules:

* Jobs wait by kind: size (H, W) and whether they carry an instance map, so that a batch only holds jobs that can
  share one computation. The kind whose oldest job is oldest goes next; its batch takes up to ``max_batch``
  jobs, waiting at most ``max_wait_s`` after that oldest job arrived for more to come (``max_batch`` 1 or
  ``max_wait_s`` 0: no batching), and only while more are on their way: requests the server is still receiving or
  decoding (:meth:`Batcher.arriving`). With none, the batch starts at once, so a lone client never waits.
* At most ``max_queue`` jobs wait; one more raises :class:`QueueFull` at once (the app answers 503 with
  ``Retry-After``), so memory stays bounded however many clients come.
* One batch is computed at a time, in one worker thread (the runtimes use every core for one batch already).
* Whatever goes wrong with a batch (stacking its maps, the computation) is that batch's error, handed to each of its
  jobs; the task that answers batches keeps running whatever a request carries.
* A job whose client went away (its future cancelled) before its batch started is dropped; one that leaves during
  the batch changes nothing for the others: the results of a batch are handed out only to futures still waiting.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Callable, Deque, List, Optional, Tuple

import numpy as np

log = logging.getLogger(__name__)


#: (size (H, W), with an instance map): the jobs of one batch share it
Kind = Tuple[Tuple[int, int], bool]


class QueueFull(Exception):
    """The queue holds ``max_queue`` jobs already."""


@dataclass
class Job:
    label: np.ndarray
    inst: Optional[np.ndarray]
    future: "asyncio.Future[Done]"
    arrived: float = field(default_factory=time.monotonic)

    @property
    def kind(self) -> Kind:
        """What a batch's jobs must share: the maps' size and whether an instance map comes with them."""
        return tuple(self.label.shape), self.inst is not None  # type: ignore[return-value]


@dataclass
class Done:
    picture: np.ndarray      # (H, W, 3) uint8
    compute_s: float         # the batch's compute time
    batch: int               # how many maps the batch held
    backend: str


#: compute(labels (N, H, W), insts or None) -> (pictures (N, H, W, 3), compute seconds, backend)
Compute = Callable[[np.ndarray, Optional[np.ndarray]], Tuple[np.ndarray, float, str]]


class Arrival:
    """One request counted as on its way to the queue, from its first byte until :meth:`release` (idempotent)."""

    def __init__(self, batcher: "Batcher"):
        self._batcher, self._released = batcher, False
        batcher._coming += 1

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._batcher._coming -= 1
            self._batcher._nudge()


def _fail(jobs: List[Job], exc: BaseException) -> None:
    for j in jobs:
        if not j.future.done():
            j.future.set_exception(exc)


class Batcher:
    def __init__(self, compute: Compute, *, max_batch: int = 4, max_wait_s: float = 0.01, max_queue: int = 64):
        self.compute = compute
        self.max_batch, self.max_wait_s, self.max_queue = max(1, max_batch), max(0.0, max_wait_s), max(1, max_queue)
        self._waiting: "OrderedDict[Kind, Deque[Job]]" = OrderedDict()
        self._count = 0
        self._busy = 0            # jobs in the batch being computed
        self._wake: Optional[asyncio.Event] = None
        self._worker: Optional[asyncio.Task] = None
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="serve-compute")
        self._closing = False
        self._coming = 0          # requests being received or decoded: jobs that may join a batch soon

    @property
    def depth(self) -> int:
        """Jobs waiting (not counting the batch in progress)."""
        return self._count

    @property
    def in_flight(self) -> int:
        return self._count + self._busy

    def arriving(self) -> "Arrival":
        """A request is on its way in (its upload or decoding): a batch may wait for its job until it is released."""
        return Arrival(self)

    def _nudge(self) -> None:
        if self._wake is not None:  # a batch waiting for company looks again: maybe nobody is coming now
            self._wake.set()

    def submit(self, label: np.ndarray, inst: Optional[np.ndarray]) -> "asyncio.Future[Done]":
        """Queue one job; its future resolves to :class:`Done`. Raises :class:`QueueFull`."""
        if self._count >= self.max_queue or self._closing:
            raise QueueFull()
        self._start()
        job = Job(label, inst, asyncio.get_running_loop().create_future())
        self._waiting.setdefault(job.kind, deque()).append(job)
        self._count += 1
        self._wake.set()
        return job.future

    def _start(self) -> None:
        if self._worker is None or self._worker.done():  # started on first use, on the loop that serves
            self._wake = asyncio.Event()
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="serve-batcher")

    async def _run(self) -> None:
        while True:
            if not self._count:
                self._wake.clear()
                await self._wake.wait()
                continue
            jobs: List[Job] = []
            try:
                jobs = await self._next_batch()
                if jobs:
                    await self._compute(jobs)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a bug here must not stop every later request being answered
                log.exception("serve: the batcher hit an error; the batch's requests get it, the rest are served")
                _fail(jobs, exc)

    async def _next_batch(self) -> List[Job]:
        """Wait (at most max_wait_s after the oldest job came) for a full batch of the oldest job's kind; take it."""
        kind = min(self._waiting, key=lambda k: self._waiting[k][0].arrived)
        queue = self._waiting[kind]
        deadline = queue[0].arrived + self.max_wait_s
        while len(queue) < self.max_batch and not self._closing and self._coming:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), left)
            except asyncio.TimeoutError:
                break
        jobs = [queue.popleft() for _ in range(min(self.max_batch, len(queue)))]
        if not queue:
            del self._waiting[kind]
        self._count -= len(jobs)
        return [j for j in jobs if not j.future.done()]  # clients that left before their batch started

    async def _compute(self, jobs: List[Job]) -> None:
        self._busy = len(jobs)
        try:
            labels = np.stack([j.label for j in jobs])
            insts = None if jobs[0].inst is None else np.stack([j.inst for j in jobs])
            pictures, seconds, backend = await asyncio.get_running_loop().run_in_executor(
                self._pool, self.compute, labels, insts)
            if len(pictures) != len(jobs):
                raise RuntimeError(f"the computation returned {len(pictures)} pictures for {len(jobs)} maps")
        except Exception as exc:  # noqa: BLE001 - the batch's error goes to each of its requests; serving goes on
            _fail(jobs, exc)
            return
        finally:
            self._busy = 0
        for j, picture in zip(jobs, pictures):
            if not j.future.done():
                j.future.set_result(Done(picture, seconds, len(jobs), backend))

    async def drain(self, timeout: float = 60.0) -> None:
        """Refuse new jobs and wait (up to ``timeout``) until every queued and running job is answered."""
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        end = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < end:
            await asyncio.sleep(0.02)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self._pool.shutdown(wait=False)
