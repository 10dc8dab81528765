"""Encoding: label map + instance map -> the generator's float32 input, bit for bit as upstream (UPSTREAM.md §3).

In:  label ids (H, W) uint8 and instance ids (H, W) int32 (already fitted to a multiple of 32 by :mod:`labelmaps`).
Out: (C, H, W) float32 with C = label_nc + 1 (36 for label2city): channels 0..label_nc-1 are the one-hot of the
label ids (channel c is 1.0 where label == c), channel label_nc is the instance-edge map.

Edges follow upstream's ``get_edges``: a pixel is 1.0 when its instance id differs from a 4-neighbour (left,
right, up, down), so boundaries are two pixels thick; nothing wraps at the borders. Edges are always computed on
the integer ids, never on fp16 values (upstream's fp16 path loses edges that way, UPSTREAM.md §3).

The seed's ``.bin`` format is this array written raw: float32, little-endian, C order, no header.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from .dataset import Pair, find_pairs, resolve_instances
from .errors import Failures, PathLike, UserError
from .fileio import (atomic_write_array, atomic_write_text, check_free_space, ensure_output_dir, progress,
                     remove_stale_temporaries)
from .labelmaps import MapOptions, check_label_ids, fitted_size, load_maps
from .labels import LABEL_NC

log = logging.getLogger(__name__)
#: what preprocess writes beside the .bin files: each image's map size and input size, so postprocess can crop back
SIZES_SIDECAR = "pix2pixhd_sizes.json"


def encode_label_map(label: np.ndarray, label_nc: int = LABEL_NC, *, path: Optional[PathLike] = None) -> np.ndarray:
    """(H, W) integer ids -> (label_nc, H, W) float32 one-hot."""
    check_label_ids(label, label_nc, path=path)
    classes = np.arange(label_nc, dtype=label.dtype).reshape(label_nc, 1, 1)
    return (label[None, :, :] == classes).astype(np.float32)


def edges_from_instances(inst: np.ndarray) -> np.ndarray:
    """(H, W) integer instance ids -> (H, W) float32 boundary map (4-neighbour rule, both sides marked)."""
    edge = np.zeros(inst.shape, dtype=bool)
    dx = inst[:, 1:] != inst[:, :-1]
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    dy = inst[1:, :] != inst[:-1, :]
    edge[1:, :] |= dy
    edge[:-1, :] |= dy
    return edge.astype(np.float32)


def encode_input(label: np.ndarray, inst: Optional[np.ndarray], label_nc: int = LABEL_NC, *,
                 path: Optional[PathLike] = None) -> np.ndarray:
    """The generator input for one image: (label_nc [+1], H, W) float32."""
    onehot = encode_label_map(label, label_nc, path=path)
    if inst is None:
        return onehot
    out = np.empty((label_nc + 1,) + label.shape, dtype=np.float32)
    out[:label_nc] = onehot
    out[label_nc] = edges_from_instances(inst)
    return out


def encoding_for_channels(channels: int) -> Tuple[int, bool]:
    """(label_nc, use_instance) of a generator with ``channels`` input channels: label2city's 35 classes with or
    without the edge channel, else ``channels - 1`` classes and the edge channel (upstream's default)."""
    if channels == LABEL_NC:
        return LABEL_NC, False
    return channels - 1, True


def input_channels(label_nc: int = LABEL_NC, use_instance: bool = True) -> int:
    return label_nc + (1 if use_instance else 0)


def encode_pair(pair: Pair, *, label_nc: int = LABEL_NC, base: int = 32,
                options: Optional[MapOptions] = None) -> np.ndarray:
    """One pair read by :func:`labelmaps.load_maps` and encoded. ``options`` None: the pair's instance file if it
    has one (else none), resized as upstream, ``label_nc`` and ``base``."""
    options = options or MapOptions(label_nc=label_nc, base=base,
                                    instances="files" if pair.instance is not None else "none")
    maps = load_maps(pair, options)
    return encode_input(maps.label, maps.inst, options.label_nc, path=pair.label)


# ------------------------------------------------------------------------------ torch, on the compute device

def encode_input_torch(label, inst, label_nc: int = LABEL_NC, dtype=None):
    """The same encoding in torch, batched, on whatever device the tensors live on.

    ``label`` (N, H, W) integer, ``inst`` (N, H, W) integer or None -> (N, C, H, W) of ``dtype`` (float32 by
    default). Equal to :func:`encode_input` element for element (the values are 0.0 and 1.0 in any dtype).
    Written without in-place slice updates, so it also traces into plain ONNX ops (Equal, Cast, Pad, Add,
    Greater, Concat) for the maps-input graph of :mod:`export`.
    """
    import torch
    import torch.nn.functional as F

    dtype = dtype or torch.float32
    ids = label.to(torch.int64).unsqueeze(1)                                       # (N, 1, H, W)
    classes = torch.arange(label_nc, dtype=torch.int64, device=label.device).view(1, label_nc, 1, 1)
    onehot = (ids == classes).to(dtype)
    if inst is None:
        return onehot
    t = inst.unsqueeze(1)
    dx = (t[:, :, :, 1:] != t[:, :, :, :-1]).to(dtype)
    dy = (t[:, :, 1:, :] != t[:, :, :-1, :]).to(dtype)
    touched = F.pad(dx, (1, 0)) + F.pad(dx, (0, 1)) + F.pad(dy, (0, 0, 1, 0)) + F.pad(dy, (0, 0, 0, 1))
    return torch.cat([onehot, (touched > 0).to(dtype)], dim=1)


# ------------------------------------------------------------------------------------ the preprocess stage

def _image_size(path: Path) -> Tuple[int, int]:
    """(height, width) from the file's header, without decoding it."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.size[1], img.size[0]
    except (OSError, SyntaxError, ValueError):
        return 0, 0  # decoding it says what is wrong, with the file named


def sizes_sidecar(pairs: List[Pair], options: MapOptions) -> Dict[str, object]:
    """The sidecar preprocess writes: the settings and, per ``.bin`` stem, the map's size and the input's size."""
    images = {}
    for pair in pairs:
        h, w = _image_size(pair.label)
        ih, iw = fitted_size(h, w, options.base, options.fit)
        images[pair.name] = {"height": h, "width": w, "input_height": ih, "input_width": iw}
    return {"tool": "pix2pixhd-deploy preprocess", "fit": options.fit, "instances": options.instances,
            "label_nc": options.label_nc, "size_multiple": options.base, "images": images}


def _check_sidecar(out_dir: Path, sidecar: Dict[str, object]) -> None:
    """Refuse to add to a folder of .bin files made with other settings (its old sidecar says which)."""
    path = out_dir / SIZES_SIDECAR
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"the sizes sidecar is unreadable ({exc})", path=path,
                        fix="delete it (and the .bin files beside it) to start afresh") from exc
    keys = ("fit", "instances", "label_nc", "size_multiple")
    diffs = [f"{k}: {old.get(k)!r} -> {sidecar[k]!r}" for k in keys if old.get(k) != sidecar[k]]
    if diffs:
        raise UserError("this folder holds .bin files made with other settings (" + "; ".join(diffs) + ")",
                        path=out_dir, fix="choose a new output folder, or empty this one")


def preprocess_dataset(dataroot: PathLike, out_dir: PathLike, *, label_nc: int = LABEL_NC,
                       use_instance: bool = True, instances: Optional[str] = None, fit: str = "resize",
                       base: int = 32, phase: str = "test", skip_existing: bool = True,
                       keep_going: bool = False) -> List[Path]:
    """The seed's ``pix2pixhd_preprocess.py``: one ``OUT_DIR/<label stem>.bin`` per pair, float32 (C, H, W), and
    ``OUT_DIR/pix2pixhd_sizes.json`` (:data:`SIZES_SIDECAR`: each map's size and input size, so that postprocess
    reshapes each output and, with ``fit="pad"``, crops it back to the map's size; ais_bench reads only .bin).

    ``instances`` (None: ``files`` when the data root has instance maps, else ``labels``; ``use_instance=False``
    means ``none``) and ``fit`` as :mod:`labelmaps`. Free disk is checked before the first write; files that
    already exist with the right size are kept, so an interrupted run resumes. A bad pair stops the run, or with
    ``keep_going`` is skipped (it gets no ``.bin``; the sidecar's ``failed`` records it) and all the bad ones are
    reported in one error at the end.
    """
    options = MapOptions(label_nc=label_nc, base=base, fit=fit,
                         instances=resolve_instances(dataroot, instances if use_instance else "none", phase=phase))
    pairs = find_pairs(dataroot, phase=phase, instances=options.instances)
    sidecar = sizes_sidecar(pairs, options)
    out_dir = Path(out_dir)
    _check_sidecar(out_dir, sidecar)
    failed = Failures("pair")

    def encode(pair: Pair) -> Optional[np.ndarray]:
        try:
            return encode_pair(pair, options=options)
        except UserError as exc:
            if not keep_going:
                raise
            failed.add(exc, pair.name)
            return None

    ready = _first_encoded(pairs, encode)
    if not ready:
        raise failed.error(0, path=dataroot)
    channels = input_channels(label_nc, options.use_instance)
    nbytes = {name: channels * e["input_height"] * e["input_width"] * 4 for name, e in sidecar["images"].items()}
    todo = [p for p in pairs if p.name not in failed
            and not (skip_existing and _has_bin(out_dir / f"{p.name}.bin", nbytes[p.name]))]
    out_dir = _prepare_output(out_dir, [nbytes[p.name] for p in todo], sidecar)
    if len(pairs) > len(todo) + len(failed):
        log.info("%d of %d .bin files are already complete in %s; skipping them", len(pairs) - len(todo) - len(failed),
                 len(pairs), out_dir)
    for pair in progress(todo, desc="preprocess"):
        x = ready.pop(pair.name, None)
        if x is None:
            x = encode(pair)
        if x is not None:
            atomic_write_array(out_dir / f"{pair.name}.bin", x)
    if failed:
        atomic_write_text(out_dir / SIZES_SIDECAR, json.dumps({**sidecar, "failed": failed.records}, indent=1,
                                                              sort_keys=True))
        raise failed.error(len(pairs) - len(failed), path=dataroot)
    return [out_dir / f"{p.name}.bin" for p in pairs]


def _first_encoded(pairs: List[Pair], encode: Callable[[Pair], Optional[np.ndarray]]) -> Dict[str, np.ndarray]:
    """The first pair that encodes (name -> input), read before anything is written: a bad input leaves nothing
    behind; empty when none does (``encode`` raised for a bad pair, or recorded it under ``--keep-going``)."""
    for pair in pairs:
        x = encode(pair)
        if x is not None:
            return {pair.name: x}
    return {}


def _has_bin(path: Path, nbytes: int) -> bool:
    return path.is_file() and path.stat().st_size == nbytes


def _prepare_output(out_dir: Path, sizes: List[int], sidecar: Dict[str, object]) -> Path:
    """Free disk checked for the inputs still to write (``sizes`` in bytes), then the folder made, the leftovers
    of an interrupted run removed and the sidecar written."""
    each, need = set(sizes), sum(sizes)
    check_free_space(out_dir, need, what=f"{len(sizes)} input tensors " + (
        f"of {next(iter(each)) / 2**20:.0f} MiB" if len(each) == 1 else f"({need / 2**20:.0f} MiB in all)"))
    out_dir = ensure_output_dir(out_dir)
    remove_stale_temporaries(out_dir)
    atomic_write_text(out_dir / SIZES_SIDECAR, json.dumps(sidecar, indent=1, sort_keys=True))
    return out_dir
