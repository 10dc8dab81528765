"""Runners: one contract (:class:`Runner`), one class per backend, chosen from the model file or ``--backend``.

Backends by short name (the same names in modules, flags and JSON): ``torch`` (``.pth``). Vendor packages are
imported only when their runner is activated, so a missing one costs nothing until it is used.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

from ..errors import PathLike, UserError
from .base import Runner, TensorSpec
from .torch_runner import TorchRunner

#: model file suffix -> backend short name
SUFFIX_BACKENDS: Dict[str, str] = {".pth": "torch", ".pt": "torch"}
BACKENDS = ("torch",)


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


def make_runner(model: PathLike, *, backend: Optional[str] = None, device: Optional[str] = None,
                fp16: bool = False, height: Optional[int] = None, width: Optional[int] = None, **options) -> Runner:
    """The runner for ``model`` (not yet activated)."""
    name = backend_for(model, backend)
    if name == "torch":
        return TorchRunner(model, device=device, fp16=fp16, height=height, width=width)
    raise AssertionError(name)  # pragma: no cover


__all__ = ["Runner", "TensorSpec", "TorchRunner", "make_runner", "backend_for", "BACKENDS"]
