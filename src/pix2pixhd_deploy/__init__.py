"""pix2pixhd-deploy: NVIDIA pix2pixHD's label2city generator, exact and fast, on CPUs, NVIDIA GPUs and Ascend NPUs.

The Python API is this module's ``__all__``; everything else is private by convention::

    import pix2pixhd_deploy as p2p

    model = p2p.load("checkpoints/label2city_1024p")        # run's engine choice and model cache
    picture = model("gtFine/val/x_gtFine_labelIds.png", "gtFine/val/x_gtFine_instanceIds.png")
    for name, picture in model.map_folder("gtFine/val"):    # streamed, sorted as run sorts them
        ...

The packages, lowest layer first: the shared ground (``errors``, ``fileio``, ``devices``, ``cache``,
``provenance``), ``data`` (label maps in), ``model`` (the network, encodings, stems), ``compare``, ``export``,
``runners`` (one contract per backend, the engine choice, :class:`Model`), then ``run``, ``seed``, ``serve`` and
``bench``, and ``cli`` on top (docs/design.md).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .version import __version__

if TYPE_CHECKING:
    from .errors import UserError
    from .runners.open import Model, ModelOptions, load

__all__ = ["load", "Model", "ModelOptions", "UserError", "__version__"]

_LAZY = {"load": "runners.open", "Model": "runners.open", "ModelOptions": "runners.open", "UserError": "errors"}


def __getattr__(name: str):
    """The API's names, imported on first use: ``import pix2pixhd_deploy.errors`` (a worker process, the command
    line's start) does not load torch and the runtimes."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
