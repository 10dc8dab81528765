"""ONNX Runtime runner: an exported ``.onnx`` on CPU, NVIDIA GPUs (CUDA, TensorRT) or Ascend NPUs (CANN).

Providers are chosen by short name, in priority order, each with its own options (ONNX Runtime's provider option
names, passed through as strings):

========== ========================== ======================= =================================================
short name ONNX Runtime provider      pip package             common options
========== ========================== ======================= =================================================
cpu        CPUExecutionProvider       onnxruntime             (none)
cuda       CUDAExecutionProvider      onnxruntime-gpu         device_id, gpu_mem_limit, cudnn_conv_algo_search
tensorrt   TensorrtExecutionProvider  onnxruntime-gpu         device_id, trt_fp16_enable, trt_engine_cache_enable,
                                                              trt_engine_cache_path
cann       CANNExecutionProvider      onnxruntime-cann        device_id, precision_mode, enable_cann_graph,
                                                              op_select_impl_mode, ... (CANN_OPTIONS; checked
                                                              by name and value before the session starts)
========== ========================== ======================= =================================================

A requested provider that this ONNX Runtime build lacks is a :class:`UserError` naming the package to install;
ONNX Runtime itself would silently fall back to the CPU. ``device`` (``--device 0``, ais_bench's flag) fills in
``device_id`` where the user did not. The time reported is the wall time of ``session.run`` (ONNX Runtime copies
inputs and outputs inside it, so for GPU providers it includes host<->device copies).
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..devices import parse_device
from ..errors import PathLike, UserError
from .base import Runner, TensorSpec, graph_input_format

log = logging.getLogger(__name__)

#: short name -> (ONNX Runtime provider name, pip package that ships it)
PROVIDERS: Dict[str, Tuple[str, str]] = {
    "cpu": ("CPUExecutionProvider", "onnxruntime"),
    "cuda": ("CUDAExecutionProvider", "onnxruntime-gpu"),
    "tensorrt": ("TensorrtExecutionProvider", "onnxruntime-gpu"),
    "cann": ("CANNExecutionProvider", "onnxruntime-cann"),
}
_DEVICE_PROVIDERS = ("cuda", "tensorrt", "cann")
_INSTALL_HINT = {
    "onnxruntime-gpu": "pip uninstall onnxruntime && pip install onnxruntime-gpu (needs CUDA and cuDNN; TensorRT "
                       "also needs the TensorRT libraries)",
    "onnxruntime-cann": "pip uninstall onnxruntime && pip install onnxruntime-cann, and source "
                        "/usr/local/Ascend/ascend-toolkit/set_env.sh (needs CANN)",
    "onnxruntime": "pip install onnxruntime",
}

ProviderOptions = Mapping[str, Mapping[str, object]]
#: the CANN execution provider's options: the docs (onnxruntime.ai, CANN-ExecutionProvider) and, for the newer
#: keys, onnxruntime/core/providers/cann/cann_execution_provider_info.cc (ASCEND.md §4)
CANN_OPTIONS = ("device_id", "npu_mem_limit", "arena_extend_strategy", "enable_cann_graph", "dump_graphs",
                "dump_om_model", "precision_mode", "precision_mode_v2", "op_select_impl_mode",
                "optypelist_for_implmode", "do_copy_in_default_stream", "enable_cann_subgraph", "input_format",
                "dynamic_batch_size", "dynamic_image_size", "dynamic_dims")
CANN_PRECISION_MODES = ("force_fp32", "cube_fp16in_fp32out", "force_fp16", "allow_fp32_to_fp16",
                        "must_keep_origin_dtype", "allow_mix_precision", "allow_mix_precision_fp16")
_CANN_CHOICES = {"precision_mode": CANN_PRECISION_MODES, "precision_mode_v2": CANN_PRECISION_MODES,
                 "op_select_impl_mode": ("high_performance", "high_precision"),
                 "arena_extend_strategy": ("kNextPowerOfTwo", "kSameAsRequested")}


def check_cann_options(options: Mapping[str, object]) -> None:
    """One line for a CANN provider option ONNX Runtime does not document, or a value outside its choices (the
    provider itself only fails when the session starts, with a message about the whole provider)."""
    for key, value in options.items():
        if key not in CANN_OPTIONS:
            raise UserError(f"cann:{key} is not an option of ONNX Runtime's CANN provider",
                            fix=f"use one of {', '.join(CANN_OPTIONS)}")
        choices = _CANN_CHOICES.get(key)
        if choices and str(value) not in choices:
            raise UserError(f"cann:{key}={value} is not one of {', '.join(choices)}", fix="pass one of them")


_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8",
               "tensor(int32)": "int32", "tensor(int64)": "int64"}


def _dims(shape) -> Tuple[Optional[int], ...]:
    """ONNX Runtime's shape with symbolic or unknown dimensions as None."""
    return tuple(d if isinstance(d, int) and d > 0 else None for d in shape)


def provider_name(short: str) -> str:
    """``cuda`` -> ``CUDAExecutionProvider``; a full provider name is accepted as it is."""
    key = short.strip().lower()
    if key in PROVIDERS:
        return PROVIDERS[key][0]
    for name, _ in PROVIDERS.values():
        if short.strip() == name:
            return name
    raise UserError(f"unknown ONNX Runtime provider {short!r}", fix=f"use one of {', '.join(PROVIDERS)}")


def short_name(provider: str) -> str:
    for short, (name, _) in PROVIDERS.items():
        if name == provider:
            return short
    return provider


def parse_provider_option(text: str) -> Tuple[str, str, str]:
    """``cuda:device_id=1`` -> (``cuda``, ``device_id``, ``1``): the ``--provider-option`` syntax."""
    provider, sep, rest = text.partition(":")
    key, eq, value = rest.partition("=")
    if not sep or not eq or not provider.strip() or not key.strip():
        raise UserError(f"cannot read the provider option {text!r}",
                        fix="write PROVIDER:KEY=VALUE, e.g. tensorrt:trt_fp16_enable=True or cann:device_id=1")
    return provider.strip().lower(), key.strip(), value.strip()


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise UserError("the onnxruntime runner needs ONNX Runtime, which is not installed",
                        fix="pip install onnxruntime (CPU), onnxruntime-gpu (CUDA/TensorRT) or onnxruntime-cann "
                            "(Ascend)") from exc
    return onnxruntime


def _ort_errors() -> Tuple[type, ...]:
    """The exceptions ``InferenceSession`` raises for a bad file or a provider that fails to start."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = ("Fail", "InvalidArgument", "NoSuchFile", "NoModel", "EngineError", "RuntimeException",
             "InvalidProtobuf", "NotImplemented", "InvalidGraph", "EPFail")
    return tuple(getattr(state, n) for n in names if hasattr(state, n)) + (RuntimeError, ValueError)


class OnnxRuntimeRunner(Runner):
    """Runs an ``.onnx`` file (or serialised model bytes) through ``onnxruntime.InferenceSession``."""

    name = "onnxruntime"

    @classmethod
    def from_options(cls, model: PathLike, *, device: Optional[str] = None, fp16: bool = False,
                     height: Optional[int] = None, width: Optional[int] = None, **options) -> "OnnxRuntimeRunner":
        """The runner for :func:`~.make_runner`'s options: ``--device cuda[:N]`` asks for the CUDA provider, and
        ``--fp16`` needs TensorRT (an fp32 graph runs in fp16 only there)."""
        providers = options.get("providers")
        provider_options = {k: dict(v) for k, v in (options.get("provider_options") or {}).items()}
        if providers is None and parse_device(device).kind == "cuda":
            providers = ["cuda"]  # --device cuda[:N] asks for the GPU
        if fp16:
            if "tensorrt" not in (providers or []):
                raise UserError("--fp16 with an ONNX model needs the tensorrt provider (or an fp16 export)",
                                fix="export with pix2pixhd-deploy export --fp16, or pass --providers tensorrt")
            provider_options.setdefault("tensorrt", {}).setdefault("trt_fp16_enable", "True")
        return cls(model, providers=providers, provider_options=provider_options, device=device,
                   intra_op_threads=options.get("intra_op_threads"), compiled_dir=options.get("compiled_dir"))

    def __init__(self, model: Union[PathLike, bytes], *, providers: Optional[Sequence[str]] = None,
                 provider_options: Optional[ProviderOptions] = None, device: Optional[str] = None,
                 intra_op_threads: Optional[int] = None, compiled_dir: Optional[PathLike] = None):
        """``providers``: short names in priority order (default ``["cpu"]``); ``provider_options``: per short
        name, a dict of that provider's options; ``device``: a device number for the accelerator providers;
        ``compiled_dir``: where to keep the graph as ONNX Runtime optimised it (CPU provider only; ``run`` gives
        its model cache entry's folder): saved on the first load, loaded with no optimisation pass afterwards."""
        super().__init__()
        self.model = model
        self.providers = [p.strip().lower() for p in (providers or ["cpu"])]
        for p in self.providers:
            provider_name(p)  # validates early: an unknown name fails before anything is loaded
        self.provider_options = {k.lower(): dict(v) for k, v in (provider_options or {}).items()}
        check_cann_options(self.provider_options.get("cann", {}))
        unknown = sorted(set(self.provider_options) - set(self.providers))
        if unknown:
            raise UserError(f"options were given for provider(s) {', '.join(unknown)} that are not in use",
                            fix=f"add them to --providers (now {','.join(self.providers)}) or drop those options")
        self.device = device
        self.intra_op_threads = intra_op_threads
        self.compiled_dir = compiled_dir
        self.session = None

    # ------------------------------------------------------------------ contract
    def activate_impl(self) -> None:
        ort = _import_onnxruntime()
        available = ort.get_available_providers()
        names: List[str] = []
        options: List[Dict[str, str]] = []
        device_id = self._device_id()
        for short in self.providers:
            name = provider_name(short)
            if name not in available:
                package = PROVIDERS.get(short, (name, "onnxruntime"))[1]
                raise UserError(f"ONNX Runtime {ort.__version__} here has no {name} (it has "
                                f"{', '.join(available)})", fix=_INSTALL_HINT[package])
            opts = {k: str(v) for k, v in self.provider_options.get(short, {}).items()}
            if short in _DEVICE_PROVIDERS and "device_id" not in opts and device_id is not None:
                opts["device_id"] = str(device_id)
            names.append(name)
            options.append(opts)
        if "CPUExecutionProvider" not in names:
            names.append("CPUExecutionProvider")  # for the few nodes an accelerator provider does not take
            options.append({})

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.intra_op_threads:
            so.intra_op_num_threads = int(self.intra_op_threads)
        so.log_severity_level = 3
        source = self.model if isinstance(self.model, bytes) else str(self.model)
        path = None if isinstance(self.model, bytes) else Path(self.model)
        if path is not None and not path.is_file():
            raise UserError("the ONNX model does not exist", path=path,
                            fix="export one with pix2pixhd_pth2onnx.py or pix2pixhd-deploy export")
        try:
            if self.compiled_dir and path is not None and names == ["CPUExecutionProvider"]:
                self.session = self._optimized_session(ort, so)
            else:
                self.session = ort.InferenceSession(source, sess_options=so, providers=names,
                                                    provider_options=options)
        except _ort_errors() as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:240]
            if type(exc).__name__ == "EPFail" or any(w in first.lower() for w in ("provider", "cuda", "tensorrt",
                                                                                  "cann", "ascend")):
                raise UserError(f"ONNX Runtime could not start the {', '.join(self.providers)} provider ({first})",
                                path=path, fix="check the device and its driver/toolkit install, or run with "
                                               "--providers cpu") from exc
            raise UserError(f"ONNX Runtime cannot load this file as an ONNX model ({first})", path=path,
                            fix="export it again with pix2pixhd-deploy export; a file cut short by a copy or "
                                "a full disk looks like this") from exc
        used = self.session.get_providers()
        wanted = [provider_name(p) for p in self.providers]
        if used[0] != wanted[0]:
            raise UserError(f"ONNX Runtime did not start {wanted[0]} (it runs on {', '.join(used)})", path=path,
                            fix="check the device and its driver/toolkit install, or run with --providers cpu")
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if not outputs:
            raise UserError("the model has no outputs", path=path, fix="export it with pix2pixhd-deploy export")
        self._inputs = [TensorSpec(i.name, _dims(i.shape), _ORT_DTYPES.get(i.type, i.type)) for i in inputs]
        out = outputs[0]
        self._output = TensorSpec(out.name, _dims(out.shape), _ORT_DTYPES.get(out.type, out.type))
        graph_input_format(self._inputs)  # one clear error for a model of no known form
        log.info("onnxruntime %s: %s", ort.__version__, ", ".join(used))

    def _optimized_session(self, ort, so):
        """A CPU session from the optimised graph in ``compiled_dir``, saved there by the first load (into a
        temporary folder renamed into place, so two processes never see half of it). For the 1.2 GB label2city
        CPU graph this took a load from 8.7 to 0.5 s on a 2-core EPYC, with outputs equal bit for bit."""
        folder = Path(self.compiled_dir) / "onnxruntime"
        optimized = folder / "model.onnx"
        if optimized.is_file():
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            return ort.InferenceSession(str(optimized), sess_options=so, providers=["CPUExecutionProvider"])
        Path(self.compiled_dir).mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-onnxruntime-", dir=self.compiled_dir))
        try:
            so.optimized_model_filepath = str(tmp / optimized.name)
            so.add_session_config_entry("session.optimized_model_external_initializers_file_name", "model.onnx.data")
            so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
            session = ort.InferenceSession(str(self.model), sess_options=so, providers=["CPUExecutionProvider"])
            os.rename(tmp, folder)
        except OSError:  # another process saved it first: theirs is kept
            pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return session

    def deactivate_impl(self) -> None:
        self.session = None

    def input_specs_impl(self) -> List[TensorSpec]:
        return self._inputs

    def output_spec_impl(self) -> TensorSpec:
        return self._output

    def infer_impl(self, feeds: Dict[str, np.ndarray]) -> np.ndarray:
        start = time.perf_counter()
        out = self.session.run([self._output.name], feeds)[0]
        self._compute_time = time.perf_counter() - start
        return out

    def describe(self) -> str:
        used = self.session.get_providers() if self.session is not None else [provider_name(p) for p in
                                                                              self.providers]
        return f"onnxruntime {'+'.join(short_name(p) for p in used)}"

    # ------------------------------------------------------------------ helpers
    def _device_id(self) -> Optional[int]:
        """The accelerator number of ``--device`` (:mod:`devices`: ``N``, ``cuda:N``, ``npu:N``); None: not given."""
        return parse_device(self.device).index
