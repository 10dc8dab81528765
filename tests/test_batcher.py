"""The serve batcher's rules, unit by unit, on a fake computation (no model, no server): the survivors of a
mutation run over serve/batcher.py (cosmic-ray; docs/testing.md) that changed behaviour, each killed here."""
from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from pix2pixhd_deploy.serve.batcher import Batcher


class Held:
    """A computation that waits for ``gate`` and records its batches and how many ran at once."""

    def __init__(self):
        self.gate, self.calls, self.running, self.most = threading.Event(), [], 0, 0
        self._lock = threading.Lock()

    def __call__(self, labels, insts):
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            self.gate.wait(30)
            self.calls.append(tuple(int(v) for v in labels[:, 0, 0]))
            return np.repeat(labels[..., None], 3, axis=3), 0.001, "fake"
        finally:
            with self._lock:
                self.running -= 1


def maps(value):
    return np.full((8, 8), value, np.uint8)


async def until(condition, timeout=30.0):
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "the condition never held"
        await asyncio.sleep(0.005)


def test_a_full_batch_starts_without_waiting_for_more_on_their_way():
    held = Held()
    held.gate.set()

    async def scenario():
        batcher = Batcher(held, max_batch=2, max_wait_s=600.0)
        coming = batcher.arriving()  # a third request is on its way: a batch of 2 is full, it must not wait for it
        futures = [batcher.submit(maps(i), None) for i in (1, 2)]
        await asyncio.wait_for(asyncio.gather(*futures), 10)
        coming.release()
        batcher.close()

    asyncio.run(scenario())
    assert held.calls == [(1, 2)]


def test_in_flight_counts_the_batch_computing_and_the_queue_one_batch_at_a_time():
    held = Held()

    async def scenario():
        batcher = Batcher(held, max_batch=1, max_wait_s=0.0)
        assert batcher.in_flight == 0 and batcher.depth == 0
        first = batcher.submit(maps(1), None)
        await until(lambda: held.running == 1)
        second = batcher.submit(maps(2), None)
        assert batcher.in_flight == 2 and batcher.depth == 1  # one computing, one waiting
        held.gate.set()
        await asyncio.wait_for(asyncio.gather(first, second), 10)
        assert batcher.in_flight == 0
        batcher.close()

    asyncio.run(scenario())
    assert held.calls == [(1,), (2,)] and held.most == 1  # one batch at a time, each of max_batch=1


def test_the_oldest_kind_goes_first():
    held = Held()

    async def scenario():
        batcher = Batcher(held, max_batch=8, max_wait_s=0.0)
        blocker = batcher.submit(maps(0), None)  # holds the computation while the others queue
        await until(lambda: held.running == 1)
        a1 = batcher.submit(maps(1), np.zeros((8, 8), np.int32))  # kind A (with instances), oldest
        b = batcher.submit(maps(2), None)                          # kind B
        a2 = batcher.submit(maps(3), np.zeros((8, 8), np.int32))  # kind A again, newest of all
        held.gate.set()
        await asyncio.wait_for(asyncio.gather(blocker, a1, b, a2), 10)
        batcher.close()

    asyncio.run(scenario())
    assert held.calls == [(0,), (1, 3), (2,)]  # A's batch (its oldest job is the oldest), then B's


def test_a_batch_size_below_one_means_one():
    held = Held()
    held.gate.set()

    async def scenario():
        batcher = Batcher(held, max_batch=0, max_wait_s=0.0)
        assert batcher.max_batch == 1
        await asyncio.wait_for(asyncio.gather(*(batcher.submit(maps(i), None) for i in range(3))), 10)
        batcher.close()

    asyncio.run(scenario())
    assert all(len(c) == 1 for c in held.calls) and len(held.calls) == 3


def test_drain_gives_up_after_its_timeout_and_extra_pictures_are_an_error():
    held = Held()

    async def scenario():
        batcher = Batcher(held, max_batch=1, max_wait_s=0.0)
        job = batcher.submit(maps(1), None)
        await until(lambda: held.running == 1)
        start = time.monotonic()
        await asyncio.wait_for(batcher.drain(timeout=0.2), 10)  # the held batch is not answered: it gives up
        assert 0.19 <= time.monotonic() - start < 5 and not job.done()  # waited its timeout, no longer
        held.gate.set()
        await asyncio.wait_for(job, 10)
        batcher.close()

        def too_many(labels, insts):
            return np.zeros((labels.shape[0] + 1, 8, 8, 3), np.uint8), 0.0, "fake"

        other = Batcher(too_many, max_batch=1, max_wait_s=0.0)
        with pytest.raises(RuntimeError, match="2 pictures for 1 maps"):
            await asyncio.wait_for(other.submit(maps(1), None), 10)
        other.close()

    asyncio.run(scenario())


def test_a_stalled_upload_holds_a_batch_no_longer_than_max_wait():
    """A request that started uploading and never finishes: the batch waiting for it goes at max_wait_s after its
    oldest job came, not when the upload ends (the deadline arithmetic survived the serve tests' mutation run)."""
    held = Held()
    held.gate.set()

    async def scenario():
        batcher = Batcher(held, max_batch=4, max_wait_s=0.2)
        stalled = batcher.arriving()  # never released while the job waits
        start = time.monotonic()
        await asyncio.wait_for(batcher.submit(maps(1), None), 10)
        waited = time.monotonic() - start
        stalled.release()
        batcher.close()
        return waited

    waited = asyncio.run(scenario())
    # it waited for company, and gave up at the deadline: not a second later (a deadline computed as deadline / now
    # is about 1 and held the batch for a whole second; the margin is for a loaded machine)
    assert 0.19 <= waited < 0.9, waited


def test_close_stops_the_worker_and_a_negative_wait_means_none():
    """close() ends the task that answers batches (the `is None` mutant left it running), and a negative
    max_wait_s is taken as no wait at all."""
    held = Held()
    held.gate.set()

    async def scenario():
        batcher = Batcher(held, max_batch=4, max_wait_s=-5.0)
        assert batcher.max_wait_s == 0.0
        await asyncio.wait_for(batcher.submit(maps(3), None), 10)
        worker = batcher._worker
        assert worker is not None and not worker.done()
        batcher.close()
        await until(worker.done, 5)
        assert worker.cancelled()

    asyncio.run(scenario())
    assert held.calls == [(3,)]


def test_a_queue_longer_than_a_batch_starts_a_full_batch_at_once():
    """Three jobs waiting with batches of two and a fourth request on its way: the first two go without waiting (the
    `len(queue) != max_batch` mutant waited for the 600 s deadline)."""
    held = Held()
    held.gate.set()

    async def scenario():
        batcher = Batcher(held, max_batch=2, max_wait_s=600.0)
        coming = batcher.arriving()
        futures = [batcher.submit(maps(i), None) for i in (1, 2, 3)]
        await asyncio.wait_for(asyncio.gather(*futures[:2]), 10)
        coming.release()  # nothing more is on its way: the third goes alone
        await asyncio.wait_for(futures[2], 10)
        batcher.close()

    asyncio.run(scenario())
    assert held.calls == [(1, 2), (3,)]


def test_an_error_outside_the_computation_reaches_its_batch_and_the_worker_goes_on():
    """A bug in the batcher itself (here its batch step raising): that batch's requests get the error, the next
    request is answered (without the catch-all the worker died and the first request was never answered)."""
    held = Held()
    held.gate.set()

    async def scenario():
        batcher = Batcher(held, max_batch=1, max_wait_s=0.0)
        real, calls = batcher._compute, []

        async def flaky(jobs):
            calls.append(len(jobs))
            if len(calls) == 1:
                raise RuntimeError("a bug in the batcher")
            await real(jobs)

        batcher._compute = flaky
        with pytest.raises(RuntimeError, match="a bug in the batcher"):
            await asyncio.wait_for(batcher.submit(maps(1), None), 10)
        await asyncio.wait_for(batcher.submit(maps(2), None), 10)
        batcher.close()

    asyncio.run(scenario())
    assert held.calls == [(2,)]
