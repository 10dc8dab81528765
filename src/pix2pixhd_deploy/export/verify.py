"""The export's proof: the graph is valid ONNX, and ONNX Runtime (CPU) computes what PyTorch fp32 computes on a
realistic scene, judged with ``compare``'s metrics and its one tolerance rule.

The scene is :func:`..synthetic.make_scene`'s street (sky, buildings, a road, cars and people with their own
instance ids: the statistics of a real Cityscapes map), or a real label / instance map pair
(``check_map`` / ``check_inst``). Uniform noise would give the instance norms statistics no real input has, and hide
the errors that real inputs show (issue 11: 4e-4 on noise, 7.6e-3 on a real map, for the same graph).

The tolerance is :func:`..compare_metrics.tolerance_for`'s, for the graph (:func:`check_tolerance`):

* fp32 float output with precise norms (the default): the ``fp32`` preset on raw outputs, max abs error <= 1e-4;
* fp32 float output with fused ``InstanceNormalization`` (``--fused-norm``, or a dynamic H/W): the ``fp32`` preset on
  the pictures, within one level (ONNX Runtime's one-pass float32 reductions cost up to about a level at full size);
* uint8 output: the ``fp32`` preset on the pictures (a float difference of 1e-6 can move a value across a level);
* fp16: the ``fp16`` preset on raw outputs, PSNR >= 40 dB (peak 2.0) and at most 1% of pixels over a level off.

An explicit ``tolerance`` (max abs error) or ``min_psnr`` replaces the preset's limit, as in ``compare``.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

from ..compare.metrics import (
    CHECKS,
    Check,
    ImageComparison,
    Tolerance,
    compare_arrays,
    format_figure,
    summarise_checks,
    tolerance_for,
)
from ..data.synthetic import scene_maps
from ..errors import UserError
from ..model import forms
from ..model.decoding import tensor2im
from .options import ExportOptions

log = logging.getLogger(__name__)

VERIFY_DYNAMIC_HW = (256, 512)  # check size of a graph with dynamic H and W
#: how a failed figure reads in the error
FIGURE_WORDS = {"max_abs": "max abs error", "psnr_db": "PSNR", "ssim": "SSIM",
                "over_one_level_share": "share of pixels more than one level off"}
#: the export's flag for a figure's limit, where it has one
EXPORT_FLAGS = {"max_abs": "--tolerance", "psnr_db": "--min-psnr"}


# -------------------------------------------------------------------------------------------- the scene

def read_check_maps(options: ExportOptions, batch: int, hw: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """The real map pair given with ``check_map`` / ``check_inst``, repeated to ``batch``; it must be ``hw``."""
    from ..data.labelmaps import read_instance_map, read_label_map

    label = read_label_map(options.check_map, base=1)
    inst = read_instance_map(options.check_inst, base=1) if options.check_inst is not None else label.astype(np.int32)
    for path, arr in ((options.check_map, label), (options.check_inst, inst)):
        if arr.shape != tuple(hw):
            raise UserError(f"the check map is {arr.shape[1]}x{arr.shape[0]}, but the graph is checked at "
                            f"{hw[1]}x{hw[0]}", path=path or options.check_map,
                            fix=f"pass a {hw[1]}x{hw[0]} map, or export at the map's size (--height {arr.shape[0]} "
                                f"--width {arr.shape[1]})")
    return np.repeat(label[None], batch, 0), np.repeat(inst[None], batch, 0)


def seeded_maps(batch: int, height: int, width: int, seed: int = 0,
                label_nc: int = 35) -> Tuple[np.ndarray, np.ndarray]:
    """Reproducible block maps, for tests: (N, H, W) uint8 ids and (N, H, W) int32 instance ids.

    Regions are 16x16-pixel blocks of random label ids (a third of them split into instances), so the one-hot
    channels are sparse and the edge channel is thin lines.
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
    """:func:`seeded_maps` encoded (one-hot + instance edges): a generator input (N, C, H, W) float32."""
    from ..model.encoding import encode_input

    label_nc = channels - 1 if channels > 1 else channels
    use_instance = channels > 1
    labels, insts = seeded_maps(batch, height, width, seed, label_nc)
    out = np.empty((batch, channels, height, width), dtype=np.float32)
    for n in range(batch):
        out[n] = encode_input(labels[n], insts[n] if use_instance else None, label_nc)
    return out


# ------------------------------------------------------------------------------------- ONNX and ORT

def check_graph(proto, *, path=None):
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


# ------------------------------------------------------------------------------------------ the verdict

def check_tolerance(options: ExportOptions, fused_norms: bool) -> Tuple[Tolerance, str, str]:
    """(tolerance, units, why) for this graph: compare's preset, see the module docstring."""
    if options.fp16:
        return (tolerance_for("fp16", "raw", min_psnr=options.min_psnr), "raw",
                "fp16: compare's fp16 preset on the raw output")
    if options.output_format == forms.UINT8:
        return (tolerance_for("fp32", "levels", atol=options.tolerance), "levels",
                "uint8 pictures: compare's fp32 preset for pictures, within one level")
    if fused_norms and options.tolerance is None:
        return (tolerance_for("fp32", "levels"), "levels",
                "fused InstanceNormalization: compare's fp32 preset on the pictures, within one level")
    return (tolerance_for("fp32", "raw", atol=options.tolerance), "raw",
            "compare's fp32 preset on the raw output" + (", --tolerance given" if options.tolerance is not None else ""))


@dataclass
class ExportCheck:
    """What the check compared and found: the worst figures over the batch, and the verdict."""

    input: str
    shape: Tuple[int, ...]
    tolerance: Tolerance
    units: str
    why: str
    figures: ImageComparison               # the worst sample's, in ``units``
    raw_max_abs: Optional[float] = None    # float outputs: the max abs error in [-1, 1] units, whatever ``units``
    checks: List[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


def _fp32_cpu(model: nn.Module) -> nn.Module:
    """The model in float32 on the CPU, in eval mode; a copy when it is not already so (the caller's stays)."""
    p = next(model.parameters(), None)
    if p is not None and (p.dtype != torch.float32 or p.device.type != "cpu"):
        model = copy.deepcopy(model).float().cpu()
    return model.eval()


def _judge(reference: np.ndarray, got: np.ndarray, options: ExportOptions, fused_norms: bool,
           description: str, shape: Tuple[int, ...]) -> ExportCheck:
    """Each sample compared with compare's metrics, the batch checked with its rule; the worst sample is kept."""
    tol, units, why = check_tolerance(options, fused_norms)
    float_out = options.output_format == forms.FLOAT
    results = []
    for n in range(reference.shape[0]):
        a, b = reference[n], got[n]
        if float_out and units == "levels":
            a, b = tensor2im(a), tensor2im(b)
        results.append(compare_arrays(a, b, units, name=f"sample {n}", with_ssim=tol.min_ssim is not None)[0])
    worst = max(results, key=lambda r: r.max_abs)
    raw = float(np.abs(reference.astype(np.float64) - got).max()) if float_out else None
    return ExportCheck(description, shape, tol, units, why, worst, raw, summarise_checks(results, tol))


def verify_graph(data: bytes, model: nn.Module, fmt, options: ExportOptions, batch: int, hw: Tuple[int, int],
                 fused_norms: bool) -> ExportCheck:
    """Run the graph in ONNX Runtime and the model in PyTorch on the check scene, and judge; see the docstring."""
    from ..model.decoding import tensor2im_torch

    if options.check_map is not None:
        labels, insts = read_check_maps(options, batch, hw)
        description = f"the map {Path(options.check_map).name}"
    else:
        labels, insts = scene_maps(batch, *hw, seed=options.seed, label_nc=fmt.label_nc)
        description = f"a street scene (seed {options.seed})"
    insts = insts if options.use_instance else None
    encoded = fmt.encode(labels, insts)
    with torch.inference_mode():
        reference = _fp32_cpu(model)(torch.from_numpy(encoded))
        reference = (tensor2im_torch(reference) if options.output_format == forms.UINT8 else reference).numpy()
    feeds = fmt.feeds(labels, insts, encoded)
    del encoded
    got = run_onnxruntime_cpu(data, feeds)
    if got.shape != reference.shape or got.dtype != reference.dtype:
        raise UserError(f"the exported graph gives {got.dtype} {got.shape}, PyTorch {reference.dtype} "
                        f"{reference.shape}", fix="please report this with the export options used")
    shape = tuple(next(iter(feeds.values())).shape)
    check = _judge(reference, got, options, fused_norms, description, shape)
    log.info("ONNX Runtime vs PyTorch on %s: max abs %.3g, mean abs %.3g, PSNR %.2f dB (%s)", description,
             check.figures.max_abs, check.figures.mean_abs, check.figures.psnr_db, check.units)
    return check


def failure_error(check: ExportCheck, options: ExportOptions, path) -> UserError:
    """The one-line error of a failed check: each failed figure against its limit, and the limit that would pass."""
    unit = " levels" if check.units == "levels" else ""
    parts = []
    for c in check.checks:
        if not c.passed:
            rel, words = (">", "tolerance") if CHECKS[c.figure][2] else ("<", "minimum")
            flag = EXPORT_FLAGS.get(c.figure) if check.units == "raw" else None
            parts.append(f"{FIGURE_WORDS[c.figure]} {format_figure(c.worst)} {rel} {words} {format_figure(c.limit)}"
                         + (f" ({flag} {format_figure(c.would_pass)} would pass)" if flag else ""))
    if options.fp16:
        fix = ("export fp32 and let the runtime pick precision (ATC --precision_mode, TensorRT trt_fp16_enable), or "
               "lower --min-psnr if this is acceptable")
    elif check.units == "levels" and options.output_format == forms.FLOAT:
        fix = "drop --fused-norm (precise norms keep ONNX Runtime within 1e-4 of PyTorch), or pass --tolerance"
    elif options.output_format == forms.UINT8:
        fix = "try another --opset, or export the float output"
    else:
        fix = "try another --opset; if the error is small and you accept it, pass --tolerance"
    return UserError(f"the graph does not match PyTorch on {check.input} ({check.why}): {'; '.join(parts)} (mean "
                     f"abs error {check.figures.mean_abs:.3g}{unit}); nothing was written", path=path, fix=fix)
