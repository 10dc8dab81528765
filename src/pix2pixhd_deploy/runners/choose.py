"""Which runtime and which model ``run`` uses: the fastest exact path for this machine, unless told otherwise.

In:  the model the user gave (a checkpoint, or an exported ``.onnx`` / ``.om``), ``--backend`` (None: choose),
     the device, and the sizes of the maps to run.
Out: a :class:`Choice`: the model file to load, the backend, and one line saying what was chosen and why (logged,
     and recorded in the run's manifest).

For a checkpoint on a CPU the fastest exact path is a graph, not the checkpoint: the CPU recipe of :mod:`export`
(the stems form, fast convolutions, two-stage instance norms, uint8 pictures out; ``docs/cpu.md`` has the
measurements) for the maps' size, exported once into the model cache (:mod:`cache`) and run with OpenVINO where it
is installed, else ONNX Runtime. Torch runs the checkpoint itself on a GPU, with ``--fp16`` or ``--fast-convs``
(torch options), when no graph runtime is installed, or when the maps come in several sizes (a cached graph has one
size). ``--backend torch|onnxruntime|openvino`` chooses explicitly; with a checkpoint and a graph backend the graph
is built into the cache the same way.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Collection, Dict, Optional, Tuple

from ..backends import BACKENDS as REGISTRY
from ..backends import GRAPH_RUNTIMES
from ..devices import parse_device
from ..errors import PathLike, UserError
from ..model import forms
from ..version import __version__

log = logging.getLogger(__name__)

#: the graph run builds for a checkpoint on a CPU; bump when the export recipe changes what it writes
CPU_RECIPE = ("cpu-v5: stems (maps for a global generator), fast convolutions with Winograd F(4x4) (input tiles "
              "by convolution), row-moment norms (rows' M2 at least 0; no biases before them, stems' included), "
              "static batch 1")


@dataclass
class Choice:
    model: str                  # the file the runner loads
    backend: str
    reason: str                 # one line: what and why
    checkpoint: Optional[str] = None       # the checkpoint a cached graph was made from
    cache: Optional[Dict[str, object]] = field(default=None)  # the cache entry (folder, key, built_s)
    compiled_dir: Optional[str] = None     # where the runtime keeps its compiled form

    def describe(self) -> Dict[str, object]:
        return {"model": self.model, "backend": self.backend, "reason": self.reason, "checkpoint": self.checkpoint,
                "cache": self.cache}


def _installed(backend: str) -> bool:
    return REGISTRY[backend].installed()


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _is_checkpoint(model: PathLike) -> bool:
    path = Path(model)
    return path.is_dir() or path.suffix.lower() in (".pth", ".pt")


def _wants_gpu(device: Optional[str]) -> bool:
    kind = parse_device(device).kind
    if kind == "cuda":
        return True
    if kind not in ("auto", "number"):
        return False
    # auto or a bare device number: the GPU when torch sees one. Importing torch costs seconds of a warm start, so it
    # is asked only where an NVIDIA driver is loaded at all.
    if importlib.util.find_spec("torch") is None or not Path("/proc/driver/nvidia/version").exists():
        return False
    import torch

    return torch.cuda.is_available()


def choose(model: PathLike, *, backend: Optional[str] = None, device: Optional[str] = None, fp16: bool = False,
           fast_convs: bool = False, save_raw: bool = False, label_nc: int = 35, use_instance: bool = True,
           sizes: Collection[Tuple[int, int]] = (), cache_dir: Optional[PathLike] = None,
           bf16: bool = False) -> Choice:
    """See the module docstring. ``sizes``: the (H, W) of the maps as the network sees them."""
    from . import backend_for

    if not _is_checkpoint(model):
        name = backend_for(model, backend)
        return Choice(str(model), name, f"{name} runs the given {Path(model).suffix or 'model'} file")
    if backend == "ais_bench":
        raise UserError("an OM runs on an NPU and is compiled by atc from an exported graph, not from a checkpoint",
                        path=model, fix="pix2pixhd-deploy export, then the atc command it prints, then --model X.om")
    torch_reason = _torch_reason(backend, device, fp16, fast_convs, sizes, bf16)
    if torch_reason:
        return Choice(str(model), "torch", f"torch runs the checkpoint: {torch_reason}")
    runtime = backend or next(b for b in GRAPH_RUNTIMES if _installed(b))
    if not _installed(runtime):
        raise UserError(f"--backend {runtime} was asked for, and {REGISTRY[runtime].package} is not installed",
                        fix=f"{REGISTRY[runtime].install}, or leave --backend out to use what is installed")
    (height, width), = sizes
    return _cached_graph(model, runtime, height, width, label_nc=label_nc, use_instance=use_instance,
                         output_format=forms.FLOAT if save_raw else forms.UINT8, cache_dir=cache_dir)


def _torch_reason(backend, device, fp16, fast_convs, sizes, bf16=False) -> Optional[str]:
    """Why torch runs a checkpoint itself (None: a cached graph is the better path)."""
    graph = backend in GRAPH_RUNTIMES
    if backend == "torch":
        return "asked for with --backend torch"
    if _wants_gpu(device):
        if graph:
            raise UserError(f"--backend {backend} with a checkpoint builds the CPU graph, which is not for a GPU",
                            fix="leave --backend out (torch on the GPU), or export yourself and run --model X.onnx "
                                "--providers cuda")
        return "a CUDA GPU is here (--device cpu for the CPU graph)"
    if fp16 or fast_convs or bf16:
        flag = "--fp16" if fp16 else "--precision bf16" if bf16 else "--fast-convs"
        if graph:
            raise UserError(f"{flag} is a torch option, not one of --backend {backend}",
                            fix="drop it: the CPU graph is exact fp32 and has fast convolutions already")
        return f"{flag} is a torch option"
    if len(sizes) != 1:
        if graph:
            raise UserError(f"the maps come in {len(sizes)} sizes and a cached graph has one",
                            fix="run each size into its own --output, or use --backend torch")
        return f"the maps come in {len(sizes)} sizes (a cached graph has one; run each size apart for the graph)"
    if not graph and not any(_installed(b) for b in GRAPH_RUNTIMES):
        return "neither OpenVINO nor ONNX Runtime is installed (pip install openvino, for about 2.4x)"
    return None


def graph_key(checkpoint_sha256: str, runtime: str, height: int, width: int, *, label_nc: int, use_instance: bool,
              output_format: str) -> Dict[str, object]:
    """Everything the cached graph depends on."""
    return {"checkpoint_sha256": checkpoint_sha256, "height": height, "width": width, "label_nc": label_nc,
            "use_instance": use_instance, "output_format": output_format, "runtime": runtime,
            **installation_key(runtime)}


def installation_key(runtime: str) -> Dict[str, object]:
    """The parts of a graph's key that come from this installation, not from the user's checkpoint and maps."""
    return {"recipe": CPU_RECIPE, "runtime_version": _version(REGISTRY[runtime].distributions[0]),
            "torch": _version("torch"), "pix2pixhd_deploy": __version__}


def stale_reason(key: Dict[str, object]) -> Optional[str]:
    """Why this installation never uses the cache entry made for ``key`` (another recipe, version of this tool,
    of torch or of its runtime), or None. An entry whose runtime is not installed here is not called stale."""
    runtime = key.get("runtime")
    if runtime not in REGISTRY or not _installed(str(runtime)):
        return None
    changed = [k for k, v in installation_key(str(runtime)).items() if key.get(k) != v]
    return f"made with another {' and '.join(changed)}" if changed else None


def _stale_note(root: Path) -> None:
    """After a build: one line on the entries that only an older installation could use, and how to free them."""
    from ..cache import list_entries
    from ..fileio import format_bytes

    try:
        stale = [e for e in list_entries(root) if e["key"] and stale_reason(e["key"])]
    except OSError as exc:  # another process pruning or rebuilding meanwhile: the line is only advice
        log.debug("could not look for stale graphs in %s: %s", root, exc)
        return
    if stale:
        log.info("the model cache also holds %d graph%s (%s) made by another version of pix2pixhd-deploy, torch or "
                 "the runtime, which this one never uses: `pix2pixhd-deploy cache prune` frees them", len(stale),
                 "s" if len(stale) > 1 else "", format_bytes(sum(int(e["bytes"]) for e in stale)))


def _cached_graph(checkpoint: PathLike, runtime: str, height: int, width: int, *, label_nc: int,
                  use_instance: bool, output_format: str, cache_dir: Optional[PathLike],
                  rebuild_reason: Optional[str] = None) -> Choice:
    from ..cache import cache_root, cached_sha256, get_or_build
    from ..fileio import resolve_checkpoint

    path = resolve_checkpoint(checkpoint)
    root = cache_root(cache_dir)
    key = graph_key(cached_sha256(path, root), runtime, height, width, label_nc=label_nc,
                    use_instance=use_instance, output_format=output_format)

    def build(folder: Path) -> None:
        log.info("building the CPU graph for %dx%d from %s into the model cache (once; about a minute or two at "
                 "2048x1024 on 2 cores)", width, height, path)
        export_cpu_graph(path, folder, height, width, label_nc=label_nc, use_instance=use_instance,
                         output_format=output_format)

    entry = get_or_build(key, build, root=root, rebuild_reason=rebuild_reason)
    if entry.built_s is not None:
        _stale_note(root)
    how = f"built in {entry.built_s:.0f} s" if entry.built_s is not None else "from the model cache"
    name = REGISTRY[runtime].display
    reason = (f"{name} {key['runtime_version']} on the CPU runs the CPU graph for {width}x{height} ({how}, "
              f"{entry.folder}): the fastest exact path here; --backend torch runs the checkpoint itself")
    return Choice(str(entry.graph), runtime, reason, checkpoint=str(path), cache=entry.describe(),
                  compiled_dir=str(entry.compiled))


def graph_for_key(checkpoint: PathLike, key: Dict[str, object], *, cache_dir: Optional[PathLike] = None,
                  rebuild_reason: Optional[str] = None) -> Choice:
    """The cached graph for a key made elsewhere: on a Ray node that has no entry yet (each node fills its own
    cache once), or to rebuild an entry that did not load (``rebuild_reason``)."""
    return _cached_graph(checkpoint, str(key["runtime"]), int(key["height"]), int(key["width"]),
                         label_nc=int(key["label_nc"]), use_instance=bool(key["use_instance"]),
                         output_format=str(key["output_format"]), cache_dir=cache_dir, rebuild_reason=rebuild_reason)


def export_cpu_graph(checkpoint: Path, folder: Path, height: int, width: int, *, label_nc: int, use_instance: bool,
                     output_format: str) -> None:
    """The CPU recipe into ``folder``: stems form where the generator allows it (label2city_1024p), else maps.

    The batch is static (1; the adapter computes a larger batch one map at a time): with every shape fixed,
    OpenVINO plans the whole working memory once, at load. With a dynamic batch it gave about 2.2 GB of its working
    memory back and took it again every other image at 2048x1024 (560,000 fresh pages, each a host fault on a
    virtual machine), and a batch brings no speed on a CPU whose cores one map already fills."""
    from ..export import export_onnx
    from ..model.network import load_generator

    loaded = load_generator(checkpoint)
    channels = label_nc + (1 if use_instance else 0)
    if loaded.config is not None and loaded.config.input_nc != channels:
        raise UserError(f"the checkpoint takes {loaded.config.input_nc} input channels, not the {channels} of "
                        f"label_nc={label_nc} with instance maps {'on' if use_instance else 'off'}",
                        path=checkpoint, fix="pass the matching --label-nc / --no-instance")
    stems = getattr(loaded.model, "n_local_enhancers", 0) == 1
    export_onnx(loaded, folder / "model.onnx", height=height, width=width, dynamic_batch=False, batch=1,
                input_format=forms.STEMS if stems else forms.MAPS, output_format=output_format,
                use_instance=use_instance, fast_convs=True, winograd_tile=4, exact_norm=True)
