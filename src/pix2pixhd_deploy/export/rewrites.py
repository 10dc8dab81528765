"""The graph rewrites: modules swapped in for export only, each computing what it replaces.

* ``ReflectionPad2d`` -> :class:`OnnxReflectionPad2d`, one ``Pad(mode=reflect)`` with constant pads. Recent torch
  emits a small pads-computing subgraph (a Slice with step -1 that its constant folding skips); a constant is what
  every runtime, and ATC's Pad (ASCEND.md §3), expects. Always.
* precise norms (``exact_norm``, the default for fp32 static-size graphs): each ``InstanceNorm2d`` becomes
  :class:`TwoStageInstanceNorm`, whose means are sums of row sums. OpenVINO and ONNX Runtime's CPU kernels reduce
  the 2M values of a full-size channel in one float32 pass and lose precision (one layer: 8.8e-5 and 2.4e-4 from
  float64, against 9e-7 in torch; up to 3e-3 after a convolution in OpenVINO); with two stages they are within
  1.2e-6 and 4.6e-6, and the picture within one level of torch's on 0.03% of values instead of 5%.
  With ``fast_convs`` (the CPU graph) they are :class:`RowMomentsInstanceNorm` instead, one pass for the
  statistics and one for the output (0.19 s less an inference of label2city_1024p in OpenVINO), and the
  convolutions before them lose their biases, which the norms cancel (:func:`drop_biases_before_norms`).
* ``rewrite_avgpool``: the local enhancer's ``AvgPool2d(3, 2, 1, count_include_pad=False)`` becomes
  :class:`ExactAvgPool2d`, a window sum (a depthwise Conv with ones) divided by the number of in-image pixels in each
  window. ATC documents ``count_include_pad`` as unsupported (ASCEND.md §3); the rewrite needs only Conv and Div.
* ``fast_convs``: the CPU forms of :mod:`..fastconv` (Winograd 3x3, row-sum output convolution).
* ``fp16``: :func:`to_fp16` on the finished graph: weights and activations in half precision through
  onnxconverter-common, the inputs and outputs kept float32 and ``InstanceNormalization`` kept in float32 (its
  variance over 2M pixels overflows half).
"""
from __future__ import annotations

import copy
import warnings
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..model.fastconv import replace_modules, rewrite_for_cpu

FP16_BLOCKED_OPS = ("InstanceNormalization",)


class _ReflectPad2dFn(torch.autograd.Function):
    """``F.pad(mode="reflect")`` whose ONNX form is one Pad node with constant pads."""

    @staticmethod
    def forward(ctx, x, pads):
        return F.pad(x, pads, mode="reflect")

    @staticmethod
    def symbolic(g, x, pads):
        left, right, top, bottom = pads
        onnx_pads = torch.tensor([0, 0, top, left, 0, 0, bottom, right], dtype=torch.int64)
        return g.op("Pad", x, g.op("Constant", value_t=onnx_pads), mode_s="reflect")


class OnnxReflectionPad2d(nn.Module):
    """Stands in for ``nn.ReflectionPad2d`` during export; the same numbers, a cleaner graph."""

    def __init__(self, pad: nn.ReflectionPad2d):
        super().__init__()
        self.padding = tuple(int(p) for p in pad.padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ReflectPad2dFn.apply(x, self.padding)


def _window_counts(size: int, kernel: int, stride: int, pad: int) -> List[int]:
    """Per output position along one axis: how many of the ``kernel`` taps fall inside ``0..size-1``."""
    n_out = (size + 2 * pad - kernel) // stride + 1
    return [min(i * stride - pad + kernel, size) - max(i * stride - pad, 0) for i in range(n_out)]


class ExactAvgPool2d(nn.Module):
    """``AvgPool2d(count_include_pad=False)`` as window sum / in-image count, with ops every runtime has.

    The sum is a depthwise ``Conv`` with a ones kernel and zero padding; the count is a constant map when the
    spatial size is static (``static_hw``), else the same sum over a ones map, computed in the graph. Dividing
    by the exact integer count is the definition torch uses, so the two agree to float rounding of the sum.
    """

    def __init__(self, pool: nn.AvgPool2d, channels: int, *, static_hw: bool):
        super().__init__()
        k, s, p = (_pair(pool.kernel_size), _pair(pool.stride or pool.kernel_size), _pair(pool.padding))
        if pool.ceil_mode or pool.count_include_pad or pool.divisor_override:
            raise ValueError("ExactAvgPool2d replaces AvgPool2d(count_include_pad=False, ceil_mode=False) only")
        self.kernel, self.stride, self.pad, self.static_hw = k, s, p, static_hw
        self.register_buffer("ones_kernel", torch.ones(channels, 1, *k), persistent=False)

    def _sum(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, weight, stride=self.stride, padding=self.pad, groups=weight.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = self._sum(x, self.ones_kernel.to(x.dtype))
        if self.static_hw:
            # python ints: the tracer records the map as a constant
            h, w = int(x.shape[-2]), int(x.shape[-1])
            rows = _window_counts(h, self.kernel[0], self.stride[0], self.pad[0])
            cols = _window_counts(w, self.kernel[1], self.stride[1], self.pad[1])
            count = torch.tensor(np.outer(rows, cols)[None, None], dtype=x.dtype, device=x.device)
        else:
            count = self._sum(torch.ones_like(x[:, :1]), self.ones_kernel[:1].to(x.dtype))
        return total / count


class TwoStageInstanceNorm(nn.Module):
    """``InstanceNorm2d(affine=False)`` with its mean and variance as sums of row sums, each scaled in between.

    The scaling between the two ReduceSums keeps a runtime from merging them back into one reduction over H*W
    (OpenVINO's ReduceMerge would), which is the whole point: a float32 sum of W values, then of H row means, loses
    far less than one running sum of H*W values. The width and height are fixed when traced (a static size).
    """

    def __init__(self, norm: nn.InstanceNorm2d):
        super().__init__()
        if not self.replaces(norm):
            raise ValueError("TwoStageInstanceNorm replaces InstanceNorm2d(affine=False) without running stats")
        self.eps = float(norm.eps)

    @staticmethod
    def replaces(module: nn.Module) -> bool:
        """pix2pixHD's norm: ``InstanceNorm2d`` with no affine parameters and no running statistics."""
        return isinstance(module, nn.InstanceNorm2d) and not module.affine and not module.track_running_stats

    @staticmethod
    def _mean(t: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return t.sum(3, keepdim=True).mul(1.0 / w).sum(2, keepdim=True).mul(1.0 / h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        centred = x - self._mean(x, h, w)
        return centred / torch.sqrt(self._mean(centred * centred, h, w) + self.eps)


class RowMomentsInstanceNorm(TwoStageInstanceNorm):
    """:class:`TwoStageInstanceNorm` in one pass over the tensor for its statistics and one for its output.

    Each row gives its sum (``ReduceSum``) and its sum of squares (``ReduceL2``, squared: no runtime writes the
    squares out); the rows' means and their sums of squares about their own mean are combined exactly into the
    channel's (Chan, Golub and LeVeque's pairwise update: M2 = sum of the rows' M2 + W * sum (row mean - mean)^2),
    and the output is ``x * rstd - mean * rstd``, which a runtime fuses with the ReLU after it. The two-stage form
    writes the centred tensor (and, in OpenVINO, its square) out and reads it twice more. A row's M2 is a
    difference of two float32 sums of W values, so a row whose mean is far from zero against its spread loses
    digits there (docs/cpu.md measures how many); the channel's mean and the between-row part are as precise as
    the two-stage form's. For CPU graphs (``fast_convs``), whose convolutions before norms have no biases."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        row_sum = x.sum(3, keepdim=True)
        row_squares = torch.linalg.vector_norm(x, 2, dim=3, keepdim=True) ** 2
        row_mean = row_sum * (1.0 / w)
        # a row of one value (a uniform map's stems) can round to a tiny negative M2; the variance must not
        row_m2 = torch.clamp(row_squares - row_sum * row_mean, min=0.0)
        mean = row_mean.sum(2, keepdim=True) * (1.0 / h)
        spread = row_mean - mean
        m2 = row_m2.sum(2, keepdim=True) + (spread * spread).sum(2, keepdim=True) * w
        rstd = 1.0 / torch.sqrt(m2 * (1.0 / (h * w)) + self.eps)
        return x * rstd - mean * rstd


def drop_biases_before_norms(model: nn.Module) -> int:
    """Remove the bias of every convolution whose output goes straight into an ``InstanceNorm2d(affine=False)``
    (in place); returns how many. The norm subtracts each channel's mean, so a per-channel constant added before it
    changes nothing, in exact arithmetic; in float32 it only adds to the mean that the variance's sums must cancel
    (:class:`RowMomentsInstanceNorm` works with the raw sums of squares)."""
    dropped = 0
    for seq in (m for m in model.modules() if isinstance(m, nn.Sequential)):
        layers = list(seq)
        for conv, norm in zip(layers, layers[1:]):
            if (isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)) and conv.bias is not None
                    and TwoStageInstanceNorm.replaces(norm)):
                conv.bias = None
                dropped += 1
    return dropped


def _pair(v) -> Tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def input_channels(model: nn.Module) -> int:
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise ValueError("the model has no Conv2d; is it a pix2pixHD generator?")
    return first.in_channels


def prepare_for_export(model: nn.Module, *, rewrite_avgpool: bool = False, static_hw: bool = True,
                       fast_convs: bool = False, exact_norm: bool = False, winograd_tile: int = 2,
                       counts: Optional[Dict[str, int]] = None) -> nn.Module:
    """A float32 CPU copy of ``model`` with the export-only modules swapped in; ``model`` is not changed.

    ``fast_convs``: the CPU forms of :mod:`fastconv` (Winograd 3x3, row-sum output convolution) as well;
    ``winograd_tile``: Winograd's output tile with ``fast_convs``, 2 or 4 (:class:`WinogradConv3x3`);
    ``exact_norm``: :class:`TwoStageInstanceNorm` for every InstanceNorm2d without affine parameters
    (:class:`RowMomentsInstanceNorm`, and no biases before them, with ``fast_convs``).
    ``counts``, when given, receives how many modules of each kind were swapped in."""
    export_model = copy.deepcopy(model).float().cpu().eval()
    tally = counts if counts is not None else {}
    tally["biases_dropped"] = drop_biases_before_norms(export_model) if fast_convs and exact_norm else 0
    tally.update(rewrite_for_cpu(export_model, tile=winograd_tile) if fast_convs else {"winograd": 0, "rowsum": 0})
    tally["two_stage_norm"] = 0
    channels = input_channels(export_model)

    def choose(child: nn.Module) -> Optional[nn.Module]:
        if isinstance(child, nn.ReflectionPad2d):
            return OnnxReflectionPad2d(child)
        if exact_norm and TwoStageInstanceNorm.replaces(child):
            tally["two_stage_norm"] += 1
            return (RowMomentsInstanceNorm if fast_convs else TwoStageInstanceNorm)(child)
        if rewrite_avgpool and isinstance(child, nn.AvgPool2d) and not child.count_include_pad:
            # pix2pixHD pools only the generator input (LocalEnhancer.downsample), so C = input channels
            return ExactAvgPool2d(child, channels, static_hw=static_hw)
        return None

    replace_modules(export_model, choose)
    return export_model


def rewrite_for_export(model: nn.Module, options) -> Tuple[nn.Module, Dict[str, int]]:
    """:func:`prepare_for_export` with ``options``' rewrites, and how many modules of each kind were swapped in.

    A rewrite asked for by name (``--fast-convs``, ``--exact-norm``) that finds nothing to rewrite is a UserError;
    the default precise norms quietly do nothing in a generator without instance norms.
    """
    counts: Dict[str, int] = {}
    rewritten = prepare_for_export(model, rewrite_avgpool=options.rewrite_avgpool, static_hw=not options.dynamic_hw,
                                   fast_convs=options.fast_convs, exact_norm=options.precise_norm,
                                   winograd_tile=options.tile, counts=counts)
    for flag, given, found, wanted in (
            ("--fast-convs", options.fast_convs, counts["winograd"] + counts["rowsum"],
             "3x3 convolutions with 256+ channels after a reflection pad, or 7x7 ones with few outputs"),
            ("--exact-norm", options.exact_norm, counts["two_stage_norm"], "instance norms without affine parameters")):
        if given and not found:
            raise UserError(f"{flag} found nothing to rewrite in this generator (it rewrites {wanted})",
                            fix=f"drop {flag}")
    return rewritten, counts


def to_fp16(proto):
    """The graph in half precision, its inputs, outputs and InstanceNormalization kept float32."""
    try:
        from onnxconverter_common import float16
    except ImportError as exc:
        raise UserError("--fp16 needs the Python package 'onnxconverter-common', which is not installed",
                        fix="pip install onnxconverter-common") from exc
    block = list(float16.DEFAULT_OP_BLOCK_LIST) + list(FP16_BLOCKED_OPS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns for every weight clamped to the fp16 range
        return float16.convert_float_to_float16(proto, keep_io_types=True, op_block_list=block)
