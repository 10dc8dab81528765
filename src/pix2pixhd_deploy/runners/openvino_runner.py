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
from typing import Dict, List, Mapping, Optional

import numpy as np

from ..devices import parse_device
from ..errors import PathLike, UserError
from .base import Runner, TensorSpec, graph_input_format

log = logging.getLogger(__name__)

INSTALL_FIX = "pip install openvino (or pip install 'pix2pixhd-deploy[openvino]')"
_DTYPES = {"u8": "uint8", "i32": "int32", "i64": "int64", "f32": "float32", "f16": "float16"}


def _spec(port) -> TensorSpec:
    """An OpenVINO model port as a TensorSpec (dynamic dimensions as None)."""
    dims = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
    type_name = port.get_element_type().get_type_name()
    return TensorSpec(port.get_any_name(), dims, _DTYPES.get(type_name, type_name))


def _ov_device(device: Optional[str]) -> str:
    """OpenVINO's device name for ``--device`` (:mod:`devices`): the CPU for auto, cpu and a bare number (OpenVINO
    has no accelerator numbered the ais_bench way); ``gpu.N`` -> ``GPU.N``; other kinds upper-cased for OpenVINO to
    accept or refuse at activation."""
    parsed = parse_device(device)
    if parsed.kind in ("auto", "cpu", "number"):
        return "CPU"
    return parsed.kind.upper() + ("" if parsed.index is None else f".{parsed.index}")


class OpenVinoRunner(Runner):
    name = "openvino"

    @classmethod
    def from_options(cls, model: PathLike, *, device: Optional[str] = None, fp16: bool = False,
                     height: Optional[int] = None, width: Optional[int] = None, **options) -> "OpenVinoRunner":
        """The runner for :func:`~.make_runner`'s options (OpenVINO runs the graph in fp32)."""
        if fp16:
            raise UserError("--fp16 does not apply to the openvino runner (it runs fp32)",
                            fix="drop --fp16, or export with --fp16 for a half-precision graph")
        return cls(model, device=device, threads=options.get("intra_op_threads"),
                   compiled_dir=options.get("compiled_dir"), profile=bool(options.get("profile")))

    def __init__(self, model: PathLike, *, device: Optional[str] = None, threads: Optional[int] = None,
                 compiled_dir: Optional[PathLike] = None, profile: bool = False):
        """``device``: ``cpu`` (default; a bare device number also means the CPU) or ``gpu``/``gpu.N`` (Intel
        GPUs); ``threads``: OpenVINO's inference threads (default: all cores); ``compiled_dir``: OpenVINO's
        ``CACHE_DIR``, where it keeps the compiled model, so that the next start loads it instead of reading and
        compiling the ONNX file again (``run`` gives its model cache entry's folder)."""
        super().__init__()
        self.model = Path(model)
        self.compiled_dir = compiled_dir
        self.ov_device = _ov_device(device)
        self.intra_op_threads = threads
        self.profile = profile
        self._layers: Dict[str, Dict[str, object]] = {}
        self._layers_lock = threading.Lock()

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
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        if self.intra_op_threads:
            config["INFERENCE_NUM_THREADS"] = int(self.intra_op_threads)
        if self.compiled_dir:
            config["CACHE_DIR"] = str(self.compiled_dir)
        if self.profile:
            config["PERF_COUNT"] = True
        try:
            # from the path, so that with CACHE_DIR a compiled blob is loaded without reading the ONNX file
            self.compiled = core.compile_model(str(self.model), self.ov_device, config)
        except RuntimeError as exc:
            first = (str(exc).strip().splitlines() or ["?"])[0][:200]
            raise UserError(f"OpenVINO cannot read or compile this file as an ONNX model ({first})", path=self.model,
                            fix="export it again with pix2pixhd-deploy export") from exc
        self._local = threading.local()  # an infer request is not thread-safe: one per thread (run --streams)
        # the bindings' first infer runs static initialisers that deadlock with the GIL when two threads get
        # there at once (seen with run --streams 2): the first call is made alone
        self._first = threading.Lock()
        self._warm = False
        self._inputs = [_spec(p) for p in self.compiled.inputs]
        self._output = _spec(self.compiled.outputs[0])
        graph_input_format(self._inputs)  # one clear error for a model of no known form
        log.info("openvino %s on %s", ov.__version__, self.ov_device)

    def deactivate_impl(self) -> None:
        self._local = None
        self.compiled = None

    def input_specs_impl(self) -> List[TensorSpec]:
        return self._inputs

    def output_spec_impl(self) -> TensorSpec:
        return self._output

    def infer_impl(self, feeds: Dict[str, np.ndarray]) -> np.ndarray:
        if self._warm:
            return self._run(feeds)
        with self._first:
            out = self._run(feeds)
            self._warm = True
        return out

    def _run(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        request = self._request()
        start = time.perf_counter()
        result = request.infer(feeds, share_inputs=True)  # read in place: no copy of the 384 MB of stems
        self._compute_time = time.perf_counter() - start
        if self.profile:
            self._add_profile(request.profiling_info)
        return np.asarray(result[self.compiled.outputs[0]])

    def _add_profile(self, infos) -> None:
        with self._layers_lock:
            for info in infos:
                if info.status != info.Status.EXECUTED:
                    continue
                layer = self._layers.setdefault(info.node_name, {
                    "layer": info.node_name, "type": info.node_type, "exec_type": info.exec_type, "runs": 0,
                    "seconds": 0.0, "cpu_seconds": 0.0})
                layer["runs"] += 1
                layer["seconds"] += info.real_time.total_seconds()
                layer["cpu_seconds"] += info.cpu_time.total_seconds()

    def layer_profile(self) -> Optional[List[Dict[str, object]]]:
        if not self.profile:
            return None
        with self._layers_lock:
            return sorted((dict(v) for v in self._layers.values()), key=lambda v: -v["seconds"])

    def _request(self):
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        return request

    def describe(self) -> str:
        return f"openvino {self.ov_device.lower()}"
