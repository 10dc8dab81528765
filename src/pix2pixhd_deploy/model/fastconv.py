"""Faster forms of the generator's two slowest kinds of convolution on CPUs, equal in exact arithmetic.

Profiled with OpenVINO on label2city_1024p at 1024x2048 (2-core AMD EPYC), the stems graph spends 3.9 of its
6.8 s in the 18 3x3 convolutions of the global generator's residual blocks (1024 channels at 32x64, 19.3 GMAC
each, already at ~90% of the cores' fp32 peak) and 0.48 s in the 7x7 output convolution (32 -> 3 channels at full
size, which runs at a fifth of the speed of the others because three output channels fill no vector). Two rewrites:

* :class:`WinogradConv3x3`: Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray, 2016). Each 4x4 input tile
  is transformed with adds and subtracts only (B^T d B), the 3x3 filters once at export (G g G^T, in float64),
  the 16 elementwise products become 16 matrix products (K x C) x (C x tiles), and the 2x2 output tile is A^T m A,
  again adds only. 2.25x fewer multiplications, all in large GEMMs. The float error is that of direct
  convolution (a different summation order): 1.3e-6 against float64 for one 1024-channel layer, where direct
  convolution is 1.1e-6. F(4x4, 3x3) would save more, but its transforms (coefficients up to 8 and 1/24) make the
  error 20x larger, so it is not used.
* :class:`RowSumConv`: a KxK convolution with few output channels as one 1xK convolution with K times as many
  output channels, followed by K row-shifted sums. The same multiplications, laid out so they vectorize.

:func:`rewrite_for_cpu` swaps both into a model in place. Both need the spatial size when traced (ONNX export at
a static size); they work on any batch. Used by ``export --fast-convs`` and ``run --fast-convs`` (torch).
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

WINOGRAD_MIN_CHANNELS = 256  # below this the transforms cost more memory traffic than the GEMMs save
ROWSUM_MAX_OUT_CHANNELS = 4  # output convolutions (3 channels) only

# F(2x2, 3x3): Y = A^T [(G g G^T) * (B^T d B)] A
_BT = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1))
_G = ((1, 0, 0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0, 0, 1))
_AT = ((1, 1, 1, 0), (0, 1, -1, -1))


def _input_transform_1d(taps):
    """B^T applied along one axis to the four taps d0..d3 (tensors): adds and subtracts only."""
    d0, d1, d2, d3 = taps
    return [d0 - d2, d1 + d2, d2 - d1, d1 - d3]


class WinogradConv3x3(nn.Module):
    """``nn.Conv2d(C, K, 3)`` (stride 1, no padding, no groups) as Winograd F(2x2, 3x3)."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        if not is_winograd_candidate(conv, min_channels=1):
            raise ValueError("WinogradConv3x3 replaces a 3x3, stride-1, unpadded, ungrouped Conv2d only")
        weight = conv.weight.detach().to(torch.float64).cpu()
        g = torch.tensor(_G, dtype=torch.float64)
        at = torch.tensor(_AT, dtype=torch.float64)
        k, c = weight.shape[:2]
        u = torch.einsum("ai,kcij,bj->abkc", g, weight, g).reshape(16, k, c)
        self.register_buffer("u", u.to(conv.weight.dtype))
        # the 2x2 output transform of the 16 products, as one (4, 16) matrix: rows are (row offset, col offset)
        self.register_buffer("a", torch.einsum("pa,qb->pqab", at, at).reshape(4, 16).to(conv.weight.dtype))
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().clone().view(1, k, 1, 1))
        self.in_channels, self.out_channels = c, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # python ints: a traced graph records the tiling as constants (a static size)
        h, w = int(x.shape[-2]) - 2, int(x.shape[-1]) - 2
        th, tw = (h + 1) // 2, (w + 1) // 2
        if 2 * th != h or 2 * tw != w:  # an odd size: zeros complete the last tile; its extra outputs are cut off
            x = F.pad(x, (0, 2 * tw - w, 0, 2 * th - h))
        u, a = self.u.to(x.dtype), self.a.to(x.dtype)
        rows = _input_transform_1d([x[:, :, i:i + 2 * th:2] for i in range(4)])
        tiles = []
        for r in rows:
            tiles += _input_transform_1d([r[..., j:j + 2 * tw:2] for j in range(4)])
        k, n = self.out_channels, x.shape[0]  # n traced, not an int: a dynamic batch stays dynamic
        v = torch.stack(tiles, 1).reshape(n, 16, self.in_channels, th * tw)    # (N, 16, C, tiles)
        m = torch.matmul(u, v)                                                   # (N, 16, K, tiles)
        y = torch.matmul(a, m.reshape(n, 16, k * th * tw))                      # (N, 4, K*tiles)
        y = y.reshape(n, 2, 2, k, th, tw).permute(0, 3, 4, 1, 5, 2).reshape(n, k, 2 * th, 2 * tw)
        if 2 * th != h or 2 * tw != w:
            y = y[:, :, :h, :w]
        return y if self.bias is None else y + self.bias.to(x.dtype)


class RowSumConv(nn.Module):
    """``nn.Conv2d(C, K, (kh, kw))`` (stride 1, no padding) as one (1, kw) convolution to kh*K channels plus the
    kh row-shifted K-channel slices summed: out[:, :, y] = sum_i conv_i(x)[:, :, y + i]."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        if not is_rowsum_candidate(conv):
            raise ValueError("RowSumConv replaces a stride-1, unpadded, ungrouped Conv2d with few outputs only")
        weight = conv.weight.detach()
        k, c, kh, kw = weight.shape
        self.register_buffer("weight", weight.permute(2, 0, 1, 3).reshape(kh * k, c, 1, kw).contiguous())
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().clone().view(1, k, 1, 1))
        self.out_channels, self.kh = k, kh

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = int(x.shape[-2]) - self.kh + 1
        k = self.out_channels
        rows = F.conv2d(x, self.weight.to(x.dtype))
        out = rows[:, 0:k, 0:h]
        for i in range(1, self.kh):
            out = out + rows[:, i * k:(i + 1) * k, i:i + h]
        return out if self.bias is None else out + self.bias.to(x.dtype)


def _plain(conv: nn.Module) -> bool:
    return (type(conv) is nn.Conv2d and conv.groups == 1 and tuple(conv.stride) == (1, 1)
            and tuple(conv.dilation) == (1, 1) and conv.padding in ((0, 0), 0, "valid"))


def is_winograd_candidate(conv: nn.Module, min_channels: int = WINOGRAD_MIN_CHANNELS) -> bool:
    return _plain(conv) and tuple(conv.kernel_size) == (3, 3) and conv.in_channels >= min_channels


def is_rowsum_candidate(conv: nn.Module) -> bool:
    return (_plain(conv) and conv.out_channels <= ROWSUM_MAX_OUT_CHANNELS and conv.kernel_size[0] > 1
            and conv.in_channels > conv.out_channels)


def replace_modules(model: nn.Module, choose: Callable[[nn.Module], Optional[nn.Module]]) -> int:
    """Swap ``choose(child)`` for every submodule it returns a module for (in place); returns how many."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            replacement = choose(child)
            if replacement is not None:
                setattr(parent, name, replacement)
                swapped += 1
    return swapped


def rewrite_for_cpu(model: nn.Module, *, min_channels: Optional[int] = None) -> Dict[str, int]:
    """Swap :class:`WinogradConv3x3` and :class:`RowSumConv` into ``model`` (in place); returns how many of each.

    ``min_channels``: the fewest input channels a 3x3 convolution needs to become Winograd (default
    ``WINOGRAD_MIN_CHANNELS``: in label2city_1024p, the global generator's 18 residual-block convolutions)."""
    min_channels = WINOGRAD_MIN_CHANNELS if min_channels is None else min_channels
    counts = {"winograd": 0, "rowsum": 0}

    def choose(child: nn.Module) -> Optional[nn.Module]:
        for kind, fits, make in (("winograd", lambda c: is_winograd_candidate(c, min_channels), WinogradConv3x3),
                                 ("rowsum", is_rowsum_candidate, RowSumConv)):
            if fits(child):
                counts[kind] += 1
                return make(child).to(child.weight.device)
        return None

    replace_modules(model, choose)
    return counts
