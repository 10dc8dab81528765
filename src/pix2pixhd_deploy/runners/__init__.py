"""Runners: one contract (:class:`Runner`), one class per backend, chosen from the model file or ``--backend``.

Backends by short name (the same names in modules, flags and JSON): ``torch`` (``.pth``), ``onnxruntime``
(``.onnx``; providers cpu, cuda, tensorrt, cann), ``openvino`` (``.onnx`` with ``--backend openvino``; the fastest
on a CPU) and ``ais_bench`` (``.om``, Ascend NPUs). Vendor packages are
imported only when their runner is activated, so a missing one costs nothing until it is used.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Optional

from ..devices import parse_device
from ..errors import PathLike, UserError
from .ais_bench_runner import AisBenchRunner
from .base import Runner, TensorSpec
from .onnxruntime_runner import OnnxRuntimeRunner
from .openvino_runner import OpenVinoRunner
from .torch_runner import TorchRunner

#: model file suffix -> backend short name
SUFFIX_BACKENDS: Dict[str, str] = {".pth": "torch", ".pt": "torch", ".onnx": "onnxruntime", ".om": "ais_bench"}
BACKENDS = ("torch", "onnxruntime", "openvino", "ais_bench")
#: the make_runner options each backend takes, beyond model/device/fp16/height/width
BACKEND_OPTIONS = {"torch": ("fast_convs", "input_format", "output_format", "label_nc", "use_instance"), "onnxruntime": ("providers", "provider_options", "intra_op_threads", "compiled_dir"),
                   "openvino": ("intra_op_threads", "compiled_dir"), "ais_bench": ("dym_batch",)}
_OPTION_FLAGS = {"providers": "--providers", "provider_options": "--provider-option",
                 "intra_op_threads": "--intra-op-threads", "dym_batch": "--dymBatch",
                 "fast_convs": "--fast-convs (for an ONNX graph: export --fast-convs)"}


def backend_for(model: PathLike, backend: Optional[str] = None) -> str:
    if backend:
        if backend not in BACKENDS:
            raise UserError(f"unknown backend {backend!r}", fix=f"use one of {', '.join(BACKENDS)}")
        return backend
    path = Path(model)
    if path.is_dir():
        return "torch"  # a checkpoint folder holding latest_net_G.pth
    found = SUFFIX_BACKENDS.get(path.suffix.lower())
    if found is None:
        raise UserError(f"cannot tell the runtime from the suffix {path.suffix!r}", path=path,
                        fix=f"use a {', '.join(SUFFIX_BACKENDS)} file or pass --backend")
    return found


def check_options(name: str, options: Mapping[str, object]) -> Dict[str, object]:
    """The options given (None, False and empty mean not given), or a UserError naming those the ``name``
    backend does not take; ``run`` calls it before any work so the Ray engine refuses them as early."""
    unset = lambda v: v is None or v is False or v == {} or v == []  # noqa: E731  (0 is a value)
    given = {k: v for k, v in options.items() if not unset(v)}
    stray = sorted(set(given) - set(BACKEND_OPTIONS[name]))
    if stray:
        flags = ", ".join(_OPTION_FLAGS.get(k, k) for k in stray)
        raise UserError(f"{flags} does not apply to the {name} runner",
                        fix="drop it, or pick the runtime it belongs to with --model/--backend")
    return given


def make_runner(model: PathLike, *, backend: Optional[str] = None, device: Optional[str] = None,
                fp16: bool = False, height: Optional[int] = None, width: Optional[int] = None, **options) -> Runner:
    """The runner for ``model`` (not yet activated).

    ``options`` (None means default): ``fast_convs`` and the model form (``input_format``, ``output_format``,
    ``label_nc``, ``use_instance``; see :class:`TorchRunner`) for torch; ``providers`` (short names in priority order),
    ``provider_options`` ({short name: {key: value}}) and ``intra_op_threads`` for onnxruntime; ``dym_batch``
    (ais_bench's ``--dymBatch``) for ais_bench. An option the chosen backend does not take is an error, not
    silently dropped.
    """
    name = backend_for(model, backend)
    check_options(name, options)
    options = {k: v for k, v in options.items() if k in BACKEND_OPTIONS[name] and v is not None}
    if name == "torch":
        return TorchRunner(model, device=device, fp16=fp16, height=height, width=width,
                           fast_convs=bool(options.pop("fast_convs", False)), **options)
    if name == "onnxruntime":
        providers = options.get("providers")
        provider_options = {k: dict(v) for k, v in (options.get("provider_options") or {}).items()}
        if providers is None and parse_device(device).kind == "cuda":
            providers = ["cuda"]  # --device cuda[:N] asks for the GPU
        if fp16:
            if "tensorrt" not in (providers or []):
                raise UserError("--fp16 with an ONNX model needs the tensorrt provider (or an fp16 export)",
                                fix="export with pix2pixhd-deploy export --fp16, or pass --providers tensorrt")
            provider_options.setdefault("tensorrt", {}).setdefault("trt_fp16_enable", "True")
        return OnnxRuntimeRunner(model, providers=providers, provider_options=provider_options, device=device,
                                 intra_op_threads=options.get("intra_op_threads"),
                                 compiled_dir=options.get("compiled_dir"))
    if name == "openvino":
        if fp16:
            raise UserError("--fp16 does not apply to the openvino runner (it runs fp32)",
                            fix="drop --fp16, or export with --fp16 for a half-precision graph")
        return OpenVinoRunner(model, device=device, threads=options.get("intra_op_threads"),
                              compiled_dir=options.get("compiled_dir"))
    if name == "ais_bench":
        if fp16:
            raise UserError("--fp16 does not apply to an OM: ATC fixed its precision (--precision_mode, by default "
                            "force_fp16)", fix="drop --fp16")
        return AisBenchRunner(model, device=device, dym_batch=options.get("dym_batch"))
    raise AssertionError(name)  # pragma: no cover


__all__ = ["Runner", "TensorSpec", "TorchRunner", "OnnxRuntimeRunner", "OpenVinoRunner", "AisBenchRunner",
           "make_runner", "check_options",
           "backend_for", "BACKENDS", "SUFFIX_BACKENDS"]
