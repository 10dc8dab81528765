"""Generator outputs -> pictures, exactly as upstream: the one conversion that the exporter, the runners, compare
and the seed's postprocess step all use.

:func:`tensor2im` is upstream ``util.tensor2im``: float32 ``(x + 1) / 2 * 255`` in that order, clip to [0, 255],
truncate to uint8 (no rounding; 0.0 -> 127). :func:`tensor2im_torch` is the same in torch, on the device, and traces
into ONNX for graphs that output uint8 pictures.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from ..errors import PathLike, UserError
from ..fileio import raw_file_hw


def tensor2im(chw: np.ndarray) -> np.ndarray:
    """(3, H, W) float in [-1, 1] -> (H, W, 3) uint8, bit for bit as upstream ``tensor2im(normalize=True)``."""
    a = np.asarray(chw).astype(np.float32, copy=False)
    a = (np.transpose(a, (1, 2, 0)) + np.float32(1)) / np.float32(2.0) * np.float32(255.0)
    return np.clip(a, 0, 255).astype(np.uint8)



def tensor2im_torch(nchw):
    """The same conversion in torch on the device: (N, 3, H, W) -> (N, H, W, 3) uint8."""
    import torch

    a = (nchw.float() + 1.0) / 2.0 * 255.0  # truncating cast, as tensor2im; traces into ONNX for uint8 graphs
    return torch.clamp(a, 0.0, 255.0).to(torch.uint8).permute(0, 2, 3, 1)


def read_output_bin(path: PathLike, hw: Optional[Tuple[int, int]] = None, channels: int = 3) -> np.ndarray:
    """A raw float32 (3, H, W) output file; H and W from ``hw`` or the 1:2 Cityscapes aspect."""
    path = Path(path)
    size = path.stat().st_size
    h, w = raw_file_hw(size, channels, path=path, hw=hw, size_flag="--size")
    return check_finite(np.fromfile(path, dtype=np.float32).reshape(channels, h, w), path)



def check_finite(arr: np.ndarray, path: PathLike) -> np.ndarray:
    """``arr`` itself, or a UserError when the runtime wrote NaN or infinite values into it."""
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise UserError(f"the output holds {bad} NaN or infinite values", path=path,
                        fix="the runtime produced invalid numbers: check the model and its precision settings")
    return arr
