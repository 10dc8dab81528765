"""Encoding: label map + instance map -> the generator's float32 input, bit for bit as upstream (UPSTREAM.md §3).

In:  label ids (H, W) uint8 and instance ids (H, W) int32 (already snapped to a multiple of 32 by the reader).
Out: (C, H, W) float32 with C = label_nc + 1 (36 for label2city): channels 0..label_nc-1 are the one-hot of the
label ids (channel c is 1.0 where label == c), channel label_nc is the instance-edge map.

Edges follow upstream's ``get_edges``: a pixel is 1.0 when its instance id differs from a 4-neighbour (left,
right, up, down), so boundaries are two pixels thick; nothing wraps at the borders. Edges are always computed on
the integer ids, never on fp16 values (upstream's fp16 path loses edges that way, UPSTREAM.md §3).

The seed's ``.bin`` format is this array written raw: float32, little-endian, C order, no header.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from .dataset import Pair, find_pairs, load_pair
from .errors import PathLike, UserError, failed_inputs_error
from .fileio import atomic_write_array, check_free_space, ensure_output_dir, progress, remove_stale_temporaries
from .labels import LABEL_NC

log = logging.getLogger(__name__)


def check_label_ids(label: np.ndarray, label_nc: int, *, path: Optional[PathLike] = None) -> None:
    """Upstream's scatter crashes on an id >= label_nc (issues #206, #173); we say which ids and where."""
    if label.size and int(label.max()) >= label_nc:
        bad = np.unique(label[label >= label_nc])
        shown = ", ".join(str(int(v)) for v in bad[:8]) + (" ..." if bad.size > 8 else "")
        raise UserError(f"label ids {shown} are outside 0..{label_nc - 1} (label_nc={label_nc})", path=path,
                        fix="use Cityscapes labelIds (not trainIds with 255) or pass the --label-nc your model "
                            "was trained with")


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


def encode_pair(pair: Pair, *, label_nc: int = LABEL_NC, base: int = 32) -> np.ndarray:
    label, inst = load_pair(pair, base=base)
    return encode_input(label, inst, label_nc, path=pair.label)


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

def bin_bytes(channels: int, height: int, width: int) -> int:
    return channels * height * width * 4


def preprocess_dataset(dataroot: PathLike, out_dir: PathLike, *, label_nc: int = LABEL_NC,
                       use_instance: bool = True, base: int = 32, phase: str = "test",
                       skip_existing: bool = True, keep_going: bool = False) -> List[Path]:
    """The seed's ``pix2pixhd_preprocess.py``: one ``OUT_DIR/<label stem>.bin`` per pair, float32 (C, H, W).

    Free disk is checked before the first write (from the first image's size); files that already exist with the
    right size are kept, so an interrupted run resumes. A bad pair stops the run, or with ``keep_going`` is
    skipped (it gets no ``.bin``) and all the bad ones are reported in one error at the end.
    """
    pairs = find_pairs(dataroot, phase=phase, use_instance=use_instance)
    failed: Dict[str, Tuple[str, str]] = {}  # pair name -> (file, problem)

    def encode(pair: Pair) -> Optional[np.ndarray]:
        try:
            return encode_pair(pair, label_nc=label_nc, base=base)
        except UserError as exc:
            if not keep_going:
                raise
            log.error("%s", exc)
            failed[pair.name] = (exc.path or str(pair.label), exc.problem)
            return None

    ready: Dict[str, np.ndarray] = {}
    for pair in pairs:  # the first good pair gives the size that the free-disk check counts with
        x = encode(pair)
        if x is not None:
            ready[pair.name] = x
            break
    if not ready:
        raise failed_inputs_error(list(failed.values()), 0, what="pair", path=dataroot)
    per_image = next(iter(ready.values())).nbytes
    out_dir = Path(out_dir)
    todo = [p for p in pairs
            if p.name not in failed and not (skip_existing and (out_dir / f"{p.name}.bin").is_file()
                                             and (out_dir / f"{p.name}.bin").stat().st_size == per_image)]
    check_free_space(out_dir, per_image * len(todo), what=f"{len(todo)} input tensors of {per_image / 2**20:.0f} MiB")
    out_dir = ensure_output_dir(out_dir)
    remove_stale_temporaries(out_dir)
    complete = len(pairs) - len(todo) - len(failed)
    if complete:
        log.info("%d of %d .bin files are already complete in %s; skipping them", complete, len(pairs), out_dir)
    for pair in progress(todo, desc="preprocess"):
        x = ready.pop(pair.name, None)
        if x is None:
            x = encode(pair)
        if x is not None:
            atomic_write_array(out_dir / f"{pair.name}.bin", x)
    if failed:
        raise failed_inputs_error(list(failed.values()), len(pairs) - len(failed), what="pair", path=dataroot)
    return [out_dir / f"{p.name}.bin" for p in pairs]
