"""The backends, one entry each: everything the toolkit knows about a runtime, in one table that ``--backend``,
the engine choice, provenance, ``bench`` and the runner factory read.

Adding a backend is one runner module in ``runners/`` (a :class:`~.runners.base.Runner` with a ``from_options``
classmethod) and one :class:`Backend` entry here; docs/design.md shows an example. The table lives in the shared
ground, not in ``runners/``, because provenance and the command line read it without importing any runner (and so
without importing torch or a vendor package); the runner class is named by its module and imported on first use.
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple


@dataclass(frozen=True)
class Backend:
    name: str                       #: the short name, the same in flags, JSON keys and module names
    display: str                    #: the name in sentences ("ONNX Runtime")
    runner: str                     #: "module:Class" under pix2pixhd_deploy.runners
    suffixes: Tuple[str, ...]       #: model files it is picked for without --backend
    package: str                    #: what ``import`` finds when it is installed
    distributions: Tuple[str, ...]  #: the pip distributions whose version is recorded with every figure
    install: str                    #: how to install it, for the error that says it is missing
    options: Dict[str, Optional[str]] = field(default_factory=dict)  #: make_runner option -> its flag (None: none)
    timing: str = ""                #: what the runner's ``inference_time`` covers, recorded with bench's numbers
    #: runs an exported graph that ``run --checkpoint`` builds into the model cache: its rank among those (1 is tried
    #: first: the fastest measured on a CPU); None: it does not
    graph_rank: Optional[int] = None
    number_device: Optional[str] = "cpu"  #: the device kind of a bare ``--device N`` (None: the runner decides)

    def runner_class(self):
        module, cls = self.runner.split(":")
        return getattr(importlib.import_module(f"pix2pixhd_deploy.runners.{module}"), cls)

    def installed(self) -> bool:
        return importlib.util.find_spec(self.package) is not None

    def device_kind(self, device: Optional[str]) -> str:
        """``cpu``, ``cuda``, ``npu``...: the kind of device this backend computes on for ``--device``."""
        from .devices import parse_device

        if self.number_device is None:
            return self.runner_class().device_kind(device)
        kind = parse_device(device).kind
        if kind == "number":  # the runtime's accelerator N
            return self.number_device
        return "cpu" if kind == "auto" else kind


_THREADS = "--intra-op-threads"
BACKENDS: Dict[str, Backend] = {b.name: b for b in [
    Backend("torch", "PyTorch", "torch_runner:TorchRunner", (".pth", ".pt"), "torch", ("torch",),
            "pip install torch (the CPU wheel, or the CUDA build for your GPU from pytorch.org)",
            {"fast_convs": "--fast-convs (for an ONNX graph: export --fast-convs)", "input_format": None,
             "output_format": None, "label_nc": None, "use_instance": None, "precision": "--precision bf16",
             "channels_last": None, "cudnn_benchmark": None},
            timing="forward only: input already on the device, CUDA synchronised before and after",
            number_device=None),
    Backend("onnxruntime", "ONNX Runtime", "onnxruntime_runner:OnnxRuntimeRunner", (".onnx",), "onnxruntime",
            ("onnxruntime", "onnxruntime-gpu", "onnxruntime-cann", "onnxruntime-openvino"), "pip install onnxruntime",
            {"providers": "--providers", "provider_options": "--provider-option", "intra_op_threads": _THREADS,
             "compiled_dir": None},
            timing="session.run wall time (for GPU providers it includes ONNX Runtime's host<->device copies)",
            graph_rank=2),
    Backend("openvino", "OpenVINO", "openvino_runner:OpenVinoRunner", (), "openvino", ("openvino",),
            "pip install openvino", {"intra_op_threads": _THREADS, "compiled_dir": None, "profile": None},
            timing="infer request wall time on the CPU (inputs shared, not copied)", graph_rank=1),
    Backend("ais_bench", "ais_bench", "ais_bench_runner:AisBenchRunner", (".om",), "ais_bench", ("ais_bench",),
            "install CANN and the ais_bench wheel (Ascend's tools), see docs/ascend.md", {"dym_batch": "--dymBatch"},
            timing="NPU execute time from ais_bench's exec_time_list, as ais_bench's throughput uses",
            number_device="npu"),
]}
#: the names, in the order --backend lists them
NAMES = tuple(BACKENDS)
#: the backends ``run --checkpoint`` can build a CPU graph for, fastest first
GRAPH_RUNTIMES = tuple(b.name for b in sorted(BACKENDS.values(), key=lambda b: b.graph_rank or 0) if b.graph_rank)
#: model file suffix -> backend name
SUFFIXES: Dict[str, str] = {s: b.name for b in BACKENDS.values() for s in b.suffixes}


def backend(name: str) -> Backend:
    """The entry for ``name`` (a KeyError for a name that is not one: callers check user input with
    :func:`~.runners.backend_for`)."""
    return BACKENDS[name]
