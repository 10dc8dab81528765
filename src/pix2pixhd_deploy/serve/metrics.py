"""The server's Prometheus metrics, in a registry of its own (so several apps in one process never share one)."""
from __future__ import annotations

from typing import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,  # noqa: F401 - re-exported for the app
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self, queue_depth: Callable[[], float], max_batch: int):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("pix2pixhd_requests", "synthesize requests answered, by HTTP status", ["status"],
                                registry=r)
        self.errors = Counter("pix2pixhd_errors", "requests refused or failed, by kind", ["kind"], registry=r)
        self.latency = Histogram("pix2pixhd_request_seconds", "synthesize latency, request in to picture out",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.compute = Histogram("pix2pixhd_compute_seconds", "compute time of each batch", buckets=LATENCY_BUCKETS,
                                 registry=r)
        self.batch = Histogram("pix2pixhd_batch_size", "maps per computed batch",
                               buckets=tuple(range(1, max(1, max_batch) + 1)), registry=r)
        self.queue = Gauge("pix2pixhd_queue_depth", "maps waiting for a batch", registry=r)
        self.queue.set_function(queue_depth)

    def text(self) -> bytes:
        return generate_latest(self.registry)
