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

import logging
from typing import Optional, Tuple

import numpy as np

from ..data.labelmaps import MapOptions, Pair, check_label_ids, load_maps
from ..data.labels import LABEL_NC
from ..errors import PathLike

log = logging.getLogger(__name__)


def encode_label_map(label: np.ndarray, label_nc: int = LABEL_NC, *, path: Optional[PathLike] = None) -> np.ndarray:
    """(H, W) integer ids -> (label_nc, H, W) float32 one-hot."""
    check_label_ids(label, label_nc, path=path)
    classes = np.arange(label_nc, dtype=label.dtype).reshape(label_nc, 1, 1)
    return (label[None, :, :] == classes).astype(np.float32)


def edges_from_instances(inst: np.ndarray) -> np.ndarray:
    """(H, W) integer instance ids -> (H, W) float32 boundary map (4-neighbour rule, both sides marked)."""
    return instance_edges(inst).astype(np.float32)


def instance_edges(inst: np.ndarray) -> np.ndarray:
    """:func:`edges_from_instances` as a bool map."""
    edge = np.zeros(inst.shape, dtype=bool)
    dx = inst[:, 1:] != inst[:, :-1]
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    dy = inst[1:, :] != inst[:-1, :]
    edge[1:, :] |= dy
    edge[:-1, :] |= dy
    return edge


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













