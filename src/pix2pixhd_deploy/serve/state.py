"""What one server (or one Ray Serve replica) holds: the model, its batcher, its metrics and its limits.

The model loads once. Under uvicorn it loads in a thread after start-up, so ``/healthz`` answers at once and
``/readyz`` turns 200 when it is loaded (a load error is kept and shown by ``/readyz``); a Ray replica loads it in
its constructor.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from typing import Optional, Tuple

from ..data.labelmaps import MapOptions
from ..errors import UserError
from ..runners.open import CITYSCAPES_SIZE, Model, ModelOptions, map_options_for
from ..version import __version__
from .batcher import Batcher
from .metrics import Metrics
from .options import ServeLimits

log = logging.getLogger(__name__)

@dataclass
class ServeState:
    model_options: ModelOptions
    limits: ServeLimits = field(default_factory=ServeLimits)
    model: Optional[Model] = None
    load_error: Optional[str] = None
    version: str = __version__

    def __post_init__(self) -> None:
        self.api_key = self.limits.resolved_api_key()
        self.batcher = Batcher(self._compute, max_batch=self.limits.max_batch,
                               max_wait_s=self.limits.max_wait_ms / 1000.0, max_queue=self.limits.max_queue)
        self.metrics = Metrics(lambda: self.batcher.depth, self.limits.max_batch)
        self._decoding: Optional[asyncio.Semaphore] = None

    # ------------------------------------------------------------------ settings the app reads
    @property
    def max_pixels(self) -> int:
        return self.limits.max_pixels

    @property
    def max_upload_bytes(self) -> int:
        """A PNG can be larger than its pixels when stored without compression: 4 bytes a pixel, plus headers."""
        return 4 * self.limits.max_pixels + (1 << 20)

    @property
    def label_nc(self) -> int:
        return self.model_options.label_nc

    @property
    def page_size(self) -> Tuple[int, int]:
        return tuple(self.model_options.sizes[0]) if self.model_options.sizes else CITYSCAPES_SIZE

    @property
    def decoding(self) -> asyncio.Semaphore:
        if self._decoding is None:  # made on the serving loop
            self._decoding = asyncio.Semaphore(self.limits.decoders)
        return self._decoding

    def map_options(self, instances: Optional[str], fit: Optional[str], *, has_instance: bool) -> MapOptions:
        """How a request's maps are read (:func:`~..runners.open.map_options_for`)."""
        return map_options_for(self.label_nc, self.model_options.use_instance, instances, fit,
                               has_instance=has_instance)

    # ------------------------------------------------------------------ the model
    def _compute(self, labels, insts):
        pictures, seconds, backend = self.model.compute(labels, insts)
        self.metrics.compute.observe(seconds)
        self.metrics.batch.observe(len(labels))
        return pictures, seconds, backend

    def load(self) -> None:
        """Load the model here and now (a Ray replica's constructor, or the loading thread)."""
        try:
            model = Model.load(self.model_options)
        except UserError as exc:
            self.load_error = f"the model did not load: {exc}"
            log.error("serve: %s", self.load_error)
            raise
        # ready only once warm: the first inference of a runtime costs up to twice a steady one (its memory first
        # touched), and that is the first client's wait otherwise
        took = model.warm_up()
        log.info("serve: warmed up (%s)", ", ".join(f"{w}x{h} in {s:.2f} s" for (h, w), s in took.items()))
        self.model = model
        log.debug("serve: ready (%s)", "; ".join(e["reason"] for e in self.model.describe()["engines"]))

    def load_in_background(self, on_ready=None) -> threading.Thread:
        def body() -> None:
            try:
                self.load()
            except UserError:
                return
            if on_ready:
                on_ready(self)

        thread = threading.Thread(target=body, name="serve-load", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self.batcher.close()
        if self.model is not None:
            self.model.close()
