"""OpenVINO runner: an exported ``.onnx`` on Intel/AMD CPUs (and Intel GPUs) through ``openvino.Core``.

On the CPU OpenVINO's plugin (oneDNN, blocked layouts, fused InstanceNorm/ReLU) ran the label2city graph about a
quarter faster than ONNX Runtime on this project's test machine, so it is the fastest CPU backend of ``run``.
Precision is pinned to fp32 (``INFERENCE_PRECISION_HINT f32``): on CPUs with bf16 or AMX support OpenVINO would
otherwise choose bf16 by itself. The graph variants of :mod:`export` work as with ONNX Runtime: the 36-channel
tensor input, ``maps`` (label and instance maps in) and ``stems`` (the two stem outputs in), with float or uint8
output. ``pip install openvino`` (an optional extra).
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from ..errors import PathLike, UserError
from .base import Runner, TensorSpec, graph_input_format

log = logging.getLogger(__name__)

INSTALL_FIX = "pip install openvino (or pip install 'pix2pixhd-deploy[openvino]')"
_DTYPES = {"u8": np.uint8, "i32": np.int32, "i64": np.int64, "f32": np.float32, "f16": np.float16}


class OpenVinoRunner(Runner):
    name = "openvino"

    def __init__(self, model: PathLike, *, device: Optional[str] = None, threads: Optional[int] = None):
        """``device``: ``cpu`` (default; a bare device number also means the CPU) or ``gpu``/``gpu.N`` (Intel
        GPUs); ``threads``: OpenVINO's inference threads (default: all cores)."""
        super().__init__()
        self.model = Path(model)
        text = (device or "cpu").strip().lower()
        self.ov_device = "CPU" if text in ("cpu", "auto") or text.isdigit() else text.upper()
        self.intra_op_threads = threads

    def activate_impl(self) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise UserError("OpenVINO is not installed", path=self.model, fix=INSTALL_FIX) from exc
        if not self.model.is_file():
            raise UserError("the ONNX model does not exist", path=self.model,
                            fix="export one with pix2pixhd_pth2onnx.py or pix2pixhd-deploy export")
        core = ov.Core()
        if self.ov_device.split(".")[0] not in {d.split(".")[0] for d in core.available_devices}:
            raise UserError(f"OpenVINO has no {self.ov_device} device here (it has "
                            f"{', '.join(core.available_devices)})", fix="use --device cpu")
        try:
            graph = core.read_model(str(self.model))
        except RuntimeError as exc:
            first = (str(exc).strip().splitlines() or ["?"])[0][:200]
            raise UserError(f"OpenVINO cannot read this file as an ONNX model ({first})", path=self.model,
                            fix="export it again with pix2pixhd-deploy export") from exc
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        if self.intra_op_threads:
            config["INFERENCE_NUM_THREADS"] = int(self.intra_op_threads)
        self.compiled = core.compile_model(graph, self.ov_device, config)
        self._local = threading.local()  # an infer request is not thread-safe: one per thread (run --streams)
        # the bindings' first infer runs static initialisers that deadlock with the GIL when two threads get
        # there at once (seen with run --streams 2): the first call is made alone
        self._first = threading.Lock()
        self._warm = False
        self._inputs = [(p.get_any_name(), p.get_element_type().get_type_name(), p.get_partial_shape())
                        for p in self.compiled.inputs]
        self.input_format = graph_input_format([n for n, _t, _s in self._inputs],
                                               [t in ("u8", "i32", "i64") for _n, t, _s in self._inputs])
        if self.input_format == "tensor" and len(self._inputs) != 1:
            raise UserError(f"the model has {len(self._inputs)} inputs; a pix2pixHD generator has one (or label "
                            "and inst maps, or the two stems)", path=self.model, fix="export it with pix2pixhd-deploy export")
        out = self.compiled.outputs[0]
        self.output_format = "uint8" if out.get_element_type().get_type_name() == "u8" else "float"
        log.info("openvino %s on %s", ov.__version__, self.ov_device)

    def deactivate_impl(self) -> None:
        self._local = None
        self.compiled = None

    def input_spec_impl(self) -> TensorSpec:
        name, type_name, shape = self._inputs[0]
        dims = tuple(d.get_length() if d.is_static else None for d in shape)
        return TensorSpec(name, dims, {"f32": "float32", "f16": "float16"}.get(type_name, type_name))

    def infer_feeds(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        """Run the graph on named inputs; returns its (first) output. Sets ``inference_time``."""
        self._require_active()
        typed = {n: np.ascontiguousarray(feeds[n], dtype=_DTYPES.get(t, np.float32)) for n, t, _s in self._inputs
                 if n in feeds}
        if self._warm:
            return self._run(typed)
        with self._first:
            out = self._run(typed)
            self._warm = True
        return out

    def _run(self, typed: Mapping[str, np.ndarray]) -> np.ndarray:
        request = self._request()
        start = time.perf_counter()
        result = request.infer(typed)
        self.inference_time = time.perf_counter() - start
        return np.asarray(result[self.compiled.outputs[0]])

    def _request(self):
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        return request

    def infer_maps(self, labels: np.ndarray, insts: Optional[np.ndarray]) -> np.ndarray:
        if self.input_format != "maps":
            raise ValueError("infer_maps needs a graph exported with --input-format maps")
        arrays = [labels, insts][:len(self._inputs)]
        return self.infer_feeds({n: a for (n, _t, _s), a in zip(self._inputs, arrays)})

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        if self.input_format != "tensor":
            raise ValueError("this graph takes maps or stems: use run, which feeds them")
        out = self.infer_feeds({self._inputs[0][0]: batch})
        self._compute_time = self.inference_time
        return np.asarray(out, dtype=np.float32)

    def describe(self) -> str:
        return f"openvino {self.ov_device.lower()}"
