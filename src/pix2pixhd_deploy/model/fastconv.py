"""Faster forms of the generator's two slowest kinds of convolution on CPUs, equal in exact arithmetic.

Profiled with OpenVINO on label2city_1024p at 1024x2048 (2-core AMD EPYC), the stems graph spends 3.9 of its
6.8 s in the 18 3x3 convolutions of the global generator's residual blocks (1024 channels at 32x64, 19.3 GMAC
each, already at ~90% of the cores' fp32 peak) and 0.48 s in the 7x7 output convolution (32 -> 3 channels at full
size, which runs at a fifth of the speed of the others because three output channels fill no vector). Two rewrites:

* :class:`WinogradConv3x3`: Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray, 2016). Each 4x4 input tile
  is transformed (B^T d B, coefficients 0 and +-1) by one small strided convolution over each channel, the 3x3
  filters once at export (G g G^T, in float64), the 16 elementwise products become 16 matrix products
  (K x C) x (C x tiles), and the 2x2 output tile is A^T m A, adds only. 2.25x fewer multiplications, all in large
  GEMMs. The float error is that of direct convolution (a different summation order): 1.3e-6 against float64 for
  one 1024-channel layer, where direct convolution is 1.1e-6. F(4x4, 3x3) (``tile=4``; the CPU graph's since
  recipe cpu-v3) does 4x fewer multiplications than the direct convolution, but its transforms (coefficients up to
  8 and 1/24) make its error 8 to 25 times the direct convolution's, by layer; its pictures stay within one level
  of NVIDIA's (docs/cpu.md). Its graph holds the 3x3 filters and transforms them each inference
  (:meth:`WinogradConv3x3.filters`).
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

# F(m x m, 3x3): Y = A^T [(G g G^T) * (B^T d B)] A, for output tiles of m = 2 (4x4 input tiles) or m = 4 (6x6)
_TRANSFORMS = {
    2: {"BT": ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1)),
        "G": ((1, 0, 0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0, 0, 1)),
        "AT": ((1, 1, 1, 0), (0, 1, -1, -1))},
    # Lavin & Gray's F(4x4, 3x3), interpolation points 0, +-1, +-2 and infinity
    4: {"BT": ((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0), (0, -2, -1, 2, 1, 0),
               (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1)),
        "G": ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6), (1 / 24, 1 / 12, 1 / 6),
              (1 / 24, -1 / 12, 1 / 6), (0, 0, 1)),
        "AT": ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1))},
}


class WinogradConv3x3(nn.Module):
    """``nn.Conv2d(C, K, 3)`` (stride 1, no padding, no groups) as Winograd F(m x m, 3x3), ``m`` = 2 or 4."""

    def __init__(self, conv: nn.Conv2d, tile: int = 2):
        super().__init__()
        if not is_winograd_candidate(conv, min_channels=1):
            raise ValueError("WinogradConv3x3 replaces a 3x3, stride-1, unpadded, ungrouped Conv2d only")
        if tile not in _TRANSFORMS:
            raise ValueError(f"Winograd output tiles of {tile}x{tile} are not built (2 or 4)")
        t = _TRANSFORMS[tile]
        n = tile + 2
        weight = conv.weight.detach().to(torch.float64).cpu()
        g = torch.tensor(t["G"], dtype=torch.float64)
        at = torch.tensor(t["AT"], dtype=torch.float64)
        k, c = weight.shape[:2]
        if tile == 2:  # the transformed filters, 16 per filter pair (exact: G holds 0, 1 and 1/2)
            u = torch.einsum("ai,kcij,bj->abkc", g, weight, g).reshape(n * n, k, c)
            self.register_buffer("u", u.to(conv.weight.dtype))
            self.register_buffer("ggt", None)
        else:  # the 3x3 filters and (G x G): 36 transformed values per filter pair would take 2.7 GB in
            # label2city_1024p (past one ONNX file's 2 GiB); 9 take 0.68 GB, and each inference transforms them
            self.register_buffer("u", conv.weight.detach().reshape(k * c, 9).t().contiguous())  # (9, K*C)
            self.register_buffer("ggt", torch.kron(g, g).to(conv.weight.dtype))               # (n*n, 9)
        # the m x m output transform of the n*n products, as one (m*m, n*n) matrix: rows are (row, col) offsets
        self.register_buffer("a", torch.einsum("pa,qb->pqab", at, at).reshape(tile * tile, n * n)
                             .to(conv.weight.dtype))
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().clone().view(1, k, 1, 1))
        # the input transform B^T d B of every n x n tile, as one convolution of stride m over each channel alone:
        # kernel p*n+q holds BT[p, i] * BT[q, j] (exact: BT holds small integers)
        bt = torch.tensor(t["BT"], dtype=torch.float64)
        self.register_buffer("bt_kernel", torch.einsum("pi,qj->pqij", bt, bt).reshape(n * n, 1, n, n)
                             .to(conv.weight.dtype))
        self.in_channels, self.out_channels, self.tile = c, k, tile

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # python ints: a traced graph records the tiling as constants (a static size)
        m, n = self.tile, self.tile + 2
        h, w = int(x.shape[-2]) - 2, int(x.shape[-1]) - 2
        th, tw = -(-h // m), -(-w // m)
        if m * th != h or m * tw != w:  # zeros complete the last tiles; their extra outputs are cut off
            x = F.pad(x, (0, m * tw - w, 0, m * th - h))
        u, a = self.filters(x), self.a.to(x.dtype)
        k, b = self.out_channels, x.shape[0]  # b traced, not an int: a dynamic batch stays dynamic
        # every channel as an image of its own: one small convolution transforms all its tiles. Slicing the tiles
        # out instead (a strided slice per tap) costs a graph runtime an index per value: in OpenVINO 1.6 GB of
        # index tables first-touched at every load of label2city_1024p's graph, and 0.13 s an inference
        v = F.conv2d(x.reshape(-1, 1, x.shape[-2], x.shape[-1]), self.bt_kernel.to(x.dtype), stride=m)
        v = v.reshape(b, self.in_channels, n * n, th * tw).transpose(1, 2)        # (N, n*n, C, tiles)
        prod = torch.matmul(u, v)                                                 # (N, n*n, K, tiles)
        y = torch.matmul(a, prod.reshape(b, n * n, k * th * tw))                  # (N, m*m, K*tiles)
        y = y.reshape(b, m, m, k, th, tw).permute(0, 3, 4, 1, 5, 2).reshape(b, k, m * th, m * tw)
        if m * th != h or m * tw != w:
            y = y[:, :, :h, :w]
        return y if self.bias is None else y + self.bias.to(x.dtype)

    def filters(self, x: torch.Tensor) -> torch.Tensor:
        """The transformed filters G g G^T, (n*n, K, C), in ``x``'s dtype. For F(4x4) computed here from the 3x3
        filters, with (G x G) scaled by a factor of exactly 1 taken from ``x``: a graph runtime would otherwise fold
        the product into a 2.7 GB constant (label2city_1024p), past ONNX's 2 GiB and copied in at every start."""
        if self.ggt is None:
            return self.u.to(x.dtype)
        one = x[:1, :1, :1, :1].reshape(1, 1) * 0 + 1
        return torch.matmul(self.ggt.to(x.dtype) * one, self.u.to(x.dtype)).reshape(
            -1, self.out_channels, self.in_channels)


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


def rewrite_for_cpu(model: nn.Module, *, min_channels: Optional[int] = None, tile: int = 2) -> Dict[str, int]:
    """Swap :class:`WinogradConv3x3` and :class:`RowSumConv` into ``model`` (in place); returns how many of each.

    ``min_channels``: the fewest input channels a 3x3 convolution needs to become Winograd (default
    ``WINOGRAD_MIN_CHANNELS``: in label2city_1024p, the global generator's 18 residual-block convolutions);
    ``tile``: Winograd's output tile, 2 (F(2x2, 3x3)) or 4 (F(4x4, 3x3))."""
    min_channels = WINOGRAD_MIN_CHANNELS if min_channels is None else min_channels
    counts = {"winograd": 0, "rowsum": 0}

    def choose(child: nn.Module) -> Optional[nn.Module]:
        winograd = lambda c: WinogradConv3x3(c, tile)  # noqa: E731
        for kind, fits, make in (("winograd", lambda c: is_winograd_candidate(c, min_channels), winograd),
                                 ("rowsum", is_rowsum_candidate, RowSumConv)):
            if fits(child):
                counts[kind] += 1
                return make(child).to(child.weight.device)
        return None

    replace_modules(model, choose)
    return counts
