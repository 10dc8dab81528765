"""Export the generator to ONNX, and prove the file computes what PyTorch computes before it is kept.

In:  a generator (``nn.Module``, a loaded checkpoint, or a ``latest_net_G.pth`` / its folder).
Out: one ``.onnx`` file, input ``input_concat`` float32 (N, 36, H, W), output ``fake_image`` float32 (N, 3, H, W)
in [-1, 1] (names, batch and size are settings), and an :class:`ExportReport`.

Defaults are the seed's ``pix2pixhd_pth2onnx.py`` (ASCEND.md §1.4): opset 11, a dynamic batch axis named ``-1``,
static 1024x2048. Nothing is written under the final name until the graph has passed ``onnx.checker``, strict
shape inference and one ONNX Runtime (CPU) run on a seeded input that is compared with PyTorch fp32: the max abs
error must be within ``tolerance`` (1e-4, see :func:`default_tolerance` for images over 512x1024), or, for an fp16
export, the PSNR at least ``min_psnr`` (40 dB, peak 2.0 on the [-1, 1] output).

Two graph details differ from a plain ``torch.onnx.export``, both proven by that comparison:

* ``ReflectionPad2d`` is exported as one ``Pad(mode=reflect)`` with constant pads. Recent torch emits a small
  pads-computing subgraph (a Slice with step -1 that its constant folding skips); a constant is what every
  runtime, and ATC's Pad (ASCEND.md §3), expects.
* ``rewrite_avgpool``: the local enhancer's ``AvgPool2d(3, 2, 1, count_include_pad=False)`` becomes a window sum
  (a depthwise Conv with ones) divided by the number of in-image pixels in each window. ATC documents
  ``count_include_pad`` as unsupported (ASCEND.md §3); the rewrite needs only Conv and Div.

``exact_norm``: each ``InstanceNorm2d`` becomes :class:`TwoStageInstanceNorm`, whose means are sums of row sums.
OpenVINO and ONNX Runtime's CPU kernels reduce the 2M values of a full-size channel in one float32 pass and lose
precision (one layer: 8.8e-5 and 2.4e-4 from float64, against 9e-7 in torch; up to 3e-3 after a convolution in
OpenVINO); with two stages they are within 1.2e-6 and 4.6e-6, and the picture within one level of torch's on
0.03% of values instead of 5%.

fp16 (``fp16=True``): weights and activations in half precision through onnxconverter-common, with the inputs and
outputs kept float32 and ``InstanceNormalization`` kept in float32 (its variance over 2M pixels overflows half).
"""
from __future__ import annotations

import copy
import inspect
import io
import json
import logging
import math
import shlex
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .encoding import encode_input_torch
from .errors import PathLike, UserError
from .fastconv import replace_modules, rewrite_for_cpu
from .fileio import atomic_write_bytes, ensure_output_dir
from .network import GeneratorConfig, LoadedGenerator, generator_input_size, load_generator
from .postprocess import tensor2im_torch

log = logging.getLogger(__name__)

OPSETS = range(11, 19)          # 11 (the seed's, and ATC's) .. 18, all tested
DEFAULT_OPSET = 11
DEFAULT_HW = (1024, 2048)
DYNAMIC_BATCH_NAME = "-1"       # the seed's symbolic name for the batch axis
DEFAULT_SOC_VERSION = "Ascend310P3"
ATC_BATCHES = (1, 4, 8)         # the batch sizes the seed's guide reports
ATC_MAX_OPSET_CANN6 = 13        # CANN 5.0.4 / 6.0.x ATC: ONNX opsets 9-13; CANN 7.0: 9-18
FP16_BLOCKED_OPS = ("InstanceNormalization",)
VERIFY_DYNAMIC_HW = (256, 512)  # verification size for a graph with dynamic H and W
PSNR_PEAK = 2.0                 # the output's range [-1, 1]
DEFAULT_TOLERANCE = 1e-4        # max abs error, fp32, up to TOLERANCE_PIXELS per channel
TOLERANCE_PIXELS = 512 * 1024


def default_tolerance(height: int, width: int) -> float:
    """1e-4, scaled up in proportion to the pixel count beyond 512x1024 (4e-4 at the seed's 1024x2048).

    The difference to PyTorch at large sizes is ONNX Runtime's own float32 arithmetic, not the graph: its CPU
    reductions (the per-channel means and variances of InstanceNormalization) lose precision in proportion to the
    number of pixels summed. Measured with ORT 1.32: one InstanceNormalization over 1024x2048 (mean 0.3, std 0.05)
    is 2.1e-4 from a float64 result, where torch's is 6e-7; the label2city generator (seeded random weights) is
    1.35e-5 from PyTorch at 256x512 and 1.63e-4 at 1024x2048. A broken graph is off by far more than either.
    """
    return DEFAULT_TOLERANCE * max(1.0, height * width / TOLERANCE_PIXELS)


# ------------------------------------------------------------------------------------ export-only modules

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


def _pair(v) -> Tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _input_channels(model: nn.Module) -> int:
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise ValueError("the model has no Conv2d; is it a pix2pixHD generator?")
    return first.in_channels


def prepare_for_export(model: nn.Module, *, rewrite_avgpool: bool = False, static_hw: bool = True,
                       fast_convs: bool = False, exact_norm: bool = False,
                       counts: Optional[Dict[str, int]] = None) -> nn.Module:
    """A float32 CPU copy of ``model`` with the export-only modules swapped in; ``model`` is not changed.

    ``fast_convs``: the CPU forms of :mod:`fastconv` (Winograd 3x3, row-sum output convolution) as well;
    ``exact_norm``: :class:`TwoStageInstanceNorm` for every InstanceNorm2d without affine parameters.
    ``counts``, when given, receives how many modules of each kind were swapped in."""
    export_model = copy.deepcopy(model).float().cpu().eval()
    tally = counts if counts is not None else {}
    tally.update(rewrite_for_cpu(export_model) if fast_convs else {"winograd": 0, "rowsum": 0})
    tally["two_stage_norm"] = 0
    channels = _input_channels(export_model)

    def choose(child: nn.Module) -> Optional[nn.Module]:
        if isinstance(child, nn.ReflectionPad2d):
            return OnnxReflectionPad2d(child)
        if exact_norm and TwoStageInstanceNorm.replaces(child):
            tally["two_stage_norm"] += 1
            return TwoStageInstanceNorm(child)
        if rewrite_avgpool and isinstance(child, nn.AvgPool2d) and not child.count_include_pad:
            # pix2pixHD pools only the generator input (LocalEnhancer.downsample), so C = input channels
            return ExactAvgPool2d(child, channels, static_hw=static_hw)
        return None

    replace_modules(export_model, choose)
    return export_model


# ---------------------------------------------------------------------------------- verification input

def seeded_maps(batch: int, height: int, width: int, seed: int = 0,
                label_nc: int = 35) -> Tuple[np.ndarray, np.ndarray]:
    """Reproducible label and instance maps: (N, H, W) uint8 ids and (N, H, W) int32 instance ids.

    Regions are 16x16-pixel blocks of random label ids (a third of them split into instances), so the one-hot
    channels are sparse and the edge channel is thin lines, as in real Cityscapes inputs; uniform noise would give
    instance-norm statistics no real input has.
    """
    rng = np.random.default_rng(seed)
    block = 16
    gh, gw = -(-height // block), -(-width // block)
    labels = np.empty((batch, height, width), dtype=np.uint8)
    insts = np.empty((batch, height, width), dtype=np.int32)
    for n in range(batch):
        ids = rng.integers(0, min(label_nc, 34), size=(gh, gw))
        inst = ids * 1000 + rng.integers(0, 3, size=(gh, gw)) * (rng.random((gh, gw)) < 0.33)
        labels[n] = np.kron(ids, np.ones((block, block), dtype=ids.dtype))[:height, :width]
        insts[n] = np.kron(inst, np.ones((block, block), dtype=inst.dtype))[:height, :width]
    return labels, insts


def seeded_input(channels: int, batch: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """A realistic generator input, reproducible: :func:`seeded_maps` encoded (one-hot + instance edges)."""
    from .encoding import encode_input

    label_nc = channels - 1 if channels > 1 else channels
    use_instance = channels > 1
    labels, insts = seeded_maps(batch, height, width, seed, label_nc)
    out = np.empty((batch, channels, height, width), dtype=np.float32)
    for n in range(batch):
        out[n] = encode_input(labels[n], insts[n] if use_instance else None, label_nc)
    return out


# ------------------------------------------------------------------------- maps-input and uint8-output graphs

INPUT_FORMATS = ("tensor", "maps", "stems")
STEMS_INPUT_NAMES = ("local_stem", "global_stem")
OUTPUT_FORMATS = ("float", "uint8")
MAPS_INPUT_NAMES = ("label", "inst")
UINT8_OUTPUT_NAME = "synthesized_image"


class Trunk(nn.Module):
    """A LocalEnhancer (one enhancer) after its two stem convolutions: from their outputs to the picture.

    ``local_stem`` is ``model1_1[1](model1_1[0](x))`` (N, ngf, H, W) and ``global_stem`` is
    ``model[1](model[0](downsample(x)))`` (N, 2 ngf, H/2, W/2); :mod:`stems` computes both from the maps.
    """

    def __init__(self, generator: nn.Module):
        super().__init__()
        if getattr(generator, "n_local_enhancers", 0) != 1:
            raise UserError("--input-format stems needs a LocalEnhancer with one local enhancer (label2city_1024p)",
                            fix="use --input-format maps or tensor for this model")
        self.global_rest = nn.Sequential(*list(generator.model)[2:])
        self.local_rest = nn.Sequential(*list(generator.model1_1)[2:])
        self.back = generator.model1_2

    def forward(self, local_stem: torch.Tensor, global_stem: torch.Tensor) -> torch.Tensor:
        return self.back(self.local_rest(local_stem) + self.global_rest(global_stem))


class DeployGraph(nn.Module):
    """The generator with the encoding before it (``maps``) and/or the uint8 conversion after it (``uint8``)."""

    def __init__(self, generator: nn.Module, *, input_format: str = "tensor", output_format: str = "float",
                 label_nc: int = 35, use_instance: bool = True):
        super().__init__()
        self.generator = Trunk(generator) if input_format == "stems" else generator
        self.stems = input_format == "stems"
        self.maps = input_format == "maps"
        self.uint8 = output_format == "uint8"
        self.label_nc = label_nc
        self.use_instance = use_instance

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.stems:
            y = self.generator(*inputs)
        else:
            dtype = next(self.generator.parameters()).dtype  # fp16 weights take an fp16 encoding
            x = (encode_input_torch(inputs[0], inputs[1] if self.use_instance else None, self.label_nc, dtype=dtype)
                 if self.maps else inputs[0])
            y = self.generator(x)
        return tensor2im_torch(y) if self.uint8 else y


@dataclass
class Comparison:
    """Numbers first: how far one output is from the reference."""

    max_abs_error: float
    mean_abs_error: float
    psnr_db: float  # peak PSNR_PEAK (the [-1, 1] range), or 255 for uint8 pictures; inf when equal
    share_differing: float = 0.0  # share of values that differ at all

    @classmethod
    def of(cls, reference: np.ndarray, output: np.ndarray, peak: float = PSNR_PEAK) -> "Comparison":
        diff = np.abs(reference.astype(np.float64) - output.astype(np.float64))
        mse = float(np.mean(diff ** 2))
        psnr = math.inf if mse == 0 else 10.0 * math.log10(peak ** 2 / mse)
        return cls(float(diff.max()), float(diff.mean()), psnr, float(np.mean(diff > 0)))


# ------------------------------------------------------------------------------------------------ report

@dataclass
class ExportReport:
    """What was exported and how well it matched PyTorch (``to_dict`` is JSON-ready)."""

    path: Path
    opset: int
    input_name: str
    output_name: str
    input_shape: Tuple[Optional[int], ...]   # None: a dynamic dimension
    output_shape: Tuple[Optional[int], ...]
    fp16: bool
    rewrite_avgpool: bool
    ops: Dict[str, int]
    size_bytes: int
    seconds: float
    verified: bool = False
    verify_shape: Optional[Tuple[int, ...]] = None
    max_abs_error: Optional[float] = None
    mean_abs_error: Optional[float] = None
    psnr_db: Optional[float] = None
    tolerance: Optional[float] = None
    min_psnr: Optional[float] = None
    atc_commands: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    fast_convs: bool = False
    exact_norm: bool = False

    @property
    def dynamic_batch(self) -> bool:
        return self.input_shape[0] is None

    @property
    def dynamic_hw(self) -> bool:
        return self.input_shape[2] is None or self.input_shape[3] is None

    def to_dict(self) -> Dict[str, object]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d

    def lines(self) -> List[str]:
        """The report as the command prints it."""
        shape = lambda s: "x".join("?" if d is None else str(d) for d in s)  # noqa: E731
        out = [f"export: {self.path} ({self.size_bytes / 2**20:.1f} MiB, {self.seconds:.1f} s), opset {self.opset}, "
               f"{'fp16 (InstanceNormalization fp32, I/O float32)' if self.fp16 else 'fp32'}"
               f"{', avgpool rewritten' if self.rewrite_avgpool else ''}"
               f"{', fast convolutions (Winograd 3x3, row-sum output conv)' if self.fast_convs else ''}"
               f"{', two-stage instance norms' if self.exact_norm else ''}",
               f"  {self.input_name} {shape(self.input_shape)} -> {self.output_name} {shape(self.output_shape)}",
               "  ops: " + ", ".join(f"{k} {v}" for k, v in sorted(self.ops.items()))]
        if self.verified:
            verdict = (f"PSNR {self.psnr_db:.2f} dB (peak 2.0 on the [-1, 1] output; needs >= {self.min_psnr:g}), "
                       f"max abs error {self.max_abs_error:.3g}" if self.fp16 else
                       f"max abs error {self.max_abs_error:.3g} (tolerance {self.tolerance:g}), "
                       f"mean {self.mean_abs_error:.3g}")
            out.append(f"  checked: onnx.checker, shape inference, ONNX Runtime CPU vs PyTorch fp32 on a seeded "
                       f"{shape(self.verify_shape)} input: {verdict}")
        else:
            out.append("  checked: onnx.checker and shape inference only (no ONNX Runtime comparison)")
        out += [f"  note: {n}" for n in self.notes]
        if self.atc_commands:
            out.append("  ATC (Ascend; run after `source /usr/local/Ascend/ascend-toolkit/set_env.sh`):")
            out += [f"    {c}" for c in self.atc_commands]
        return out


def atc_commands(onnx_file: PathLike, *, input_name: str, channels: int, height: int, width: int,
                 batch: Optional[int], soc_version: str = DEFAULT_SOC_VERSION,
                 batches: Sequence[int] = ATC_BATCHES,
                 inputs: Optional[Sequence[Tuple[str, Tuple[int, ...]]]] = None,
                 layout: Optional[str] = None) -> List[str]:
    """Ready-to-run ``atc`` lines for ``onnx_file``: one per static batch, plus a ``--dynamic_batch_size`` one.

    ``batch`` is the graph's batch (None when dynamic). A static-batch graph gets one command at that batch.
    ``inputs``: (name, per-sample shape) of every input, for graphs other than the one NCHW ``input_name``
    (the maps-input graph's (H, W) label and instance maps, given as ``--input_format=ND``).
    """
    path = Path(onnx_file)
    stem = str(path.with_suffix("")) if path.suffix.lower() == ".onnx" else str(path)
    specs = list(inputs) if inputs else [(input_name, (channels, height, width))]
    layout = layout or ("NCHW" if not inputs else "ND")

    def line(shape_batch: str, out: str, extra: str = "") -> str:
        shapes = ";".join(f"{name}:{shape_batch}," + ",".join(str(d) for d in dims) for name, dims in specs)
        return (f"atc --framework=5 --model={shlex.quote(str(path))} --input_format={layout} "
                f"--input_shape=\"{shapes}\" "
                f"--output={shlex.quote(out)} --log=error --soc_version={soc_version}{extra}")

    if batch is not None:
        return [line(str(batch), f"{stem}_bs{batch}")]
    cmds = [line(str(b), f"{stem}_bs{b}") for b in batches]
    gears = ",".join(str(b) for b in batches)
    cmds.append(line("-1", f"{stem}_dynbs", f" --dynamic_batch_size=\"{gears}\""))
    return cmds


# ------------------------------------------------------------------------------------------------ export

ModelLike = Union[nn.Module, LoadedGenerator, PathLike]


def _resolve_model(model: ModelLike) -> LoadedGenerator:
    if isinstance(model, LoadedGenerator):
        return model
    if isinstance(model, nn.Module):
        return LoadedGenerator(model, None)
    return load_generator(model)


def _require_onnx():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise UserError(f"exporting needs the Python package {exc.name!r}, which is not installed",
                        fix="pip install onnx onnxruntime onnxconverter-common "
                            "(or pip install 'pix2pixhd-deploy[onnx]')") from exc


def _torch_onnx_export(model: nn.Module, dummy: Union[torch.Tensor, Tuple[torch.Tensor, ...]], f: io.BytesIO,
                       **kwargs) -> None:
    """The TorchScript-based exporter (opset 11 needs it; the dynamo one starts at 18); its chatter goes to debug."""
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.onnx.export(model, dummy if isinstance(dummy, tuple) else (dummy,), f, **kwargs)
    for w in {str(w.message).splitlines()[0] for w in caught}:
        log.debug("torch.onnx.export: %s", w)


def _to_fp16(proto):
    try:
        from onnxconverter_common import float16
    except ImportError as exc:
        raise UserError("--fp16 needs the Python package 'onnxconverter-common', which is not installed",
                        fix="pip install onnxconverter-common") from exc
    block = list(float16.DEFAULT_OP_BLOCK_LIST) + list(FP16_BLOCKED_OPS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns for every weight clamped to the fp16 range
        return float16.convert_float_to_float16(proto, keep_io_types=True, op_block_list=block)


def _graph_shape(value_info) -> Tuple[Optional[int], ...]:
    dims = value_info.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)


def check_graph(proto, *, path: Optional[PathLike] = None):
    """``onnx.checker`` and strict shape inference; returns the inferred model. Failures are UserErrors."""
    import onnx

    try:
        onnx.checker.check_model(proto, full_check=False)
        inferred = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise UserError(f"the exported graph is not valid ONNX ({str(exc).splitlines()[0][:200]})", path=path,
                        fix="try another --opset; if that fails too, please report it with this message") from exc
    return inferred


def run_onnxruntime_cpu(model_bytes: bytes, input_name: Union[str, Dict[str, np.ndarray]],
                        x: Optional[np.ndarray] = None) -> np.ndarray:
    """One run of a serialised model on ONNX Runtime's CPU provider (all graph optimisations on).

    ``input_name`` and ``x``, or one dict of feeds (name -> array) for a graph with several inputs."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    session = ort.InferenceSession(model_bytes, sess_options=opts, providers=["CPUExecutionProvider"])
    feeds = input_name if isinstance(input_name, dict) else {input_name: x}
    return session.run(None, feeds)[0]


def export_onnx(model_or_checkpoint: ModelLike, output_file: PathLike, *, opset: int = DEFAULT_OPSET,
                dynamic_batch: bool = True, batch: int = 1, height: int = DEFAULT_HW[0], width: int = DEFAULT_HW[1],
                dynamic_hw: bool = False, input_name: str = "input_concat", output_name: str = "fake_image",
                fp16: bool = False, rewrite_avgpool: bool = False, verify: bool = True, tolerance: Optional[float] = None,
                min_psnr: float = 40.0, seed: int = 0, soc_version: str = DEFAULT_SOC_VERSION,
                verify_hw: Optional[Tuple[int, int]] = None, input_format: str = "tensor",
                output_format: str = "float", use_instance: bool = True, fast_convs: bool = False,
                exact_norm: bool = False) -> ExportReport:
    """Export, check and (only then) write ``output_file``; see the module docstring.

    ``tolerance``: the max abs error allowed for fp32; None means :func:`default_tolerance` at the checked size.
    ``batch`` is the static batch when ``dynamic_batch`` is False (and the traced batch otherwise); ``height`` and
    ``width`` are the static size, or the traced size when ``dynamic_hw``. ``verify_hw`` is the size of the ONNX
    Runtime check for a dynamic-H/W graph (default 256x512); a static graph is checked at its own size.

    ``input_format="maps"``: the graph takes the label map (N, H, W) uint8 and the instance map (N, H, W) int32
    (inputs ``label`` and ``inst``; ``use_instance=False`` for a model without the edge channel) and encodes them
    itself, so a caller feeds a few MiB per image instead of a 288 MiB tensor. ``output_format="uint8"``: the
    graph ends with upstream's ``tensor2im`` and outputs the picture, (N, H, W, 3) uint8 (default name
    ``synthesized_image``). Both are checked against the same computation in PyTorch (for uint8, to within one
    level: a float difference of 1e-6 can move a value across a truncation boundary).
    ``fast_convs``: the large 3x3 convolutions as Winograd F(2x2, 3x3) and the output convolution as row sums
    (:mod:`fastconv`), about 1.4x faster on CPUs (OpenVINO, ONNX Runtime); ``exact_norm``: instance norms as
    two-stage sums (:class:`TwoStageInstanceNorm`), torch's accuracy in those runtimes. Both need a static size.
    Raises :class:`UserError` when a setting is impossible or the graph does not match PyTorch.
    """
    start = time.perf_counter()
    out_path = Path(output_file)
    if opset not in OPSETS:
        raise UserError(f"opset {opset} is not supported", fix=f"use an opset from {OPSETS[0]} to {OPSETS[-1]} "
                                                             f"(11 for ATC / CANN 6, as the seed)")
    if batch < 1:
        raise UserError(f"the batch must be at least 1, not {batch}", fix="pass --batch 1 or more")
    if not input_name or not output_name or input_name == output_name:
        raise UserError(f"input and output names must be two different non-empty names, not "
                        f"{input_name!r} and {output_name!r}", fix="pass --input-name and --output-name")
    if input_format not in INPUT_FORMATS or output_format not in OUTPUT_FORMATS:
        raise UserError(f"unknown input/output format {input_format!r}/{output_format!r}",
                        fix=f"use --input-format {'|'.join(INPUT_FORMATS)} and --output-format "
                            f"{'|'.join(OUTPUT_FORMATS)}")
    for flag, given in (("--fast-convs", fast_convs), ("--exact-norm", exact_norm)):
        if given and dynamic_hw:
            raise UserError(f"{flag} needs a static height and width (its tiling or sums are fixed at export)",
                            fix=f"drop --dynamic-hw and pass --height and --width, or drop {flag}")
        if given and fp16:
            # fp16 keeps InstanceNormalization in float32 (its sums overflow half); these are fp32 CPU forms
            raise UserError(f"{flag} is for fp32 CPU graphs, not --fp16 ones",
                            fix=f"drop --fp16 (for a CPU) or {flag} (for a GPU or NPU)")
    wrapped = input_format != "tensor" or output_format != "float"
    if wrapped and fp16:
        raise UserError("fp16 export is for the plain tensor graph only",
                        fix="export fp32 with --input-format/--output-format and let the runtime pick precision "
                            "(TensorRT trt_fp16_enable, ATC --precision_mode)")
    if output_format == "uint8" and output_name == "fake_image":
        output_name = UINT8_OUTPUT_NAME
    if out_path.is_dir():
        raise UserError("the output is an existing folder", path=out_path,
                        fix="pass a file name, e.g. pix2pixhd.onnx")
    if out_path.suffix.lower() != ".onnx":
        log.warning("%s does not end in .onnx; ATC and most tools expect it to", out_path)
    _require_onnx()
    import onnx

    loaded = _resolve_model(model_or_checkpoint)
    model, config = loaded.model, loaded.config
    channels = config.input_nc if config else _input_channels(model)
    if config:
        generator_input_size(config, height, width)
    ensure_output_dir(out_path.parent, what="folder for the ONNX file")

    # trace at the static size; a dynamic-H/W graph is traced at the (smaller) verification size
    trace_hw = (height, width)
    if dynamic_hw:
        trace_hw = verify_hw or _small_hw(config, height, width)
        if config:
            generator_input_size(config, *trace_hw)
    trace_batch = batch
    swapped: Dict[str, int] = {}
    export_model = prepare_for_export(model, rewrite_avgpool=rewrite_avgpool, static_hw=not dynamic_hw,
                                      fast_convs=fast_convs, exact_norm=exact_norm, counts=swapped)
    for flag, given, found, wanted in (
            ("--fast-convs", fast_convs, swapped["winograd"] + swapped["rowsum"],
             "3x3 convolutions with 256+ channels after a reflection pad, or 7x7 ones with few outputs"),
            ("--exact-norm", exact_norm, swapped["two_stage_norm"], "instance norms without affine parameters")):
        if given and not found:
            raise UserError(f"{flag} found nothing to rewrite in this generator (it rewrites {wanted})",
                            fix=f"drop {flag}")
    rewritten = (f"rewritten: {swapped['winograd']} Winograd 3x3 and {swapped['rowsum']} row-sum convolutions, "
                 f"{swapped['two_stage_norm']} two-stage instance norms")
    if fast_convs or exact_norm:
        log.info(rewritten)
    label_nc = channels - 1 if use_instance else channels
    if wrapped:
        export_model = DeployGraph(export_model, input_format=input_format, output_format=output_format,
                                   label_nc=label_nc, use_instance=use_instance).eval()
    if input_format == "stems":
        from .stems import StemWeights

        # once, for the check and the sidecar file (it copies each tensor to float32 on the CPU itself)
        stem_weights = StemWeights.from_generator(model, label_nc, use_instance)
        input_names = list(STEMS_INPUT_NAMES)
        ngf = config.ngf if config else model.model1_1[1].out_channels
        hh, hw = (trace_hw[0] - 1) // 2 + 1, (trace_hw[1] - 1) // 2 + 1
        dummy = (torch.zeros(trace_batch, ngf, *trace_hw), torch.zeros(trace_batch, 2 * ngf, hh, hw))
        hw_axes_in = {2: "height", 3: "width"}
    elif input_format == "maps":
        input_names = list(MAPS_INPUT_NAMES[:2 if use_instance else 1])
        dummy = tuple(torch.zeros(trace_batch, *trace_hw, dtype=dt)
                      for dt in (torch.uint8, torch.int32)[:len(input_names)])
        hw_axes_in = {1: "height", 2: "width"}
    else:
        input_names = [input_name]
        dummy = torch.zeros(trace_batch, channels, *trace_hw)
        hw_axes_in = {2: "height", 3: "width"}
    hw_axes_out = {1: "height", 2: "width"} if output_format == "uint8" else {2: "height", 3: "width"}
    axes: Dict[str, Dict[int, str]] = {}
    for name, hw_axes in [(n, hw_axes_in) for n in input_names] + [(output_name, hw_axes_out)]:
        axes[name] = {0: DYNAMIC_BATCH_NAME} if dynamic_batch else {}
        if dynamic_hw:
            axes[name].update({k: f"{v}_half" if name == "global_stem" else v for k, v in hw_axes.items()})
    buffer = io.BytesIO()
    log.info("exporting opset %d, input %s, %s output, batch %d, %dx%d", opset, ",".join(input_names),
             output_format, trace_batch, trace_hw[1], trace_hw[0])
    _torch_onnx_export(export_model, dummy, buffer, input_names=input_names, output_names=[output_name],
                       dynamic_axes={k: v for k, v in axes.items() if v} or None, opset_version=opset,
                       do_constant_folding=True, export_params=True)
    del export_model
    proto = onnx.load_from_string(buffer.getvalue())
    del buffer
    if fp16:
        proto = _to_fp16(proto)
    proto.producer_name = "pix2pixhd-deploy"
    # provenance inside the file: what it was made from and how
    props = {"pix2pixhd.export": json.dumps({"opset": opset, "fp16": fp16, "rewrite_avgpool": rewrite_avgpool,
                                             "fast_convs": fast_convs, "exact_norm": exact_norm,
                                             "input_format": input_format, "output_format": output_format,
                                             "label_nc": label_nc, "use_instance": use_instance,
                                             "torch": torch.__version__})}
    if config:
        props["pix2pixhd.generator_config"] = json.dumps(config.to_dict())
    if loaded.path:
        props["pix2pixhd.checkpoint_sha256"] = loaded.sha256()
    onnx.helper.set_model_props(proto, props)

    inferred = check_graph(proto, path=out_path)
    in_shape = _graph_shape(inferred.graph.input[0])
    out_shape = _graph_shape(inferred.graph.output[0])
    ops: Dict[str, int] = {}
    exclusive_pool = False
    for node in proto.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
        if node.op_type == "AveragePool":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            exclusive_pool |= not attrs.get("count_include_pad", 0)
    data = proto.SerializeToString()
    del proto, inferred

    report = ExportReport(path=out_path, opset=opset, input_name=",".join(input_names), output_name=output_name,
                          input_shape=in_shape, output_shape=out_shape, fp16=fp16, rewrite_avgpool=rewrite_avgpool,
                          ops=ops, size_bytes=len(data), seconds=0.0, min_psnr=min_psnr if fp16 else None,
                          fast_convs=fast_convs, exact_norm=exact_norm)
    if fast_convs or exact_norm:
        report.notes.append(rewritten)
    if verify:
        vb = batch if not dynamic_batch else 1
        vhw = trace_hw
        if tolerance is None:
            tolerance = default_tolerance(*vhw)
        report.tolerance = None if fp16 else tolerance
        reference_model = _fp32_cpu(model)
        if input_format in ("stems", "maps"):
            labels, insts = seeded_maps(vb, *vhw, seed=seed, label_nc=label_nc)
            if input_format == "stems":
                from .stems import StemComputer

                feeds = dict(zip(input_names, StemComputer(stem_weights)(labels, insts if use_instance else None)))
            else:
                feeds = dict(zip(input_names, (labels, insts)))
            verify_shape = tuple(labels.shape)
            with torch.inference_mode():
                x = encode_input_torch(torch.from_numpy(labels), torch.from_numpy(insts) if use_instance else None,
                                      label_nc)
                reference = reference_model(x)
        else:
            x_np = seeded_input(channels, vb, *vhw, seed=seed)
            feeds, verify_shape = {input_names[0]: x_np}, tuple(x_np.shape)
            with torch.inference_mode():
                reference = reference_model(torch.from_numpy(x_np))
        with torch.inference_mode():
            reference = (tensor2im_torch(reference) if output_format == "uint8" else reference).numpy()
        got = run_onnxruntime_cpu(data, feeds)
        if got.shape != reference.shape or got.dtype != reference.dtype:
            raise UserError(f"the exported graph gives {got.dtype} {got.shape}, PyTorch {reference.dtype} "
                            f"{reference.shape}", path=out_path, fix="please report this with the export options used")
        cmp = Comparison.of(reference, got, peak=255.0 if output_format == "uint8" else PSNR_PEAK)
        report.verified, report.verify_shape = True, verify_shape
        report.max_abs_error, report.mean_abs_error, report.psnr_db = (cmp.max_abs_error, cmp.mean_abs_error,
                                                                       cmp.psnr_db)
        log.info("ONNX Runtime vs PyTorch: max abs %.3g, mean abs %.3g, PSNR %.2f dB", cmp.max_abs_error,
                 cmp.mean_abs_error, cmp.psnr_db)
        if output_format == "uint8":
            # a float difference of ~1e-6 can move a value across a truncation boundary: one level is allowed
            report.tolerance = 1.0
            report.notes.append(f"uint8 output: {cmp.share_differing:.4%} of values differ from PyTorch's, by one "
                                "level at most")
            if cmp.max_abs_error > 1:
                raise UserError(f"the uint8 graph differs from PyTorch by {cmp.max_abs_error:g} levels (more than "
                                f"one); nothing was written", path=out_path,
                                fix="try another --opset, or export the float output")
        elif fp16 and not cmp.psnr_db >= min_psnr:
            raise UserError(f"the fp16 graph is too far from PyTorch fp32: PSNR {cmp.psnr_db:.2f} dB < {min_psnr:g} "
                            f"dB (max abs error {cmp.max_abs_error:.3g}); nothing was written", path=out_path,
                            fix="export fp32 and let the runtime pick precision (ATC --precision_mode, TensorRT "
                                "trt_fp16_enable), or lower --min-psnr if this is acceptable")
        elif not fp16 and not cmp.max_abs_error <= tolerance:
            raise UserError(f"the graph does not match PyTorch: max abs error {cmp.max_abs_error:.3g} > tolerance "
                            f"{tolerance:g} (mean {cmp.mean_abs_error:.3g}); nothing was written", path=out_path,
                            fix="try another --opset; if the error is small and you accept it, pass --tolerance")

    if exclusive_pool:
        report.notes.append("the graph has AveragePool with count_include_pad=0, which ATC documents as unsupported "
                            "(ASCEND.md §3); if atc rejects it or the NPU output differs at the borders, export "
                            "again with --rewrite-avgpool (an exact equivalent made of Conv and Div)")
    if fast_convs:
        report.notes.append("--fast-convs is a CPU form (OpenVINO, ONNX Runtime CPU); for atc, TensorRT or CUDA "
                            "export without it: their convolution kernels choose Winograd or not by themselves")
    if dynamic_hw:
        report.notes.append(f"height and width are dynamic; the atc commands below fix them at {height}x{width}")
    if opset > ATC_MAX_OPSET_CANN6:
        report.notes.append(f"opset {opset} needs CANN 7 or later for atc: CANN 5.0.4 and 6.0.x (the seed's 6.0.RC1) "
                            f"accept ONNX opsets 9-{ATC_MAX_OPSET_CANN6} only (ASCEND.md §3); export with "
                            "--opset 11 for them")
    report.atc_commands = atc_commands(
        out_path, input_name=input_name, channels=channels, height=height, width=width,
        batch=None if dynamic_batch else batch, soc_version=soc_version,
        inputs=_atc_inputs(input_format, input_names, config, model, height, width),
        layout="NCHW" if input_format != "maps" else "ND")
    if input_format == "stems":
        from .stems import sidecar_path

        stem_weights.save(sidecar_path(out_path), checkpoint_sha256=props.get("pix2pixhd.checkpoint_sha256"))
        report.notes.append(f"the stem weights are in {sidecar_path(out_path).name} beside the graph: keep the two "
                            "files together; `run` computes the stems from the maps and feeds the graph")
    atomic_write_bytes(out_path, data)
    report.seconds = time.perf_counter() - start
    log.info("wrote %s", out_path)
    return report


def _atc_inputs(input_format: str, input_names: List[str], config: Optional[GeneratorConfig], model: nn.Module,
                height: int, width: int) -> Optional[List[Tuple[str, Tuple[int, ...]]]]:
    """Per-sample input shapes for the atc commands of the maps and stems graphs (None: the tensor graph)."""
    if input_format == "maps":
        return [(n, (height, width)) for n in input_names]
    if input_format == "stems":
        ngf = config.ngf if config else model.model1_1[1].out_channels
        half = ((height - 1) // 2 + 1, (width - 1) // 2 + 1)
        return [(input_names[0], (ngf, height, width)), (input_names[1], (2 * ngf, *half))]
    return None


def _fp32_cpu(model: nn.Module) -> nn.Module:
    """The model in float32 on the CPU, in eval mode; a copy when it is not already so (the caller's stays)."""
    p = next(model.parameters(), None)
    if p is not None and (p.dtype != torch.float32 or p.device.type != "cpu"):
        model = copy.deepcopy(model).float().cpu()
    return model.eval()


def _small_hw(config: Optional[GeneratorConfig], height: int, width: int) -> Tuple[int, int]:
    """The dynamic-H/W verification size: 256x512, or smaller inputs as they are, snapped to the size multiple."""
    m = config.size_multiple if config else 32
    h = max(m, min(height, VERIFY_DYNAMIC_HW[0]) // m * m)
    w = max(m, min(width, VERIFY_DYNAMIC_HW[1]) // m * m)
    return h, w
