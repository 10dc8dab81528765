"""The one runner contract every backend implements (after Polygraphy's ``BaseRunner``).

A runner owns one loaded model on one device. Life cycle: ``activate()`` (load, allocate), any number of
``infer(feeds)``, ``deactivate()`` (free); also usable as a context manager. The public methods validate and keep
the bookkeeping; subclasses implement only the ``*_impl`` methods.

Every runner declares what it takes and gives, the way its model does:

* ``input_specs()``: the named inputs in order (:class:`TensorSpec`: name, shape with ``None`` for a dynamic axis,
  numpy dtype). Three forms exist (:func:`graph_input_format`): ``tensor`` (one float32 (N, 36, H, W) input, the
  seed's ``input_concat``), ``maps`` (``label`` uint8 (N, H, W) and ``inst`` int32 (N, H, W), encoded inside the
  model) and ``stems`` (``local_stem`` and ``global_stem``, the outputs of the generator's two stem convolutions,
  which :mod:`~pix2pixhd_deploy.model.stems` computes from the maps).
* ``output_spec()``: float32 (N, 3, H, W) in [-1, 1] (``output_format`` ``float``) or the uint8 (N, H, W, 3)
  pictures (``uint8``, a model that ends with upstream's ``tensor2im``).

``infer(feeds)`` takes a dict of named numpy arrays (a bare array is accepted for a one-input model), checks names,
dtypes, ranks and static dimensions, and returns the output array. Every runner sets ``inference_time`` (seconds,
the last ``infer_impl`` call, synchronised with the device) so that throughput is comparable across backends.
Turning label/instance maps into any runner's feeds is :mod:`~pix2pixhd_deploy.runners.adapter`' job, for every form.
"""
from __future__ import annotations

import abc
import time
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import UserError
from ..model import forms

INPUT_FORMATS = forms.INPUT_FORMATS
OUTPUT_FORMATS = forms.OUTPUT_FORMATS
MAPS_INPUT_NAMES = ("label", "inst")
STEMS_INPUT_NAMES = ("local_stem", "global_stem")
INTEGER_DTYPES = ("uint8", "int32", "int64")


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: name, shape (None for a dynamic dimension) and numpy dtype name."""

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
        """(H, W) when both are static: axes 2-3 of an NCHW tensor, axes 1-2 of an (N, H, W) map."""
        h, w = self.shape[-2:] if len(self.shape) == 4 else self.shape[1:3] if len(self.shape) == 3 else (None, None)
        return (h, w) if h is not None and w is not None else None

    def describe(self) -> str:
        return f"{self.name} {format_shape(self.shape)} {self.dtype}"


def format_shape(shape: Sequence[Optional[int]]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def graph_input_format(specs: Sequence[TensorSpec]) -> str:
    """What a model takes: ``stems`` (inputs local_stem, global_stem), ``maps`` (one or two integer maps) or
    ``tensor`` (the 36-channel float input)."""
    names = [s.name for s in specs]
    if names == list(STEMS_INPUT_NAMES):
        return forms.STEMS
    if specs and len(specs) <= 2 and all(s.dtype in INTEGER_DTYPES for s in specs):
        return forms.MAPS
    if len(specs) == 1 and specs[0].dtype not in INTEGER_DTYPES:
        return forms.TENSOR
    raise UserError("the model's inputs (" + ", ".join(s.describe() for s in specs) + ") are none of the forms "
                    "pix2pixhd-deploy makes (input_concat; label and inst maps; the two stems)",
                    fix="export the model with pix2pixhd-deploy export")


Feeds = Union[Mapping[str, np.ndarray], np.ndarray]


class Runner(abc.ABC):
    """Base class of all runners. ``name`` is the backend's short name used in flags, JSON and modules."""

    name: str = "base"
    #: the model file (checkpoint, .onnx, .om), or None for an in-memory model
    model = None

    def __init__(self) -> None:
        self.is_active = False
        self.inference_time: Optional[float] = None
        self._compute_time: Optional[float] = None
        self._stem_weights = None  # the stems sidecar, read once (stem_weights)

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
        self._stem_weights = None

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    def input_specs(self) -> List[TensorSpec]:
        self._require_active()
        return list(self.input_specs_impl())

    def input_spec(self) -> TensorSpec:
        """The first input (the only one of a ``tensor`` model)."""
        return self.input_specs()[0]

    def output_spec(self) -> TensorSpec:
        self._require_active()
        return self.output_spec_impl()

    @property
    def input_format(self) -> str:
        return graph_input_format(self.input_specs())

    @property
    def output_format(self) -> str:
        return forms.UINT8 if self.output_spec().dtype == "uint8" else forms.FLOAT

    def infer(self, feeds: Feeds) -> np.ndarray:
        """Run one batch of named inputs; returns the output array and sets ``inference_time``."""
        self._require_active()
        specs = self.input_specs_impl()
        if isinstance(feeds, np.ndarray):
            if len(specs) != 1:
                raise ValueError(f"{self.name}: the model takes {len(specs)} inputs "
                                 f"({', '.join(s.name for s in specs)}); pass a dict")
            feeds = {specs[0].name: feeds}
        checked = self._check_feeds(specs, feeds)
        self._compute_time = None
        start = time.perf_counter()
        out = self.infer_impl(checked)
        wall = time.perf_counter() - start
        self.inference_time = self._compute_time if self._compute_time is not None else wall
        if out.dtype == np.float16:
            out = out.astype(np.float32)
        return out

    # ------------------------------------------------------------------ for subclasses
    @abc.abstractmethod
    def activate_impl(self) -> None: ...

    @abc.abstractmethod
    def deactivate_impl(self) -> None: ...

    @abc.abstractmethod
    def input_specs_impl(self) -> Sequence[TensorSpec]: ...

    @abc.abstractmethod
    def output_spec_impl(self) -> TensorSpec: ...

    @abc.abstractmethod
    def infer_impl(self, feeds: Dict[str, np.ndarray]) -> np.ndarray:
        """Run the checked feeds (contiguous, of the declared dtypes) and return the output as numpy.

        A runner that can time the device compute alone (without host<->device copies, as ais_bench reports it)
        stores that in ``self._compute_time`` (seconds); otherwise the wall time of this call is used."""

    def describe(self) -> str:
        """One line for logs and summaries: backend, device, precision."""
        return self.name

    def layer_profile(self) -> Optional[List[Dict[str, object]]]:
        """The runtime's own per-layer times, summed over every ``infer`` since activation, for a runner opened
        with ``profile=True`` that can give them (OpenVINO); None for the others."""
        return None

    def stem_weights(self):
        """The stem convolutions' weights for a ``stems`` model: the ``.stems.npz`` export wrote beside it."""
        from ..model.stems import StemWeights, sidecar_path

        if self.model is None:
            raise ValueError(f"{self.name}: an in-memory model has no stems sidecar")
        if self._stem_weights is None:  # read once per runner: the adapter and encoding_of both ask for them
            self._stem_weights = StemWeights.load(sidecar_path(self.model))
        return self._stem_weights

    # ------------------------------------------------------------------ helpers
    def _require_active(self) -> None:
        if not self.is_active:
            raise RuntimeError(f"{self.name} runner used before activate()")

    def _check_feeds(self, specs: Sequence[TensorSpec], feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        names = [s.name for s in specs]
        if sorted(feeds) != sorted(names):
            raise ValueError(f"{self.name}: the model takes inputs {names}, got {sorted(feeds)}")
        checked = {}
        batch = None
        for spec in specs:
            arr = feeds[spec.name]
            if not isinstance(arr, np.ndarray) or arr.ndim != len(spec.shape):
                raise ValueError(f"{self.name}: input {spec.name!r} must be a {len(spec.shape)}-d numpy array "
                                 f"{format_shape(spec.shape)}, got {getattr(arr, 'shape', type(arr))}")
            if arr.dtype != np.dtype(spec.dtype):
                if not (spec.dtype == "float16" and arr.dtype == np.float32):  # fp16 graphs take float32 too
                    raise ValueError(f"{self.name}: input {spec.name!r} must be {spec.dtype}, got {arr.dtype}")
                arr = arr.astype(np.float16)
            for axis, (want, got) in enumerate(zip(spec.shape, arr.shape)):
                if want is not None and want != got:
                    raise UserError(f"the model's input {spec.name!r} has shape {format_shape(spec.shape)} but was "
                                    f"given {tuple(arr.shape)} (axis {axis} differs)",
                                    fix="use inputs made for this model, or a model built for this batch/size")
            if batch is not None and arr.shape[0] != batch:
                raise ValueError(f"{self.name}: the inputs' batch sizes differ ({batch} and {arr.shape[0]})")
            batch = arr.shape[0]
            checked[spec.name] = np.ascontiguousarray(arr)
        return checked
