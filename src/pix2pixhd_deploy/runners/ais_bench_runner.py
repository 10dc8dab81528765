"""ais_bench runner: an ATC-compiled ``.om`` on an Ascend NPU through ``ais_bench.infer.interface.InferSession``.

The API used is the documented one (ASCEND.md §2.5): ``InferSession(device_id, model_path)``, ``get_inputs()`` /
``get_outputs()`` (``.name``, ``.shape``, ``.realsize``...), ``infer(feeds)`` returning numpy arrays,
``set_dynamic_batchsize(n)`` and ``sumary().exec_time_list`` (the NPU execute time of each run, in ms; the spelling
is ais_bench's).

* A static-batch OM (``atc --input_shape="input_concat:4,36,1024,2048"``) takes exactly that batch; the file-driven
  ``infer`` pads a short last batch with its first file and drops the padding outputs, as ais_bench does.
* A dynamic-batch OM (``atc ... --dynamic_batch_size="1,4,8"``, batch ``-1`` in its input shape) needs the gear to
  run at, ais_bench's ``--dymBatch N``; the runner then behaves as a static batch-N model.
* ``inference_time`` is the NPU compute time from ``exec_time_list``, the figure ais_bench's throughput uses.

``ais_bench`` and its ``aclruntime`` backend are not on PyPI: they are built from Ascend's tools repository on a
machine with CANN (ASCEND.md §2.1). Without them the runner says so in one line.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..errors import PathLike, UserError
from .base import Runner, TensorSpec

log = logging.getLogger(__name__)

INSTALL_FIX = ("install aclruntime and ais_bench from Ascend's tools repository (https://github.com/Ascend/tools, "
               "ais-bench_workload/tool/ais_bench) on a machine with CANN: pip3 install -v "
               "'git+https://github.com/Ascend/tools.git#egg=aclruntime&subdirectory=ais-bench_workload/tool/"
               "ais_bench/backend' and the same with '#egg=ais_bench&subdirectory=ais-bench_workload/tool/ais_bench'")
#: the extra input ATC adds to a dynamic-batch OM to carry the batch size; ais_bench fills it itself
_DYNAMIC_BATCH_INPUT = "ascend_mbatch_shape_data"


def _device_id(device: Optional[str]) -> int:
    text = "0" if device is None else str(device).strip().lower()
    if text in ("", "auto"):
        return 0
    for prefix in ("npu:", "ascend:"):
        if text.startswith(prefix):
            text = text[len(prefix):]
    if not text.isdigit():
        raise UserError(f"the ais_bench runner takes an NPU number as --device, not {device!r}",
                        fix="pass --device 0 (see npu-smi info for the numbers)")
    return int(text)


def _dims(shape: Sequence[int]) -> tuple:
    return tuple(int(d) for d in shape)


class AisBenchRunner(Runner):
    """Runs an ``.om`` with ais_bench's ``InferSession`` on one NPU."""

    name = "ais_bench"

    def __init__(self, model: PathLike, *, device: Optional[str] = None, dym_batch: Optional[int] = None):
        super().__init__()
        self.model = Path(model)
        self.device = device
        self.dym_batch = dym_batch
        self.session = None

    # ------------------------------------------------------------------ contract
    def activate_impl(self) -> None:
        try:
            from ais_bench.infer.interface import InferSession
        except ImportError as exc:
            raise UserError(f"ais_bench is not installed ({exc.name or exc}), and running an OM needs it",
                            path=self.model, fix=INSTALL_FIX) from exc
        if not self.model.is_file():
            raise UserError("the OM model does not exist", path=self.model,
                            fix="compile one with the atc commands that pix2pixhd-deploy export prints")
        device_id = _device_id(self.device)
        try:
            session = InferSession(device_id, str(self.model))
        except (RuntimeError, ValueError, OSError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:240]
            raise UserError(f"ais_bench could not load the OM on NPU {device_id} ({first})", path=self.model,
                            fix="check `npu-smi info` for the device, source /usr/local/Ascend/ascend-toolkit/"
                                "set_env.sh, and that the OM was built for this chip (--soc_version)") from exc
        inputs = [i for i in session.get_inputs() if i.name != _DYNAMIC_BATCH_INPUT]
        outputs = session.get_outputs()
        if len(inputs) != 1 or not outputs:
            raise UserError(f"the OM has {len(inputs)} data inputs and {len(outputs)} outputs; a pix2pixHD generator "
                            "has one of each", path=self.model, fix="compile the ONNX from pix2pixhd-deploy export")
        self._input, self._output = inputs[0], outputs[0]
        shape = _dims(self._input.shape)
        if len(shape) != 4:
            raise UserError(f"the OM's input {self._input.name!r} has shape {shape}, not NCHW", path=self.model,
                            fix="compile it with --input_format=NCHW")
        if any(d < 0 for d in shape[1:]):
            raise UserError(f"the OM's input has a dynamic image size {shape}; this runner takes static sizes",
                            path=self.model, fix="compile it with a fixed --input_shape (height and width)")
        if shape[0] < 0:
            if self.dym_batch is None:
                raise UserError("this OM was compiled with --dynamic_batch_size, so the batch to run at is needed",
                                path=self.model, fix="pass --dymBatch N with N one of its gears (e.g. 1, 4 or 8)")
            if self.dym_batch < 1:
                raise UserError(f"--dymBatch must be at least 1, not {self.dym_batch}", fix="pass --dymBatch 1 "
                                                                                           "or more")
            try:
                session.set_dynamic_batchsize(int(self.dym_batch))
            except (RuntimeError, ValueError) as exc:
                raise UserError(f"the OM rejects --dymBatch {self.dym_batch} ({str(exc).strip()[:160]})",
                                path=self.model, fix="use one of the gears it was compiled with "
                                                     "(atc --dynamic_batch_size)") from exc
            self._batch = int(self.dym_batch)
        else:
            if self.dym_batch is not None and self.dym_batch != shape[0]:
                raise UserError(f"--dymBatch {self.dym_batch} was given but the OM has a static batch of {shape[0]}",
                                path=self.model, fix="drop --dymBatch, or compile with --dynamic_batch_size")
            self._batch = shape[0]
        self._shape = (self._batch, *shape[1:])
        self.session = session
        log.info("ais_bench: %s on NPU %d, input %s %s", self.model, device_id, self._input.name, self._shape)

    def deactivate_impl(self) -> None:
        session, self.session = self.session, None
        if session is not None and hasattr(session, "finalize"):
            session.finalize()

    def input_specs_impl(self) -> List[TensorSpec]:
        return [TensorSpec(self._input.name, self._shape)]

    def output_spec_impl(self) -> TensorSpec:
        return TensorSpec(self._output.name, (self._batch, 3, *self._shape[2:]))

    def infer_impl(self, feeds: Dict[str, np.ndarray]) -> np.ndarray:
        batch = feeds[self._input.name]
        outputs = self.session.infer([batch])
        times = self.session.sumary().exec_time_list
        if times:
            self._compute_time = float(times[-1]) / 1000.0
        return self._output_array(outputs[0], batch.shape)

    def describe(self) -> str:
        gear = f", dymBatch {self.dym_batch}" if self.dym_batch else ""
        return f"ais_bench on NPU {self.device if self.device is not None else 0}{gear}"

    # ------------------------------------------------------------------ helpers
    def _output_array(self, out, in_shape) -> np.ndarray:
        """The output as float32 (N, C, H, W); a dynamic-batch OM may hand back a buffer sized for its largest gear."""
        arr = np.asarray(out)
        if arr.dtype != np.float32:
            arr = arr.astype(np.float32)
        n, _, h, w = in_shape
        desc = _dims(self._output.shape)
        channels = desc[1] if len(desc) == 4 and desc[1] > 0 else arr.size // max(1, n * h * w)
        per_sample = channels * h * w
        if arr.size == n * per_sample:
            return arr.reshape(n, channels, h, w)
        if arr.size > n * per_sample and arr.size % per_sample == 0:
            return arr.reshape(-1)[: n * per_sample].reshape(n, channels, h, w)
        raise UserError(f"the OM returned {arr.size} values for a batch of {n}, which is not (N, {channels}, {h}, {w})",
                        path=self.model, fix="compile the ONNX from pix2pixhd-deploy export without changing its "
                                             "output")
