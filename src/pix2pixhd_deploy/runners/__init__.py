"""Runners: one contract (:class:`Runner`), one class per backend, chosen from the model file or ``--backend``.

Backends by short name (the same names in modules, flags and JSON): ``torch`` (``.pth``), ``onnxruntime``
(``.onnx``; providers cpu, cuda, tensorrt, cann), ``openvino`` (``.onnx`` with ``--backend openvino``; the fastest
on a CPU) and ``ais_bench`` (``.om``, Ascend NPUs): one entry each in :mod:`..backends`, which the factory below
reads (its suffixes, options and flags, the runner class and how it is built). Vendor packages are
imported only when their runner is activated, so a missing one costs nothing until it is used.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Optional

from ..backends import BACKENDS as REGISTRY
from ..backends import NAMES, SUFFIXES
from ..errors import PathLike, UserError
from .ais_bench_runner import AisBenchRunner
from .base import Runner, TensorSpec
from .onnxruntime_runner import OnnxRuntimeRunner
from .openvino_runner import OpenVinoRunner
from .torch_runner import TorchRunner

#: model file suffix -> backend short name, and the names (from the registry, :mod:`..backends`)
SUFFIX_BACKENDS: Dict[str, str] = SUFFIXES
BACKENDS = NAMES


def backend_for(model: PathLike, backend: Optional[str] = None) -> str:
    """The backend's name: ``backend`` checked against the registry, else the one the model file's suffix names."""
    if backend:
        if backend not in REGISTRY:
            raise UserError(f"unknown backend {backend!r}", fix=f"use one of {', '.join(REGISTRY)}")
        return backend
    path = Path(model)
    if path.is_dir():
        return "torch"  # a checkpoint folder holding latest_net_G.pth
    suffixes = {s: b.name for b in REGISTRY.values() for s in b.suffixes}
    found = suffixes.get(path.suffix.lower())
    if found is None:
        raise UserError(f"cannot tell the runtime from the suffix {path.suffix!r}", path=path,
                        fix=f"use a {', '.join(suffixes)} file or pass --backend")
    return found


def check_options(name: str, options: Mapping[str, object]) -> Dict[str, object]:
    """The options given (None, False and empty mean not given), or a UserError naming those the ``name``
    backend does not take; ``run`` calls it before any work so the Ray engine refuses them as early."""
    unset = lambda v: v is None or v is False or v == {} or v == []  # noqa: E731  (0 is a value)
    given = {k: v for k, v in options.items() if not unset(v)}
    takes = REGISTRY[name].options
    stray = sorted(set(given) - set(takes))
    if stray:
        flags = ", ".join(_flag(k) for k in stray)
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
    entry = REGISTRY[name]
    options = {k: v for k, v in options.items() if k in entry.options and v is not None}
    return entry.runner_class().from_options(model, device=device, fp16=fp16, height=height, width=width,
                                             **options)


def _flag(option: str) -> str:
    """The command-line flag of a runner option, from whichever backend takes it."""
    return next((b.options[option] for b in REGISTRY.values() if b.options.get(option)), option)


__all__ = ["Runner", "TensorSpec", "TorchRunner", "OnnxRuntimeRunner", "OpenVinoRunner", "AisBenchRunner",
           "make_runner", "check_options",
           "backend_for", "BACKENDS", "SUFFIX_BACKENDS"]
