"""Where a result came from: package versions, the machine, the model file's hash.

One record for every output that carries numbers: ``run``'s ``manifest.json``, ``bench``'s JSON, ``export``'s report
and ``compare``'s JSON all write :func:`versions` under ``"versions"`` and :func:`machine` under ``"machine"``, so
results made in different processes (or on different machines) can be set side by side and told apart.

Nothing here imports a backend: versions come from the installed distributions' metadata, and what needs a loaded
module (CUDA's version, torch's threads, the GPUs) is recorded only when that module is already loaded, so a run
that never touches torch does not pay seconds to import it for its manifest.
"""
from __future__ import annotations

import contextlib
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Dict, Optional

from .backends import BACKENDS
from .errors import PathLike, UserError

#: every backend, always listed (None: not installed), by the short names used in flags and JSON keys
#: other packages the numbers depend on (key -> distribution), always listed
LIBRARIES = {"numpy": "numpy", "PIL": "Pillow", "onnx": "onnx"}
#: builds of ONNX Runtime for other devices, listed when installed


def _installed(dist: str) -> Optional[str]:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def versions() -> Dict[str, Optional[str]]:
    """Python, this package, numpy, Pillow (``PIL``), onnx and every backend (None when not installed)."""
    from .version import __version__

    out: Dict[str, Optional[str]] = {"python": platform.python_version(), "pix2pixhd_deploy": __version__}
    out.update({key: _installed(dist) for key, dist in LIBRARIES.items()})
    for entry in BACKENDS.values():  # the backend's name with its main distribution, then other builds found
        main, *builds = entry.distributions
        out[entry.name] = _installed(main)
        out.update({dist: v for dist in builds if (v := _installed(dist)) is not None})
    torch = sys.modules.get("torch")
    if torch is not None:
        out["cuda"] = torch.version.cuda
    return out


def cpu_model() -> str:
    """The CPU's name from /proc/cpuinfo, else what ``platform`` knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine() -> Dict[str, object]:
    """The platform, CPU, its logical cores, memory and load; torch's threads and GPUs when torch is loaded."""
    info: Dict[str, object] = {"platform": platform.platform(), "machine": platform.machine(), "cpu": cpu_model(),
                               "cpu_count": os.cpu_count(), "load_average": [round(v, 2) for v in os.getloadavg()]}
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gib"] = round(int(line.split()[1]) / 2 ** 20, 1)
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def model_file(model: PathLike) -> Path:
    """The file behind ``--checkpoint``/``--model`` (a checkpoint folder resolves to its latest_net_G.pth); a
    UserError when there is none."""
    from .fileio import resolve_checkpoint

    path = Path(model)
    if path.is_dir():
        path = resolve_checkpoint(path)
    if not path.is_file():
        raise UserError("the model file does not exist", path=path,
                        fix="check the --checkpoint or --model path (latest_net_G.pth, or its folder; .onnx; .om)")
    return path


def model_hash(model: PathLike) -> str:
    """The sha256 of the model file (a checkpoint, its folder, an .onnx or .om), remembered in the model cache
    (:func:`..cache.cached_sha256`) so that a warm start does not read the file again."""
    from .cache import cached_sha256

    return cached_sha256(model_file(model))


def model_identity(model: PathLike) -> Dict[str, object]:
    """``{"path"}``, and ``file``, ``bytes``, ``sha256`` when the model is a file (or a folder holding one)."""
    info: Dict[str, object] = {"path": str(model)}
    try:
        path = model_file(model)
    except UserError:
        return info
    info.update(file=path.name, bytes=path.stat().st_size, sha256=model_hash(path))
    return info
