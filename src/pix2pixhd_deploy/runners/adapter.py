"""Label and instance maps in, pictures out, through any runner: the one adapter between the data and the models.

In:  a batch of label maps (N, H, W) uint8 and instance maps (N, H, W) int32 (or None), as :mod:`dataset` reads
     them.
Out: the pictures (N, H, W, 3) uint8, as upstream's ``tensor2im`` makes them, and, when asked for, the raw float32
     (N, 3, H, W) outputs.

The adapter reads the runner's declared inputs (:mod:`runners.base`) and builds its feeds from the maps:

* ``tensor``: upstream's one-hot + instance-edge encoding on the host (:func:`encoding.encode_input`);
* ``maps``: the maps as they are (the model encodes them itself);
* ``stems``: the generator's two stem convolutions computed from the maps (:mod:`stems`).

It also handles, once for every form, what a model's declared shape fixes: a static batch (a batch is split to the
model's size and a short last one padded with copies of its first map, as ais_bench pads) and a static image size
(maps of another size are one clear error naming the map and both sizes). ``run`` (local and Ray), ``bench`` and
``serve`` all go through :func:`make_adapter`, so they compute the same pixels.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..data.labels import LABEL_NC
from ..errors import PathLike, UserError
from ..model import forms
from ..model.decoding import tensor2im
from ..model.encoding import encode_input
from .base import Runner, format_shape, graph_input_format

log = logging.getLogger(__name__)


def _pictures(out: np.ndarray, output_format: str, want_raw: bool):
    """(pictures uint8 (N, H, W, 3), raw float output or None) from a runtime's output."""
    if output_format == forms.UINT8:  # a model that ends with tensor2im: the pictures themselves
        return out.astype(np.uint8, copy=False), None
    return np.stack([tensor2im(y) for y in out]), (out if want_raw else None)


class MapsAdapter:
    """Turns batches of maps into ``runner``'s feeds and its outputs into pictures; ``runner`` must be active.

    ``label_nc``/``use_instance``: how this run's maps are encoded; a model made for another encoding is refused
    here, before any picture. ``threads``: for the stems' C loops (default: all cores).
    """

    def __init__(self, runner: Runner, label_nc: int = LABEL_NC, use_instance: bool = True,
                 threads: Optional[int] = None):
        self.runner = runner
        self.specs = runner.input_specs()
        self.form = graph_input_format(self.specs)
        self.output_format = runner.output_format
        self.label_nc, self.use_instance = label_nc, use_instance
        self.static_batch = self.specs[0].batch
        self.size = self.specs[0].spatial
        self.stems = None
        self.inference_time = 0.0  #: the runner's compute seconds for the last batch of maps
        self._last = threading.local()  # each compute thread's last batch (run --streams)
        self._check_encoding(threads)

    # ------------------------------------------------------------------ checks made once
    def _check_encoding(self, threads: Optional[int]) -> None:
        mismatch = None
        if self.form == forms.TENSOR:
            channels = self.specs[0].channels
            want = self.label_nc + (1 if self.use_instance else 0)
            if channels is not None and channels != want:
                mismatch = f"takes {channels} input channels, not the {want} of this run's encoding"
        elif self.form == forms.MAPS:
            if len(self.specs) == 2 and not self.use_instance:
                mismatch = "takes instance maps, and this run has none"
            elif len(self.specs) == 1 and self.use_instance:
                mismatch = "was made without instance maps (--no-instance)"
        else:
            from ..model.stems import StemComputer

            weights = self.runner.stem_weights()
            if (weights.label_nc, weights.use_instance) != (self.label_nc, self.use_instance):
                mismatch = (f"was exported for label_nc={weights.label_nc}, instance maps "
                            f"{'on' if weights.use_instance else 'off'}")
            self.stems = StemComputer(weights, threads=threads or os.cpu_count(), reuse=True)
        if mismatch:
            raise UserError(f"the model {mismatch}: it does not fit this run's settings (label_nc={self.label_nc}, "
                            f"instance maps {'on' if self.use_instance else 'off'})", path=self.runner.model,
                            fix="pass the matching --label-nc / --no-instance, or use a model made for these maps")

    def check_size(self, height: int, width: int, path: Optional[PathLike] = None) -> None:
        """A UserError when the model takes a fixed size and a map (as the network sees it) has another."""
        if self.size is not None and (height, width) != tuple(self.size):
            h, w = self.size
            raise UserError(f"the map is {width}x{height} (WxH, as the network sees it) but the model takes only "
                            f"{w}x{h}", path=path,
                            fix=f"use maps of {w}x{h}, or a model made for {width}x{height} (run --checkpoint "
                                "builds one for the maps' size by itself)")

    # ------------------------------------------------------------------ the work
    def feeds(self, labels: np.ndarray, insts: Optional[np.ndarray]) -> Dict[str, np.ndarray]:
        """The runner's named inputs for one batch of maps (any batch size; see :meth:`__call__` for static ones)."""
        if self.use_instance and insts is None:
            raise UserError("this model takes instance maps, but none were given",
                            fix="pass the *_instanceIds.png files, or use a model made with --no-instance")
        insts = insts if self.use_instance else None
        if self.form == forms.TENSOR:
            x = np.stack([encode_input(labels[i], None if insts is None else insts[i], self.label_nc)
                          for i in range(labels.shape[0])])
            return {self.specs[0].name: x}
        if self.form == forms.MAPS:
            arrays = [labels, insts]
            return {s.name: np.ascontiguousarray(a, dtype=s.dtype) for s, a in zip(self.specs, arrays)}
        local, glob = self.stems(labels, insts)
        return {self.specs[0].name: local, self.specs[1].name: glob}

    def __call__(self, labels: np.ndarray, insts: Optional[np.ndarray], want_raw: bool = False
                 ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """(pictures (N, H, W, 3) uint8, raw (N, 3, H, W) float32 or None) for a batch of maps."""
        if want_raw and self.output_format == forms.UINT8:
            raise UserError("this model outputs uint8 pictures, so there are no raw outputs to save",
                            fix="drop --save-raw, or use a graph exported with --output-format float")
        n = labels.shape[0]
        self.check_size(*labels.shape[1:3])
        step = self.static_batch or n
        outs: List[np.ndarray] = []
        self.inference_time = feeds_s = runtime_s = 0.0
        for start in range(0, n, step):
            part = slice(start, start + step)
            lab, ins = labels[part], None if insts is None else insts[part]
            k = lab.shape[0]
            if k < step:  # a short last batch for a static-batch model: padded, the padding's outputs dropped
                lab = np.concatenate([lab, np.repeat(lab[:1], step - k, axis=0)])
                ins = None if ins is None else np.concatenate([ins, np.repeat(ins[:1], step - k, axis=0)])
            t0 = time.perf_counter()
            feeds = self.feeds(lab, ins)
            t1 = time.perf_counter()
            outs.append(self.runner.infer(feeds)[:k])
            feeds_s, runtime_s = feeds_s + t1 - t0, runtime_s + time.perf_counter() - t1
            self.inference_time += self.runner.inference_time or 0.0
        t2 = time.perf_counter()
        out = outs[0] if len(outs) == 1 else np.concatenate(outs)
        result = _pictures(out, self.output_format, want_raw)
        self._last.stages = {"feeds_s": feeds_s, "runtime_s": runtime_s, "pictures_s": time.perf_counter() - t2}
        return result

    def last_stages(self) -> Dict[str, float]:
        """Where this thread's last batch's seconds went: ``feeds_s`` (the stems, or the one-hot, on the host),
        ``runtime_s`` (the runner), ``pictures_s`` (``tensor2im``, for a float-output model)."""
        return dict(getattr(self._last, "stages", {}))

    def describe(self) -> str:
        inputs = ", ".join(f"{s.name} {format_shape(s.shape)} {s.dtype}" for s in self.specs)
        return f"{self.form} form ({inputs}) -> {self.output_format}"


def encoding_of(runner: Runner) -> Tuple[int, bool]:
    """(label_nc, use_instance) that an active ``runner``'s model was made for, from its declared inputs (a maps
    model cannot tell its label_nc: label2city's 35 is assumed)."""
    from ..model.encoding import encoding_for_channels

    specs = runner.input_specs()
    form = graph_input_format(specs)
    if form == forms.STEMS:
        weights = runner.stem_weights()
        return weights.label_nc, weights.use_instance
    if form == forms.MAPS:
        return LABEL_NC, len(specs) == 2
    return encoding_for_channels(specs[0].channels or LABEL_NC + 1)


def make_adapter(runner: Runner, label_nc: int = LABEL_NC, use_instance: bool = True,
                threads: Optional[int] = None) -> MapsAdapter:
    """The adapter for an active ``runner`` (kept under this name: ``run``, the Ray engine and ``serve`` call it)."""
    return MapsAdapter(runner, label_nc, use_instance, threads=threads)
