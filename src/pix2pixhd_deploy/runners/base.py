"""The one runner contract every backend implements (after Polygraphy's ``BaseRunner``).

A runner owns one loaded model on one device. Life cycle: ``activate()`` (load, allocate), any number of
``infer(batch)``, ``deactivate()`` (free); also usable as a context manager. The public methods validate and keep
the bookkeeping; subclasses implement only the ``*_impl`` methods.

``infer`` takes a float32 NCHW numpy batch (the generator input: label_nc one-hot channels + the edge channel) and
returns the float32 (N, 3, H, W) output in [-1, 1]. Every runner sets ``inference_time`` (seconds, the last
``infer_impl`` call, synchronised with the device) so that throughput is comparable across backends.
"""
from __future__ import annotations

import abc
import time
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from ..errors import UserError


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: name, shape (None for a dynamic dimension) and numpy dtype."""

    name: str
    shape: Tuple[Optional[int], ...]
    dtype: str = "float32"

    @property
    def batch(self) -> Optional[int]:
        return self.shape[0] if self.shape else None

    @property
    def channels(self) -> Optional[int]:
        return self.shape[1] if len(self.shape) > 1 else None

    @property
    def spatial(self) -> Optional[Tuple[int, int]]:
        h, w = self.shape[2:4] if len(self.shape) >= 4 else (None, None)
        return (h, w) if h is not None and w is not None else None


def graph_input_format(names, integer_flags) -> str:
    """What an exported graph takes (:mod:`export`): ``stems`` (inputs local_stem, global_stem), ``maps`` (one or
    two integer maps) or ``tensor`` (the 36-channel float input)."""
    names, integer_flags = list(names), list(integer_flags)
    if names == ["local_stem", "global_stem"]:
        return "stems"
    if names and all(integer_flags) and len(names) <= 2:
        return "maps"
    return "tensor"


class Runner(abc.ABC):
    """Base class of all runners. ``name`` is the backend's short name used in flags, JSON and modules."""

    name: str = "base"

    def __init__(self) -> None:
        self.is_active = False
        self.inference_time: Optional[float] = None
        self._compute_time: Optional[float] = None

    # ------------------------------------------------------------------ public, validating
    def activate(self) -> "Runner":
        if self.is_active:
            return self
        self.activate_impl()
        self.is_active = True
        return self

    def deactivate(self) -> None:
        if not self.is_active:
            return
        self.deactivate_impl()
        self.is_active = False

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    def input_spec(self) -> TensorSpec:
        self._require_active()
        return self.input_spec_impl()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch; sets ``inference_time``. ``batch``: float32 (N, C, H, W)."""
        self._require_active()
        spec = self.input_spec_impl()
        if not isinstance(batch, np.ndarray) or batch.ndim != 4:
            raise ValueError(f"{self.name}: expected a 4-d numpy batch, got {getattr(batch, 'shape', type(batch))}")
        if batch.dtype != np.float32:
            raise ValueError(f"{self.name}: expected float32 input, got {batch.dtype}")
        for axis, (want, got) in enumerate(zip(spec.shape, batch.shape)):
            if want is not None and want != got:
                raise UserError(f"the model {spec.name!r} takes shape {self._fmt(spec.shape)} but the input batch is "
                                f"{tuple(batch.shape)} (axis {axis} differs)",
                                fix="use inputs made for this model, or a model built for this batch/size")
        self._compute_time = None
        start = time.perf_counter()
        out = self.infer_impl(np.ascontiguousarray(batch))
        wall = time.perf_counter() - start
        self.inference_time = self._compute_time if self._compute_time is not None else wall
        return out

    # ------------------------------------------------------------------ for subclasses
    @abc.abstractmethod
    def activate_impl(self) -> None: ...

    @abc.abstractmethod
    def deactivate_impl(self) -> None: ...

    @abc.abstractmethod
    def input_spec_impl(self) -> TensorSpec: ...

    @abc.abstractmethod
    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        """Run the batch and return the output as float32 numpy.

        A runner that can time the device compute alone (without host<->device copies, as ais_bench reports it)
        stores that in ``self._compute_time`` (seconds); otherwise the wall time of this call is used."""

    def describe(self) -> str:
        """One line for logs and summaries: backend, device, precision."""
        return self.name

    # ------------------------------------------------------------------ helpers
    def _require_active(self) -> None:
        if not self.is_active:
            raise RuntimeError(f"{self.name} runner used before activate()")

    @staticmethod
    def _fmt(shape) -> str:
        return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"
