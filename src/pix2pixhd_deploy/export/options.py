"""The export's settings as one object, checked once when it is made: :class:`ExportOptions`.

``None`` means "the default for the other settings": ``exact_norm=None`` gives precise instance norms wherever they
apply (fp32, a static size), ``tolerance=None`` / ``min_psnr=None`` give compare's preset for the graph
(:func:`..verify.check_tolerance`), ``verify_hw=None`` checks a dynamic-H/W graph at 256x512.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Tuple

from ..errors import PathLike, UserError
from ..model import forms

log = logging.getLogger(__name__)

OPSETS = range(11, 19)          # 11 (the seed's, and ATC's) .. 18, all tested
DEFAULT_OPSET = 11
CANN6_OPSETS = range(9, 14)     # CANN 5.0.4 / 6.0.x ATC: ONNX opsets 9-13; CANN 7.0: 9-18
DEFAULT_HW = (1024, 2048)
DYNAMIC_BATCH_NAME = "-1"       # the seed's symbolic name for the batch axis
DEFAULT_SOC_VERSION = "Ascend310P3"
INPUT_FORMATS = forms.INPUT_FORMATS
OUTPUT_FORMATS = forms.OUTPUT_FORMATS
FLOAT_OUTPUT_NAME = "fake_image"
UINT8_OUTPUT_NAME = "synthesized_image"


@dataclass(frozen=True)
class ExportOptions:
    """How to export a generator; see :func:`~pix2pixhd_deploy.export.export_onnx`. Defaults are the seed's."""

    # the graph: what goes in and out (formats.py)
    input_format: str = forms.TENSOR             # tensor: (N, C, H, W) float; maps: label + inst; stems: the two stems
    output_format: str = forms.FLOAT         # float: (N, 3, H, W) in [-1, 1]; uint8: the picture (N, H, W, 3)
    use_instance: bool = True                # the model has the instance-edge channel
    input_name: str = "input_concat"         # the tensor graph's input
    output_name: str = FLOAT_OUTPUT_NAME     # a uint8 graph's default is synthesized_image
    opset: int = DEFAULT_OPSET
    # the shapes
    height: int = DEFAULT_HW[0]
    width: int = DEFAULT_HW[1]
    dynamic_hw: bool = False
    dynamic_batch: bool = True
    batch: int = 1                           # the static batch, or the traced one when dynamic
    # the rewrites (rewrites.py)
    exact_norm: Optional[bool] = None        # None: precise (two-stage) norms for fp32 static-size graphs
    fast_convs: bool = False
    winograd_tile: Optional[int] = None      # with fast_convs: 2 (None: F(2x2, 3x3)) or 4 (the CPU graph's)
    rewrite_avgpool: bool = False
    fp16: bool = False
    # the check against PyTorch (verify.py)
    verify: bool = True
    tolerance: Optional[float] = None        # max abs error; None: compare's preset for this graph
    min_psnr: Optional[float] = None         # for fp16; None: compare's fp16 preset (40 dB)
    seed: int = 0                            # of the synthetic street scene
    check_map: Optional[PathLike] = None     # a real label map to check on instead of the scene
    check_inst: Optional[PathLike] = None    # its instance map
    verify_hw: Optional[Tuple[int, int]] = None
    # ATC (report.py)
    soc_version: str = DEFAULT_SOC_VERSION

    def __post_init__(self):
        if self.opset not in OPSETS:
            raise UserError(f"opset {self.opset} is not supported",
                            fix=f"use an opset from {OPSETS[0]} to {OPSETS[-1]} (11 for ATC / CANN 6, as the seed)")
        if self.batch < 1:
            raise UserError(f"the batch must be at least 1, not {self.batch}", fix="pass --batch 1 or more")
        if not self.input_name or not self.output_name or self.input_name == self.output_name:
            raise UserError(f"input and output names must be two different non-empty names, not "
                            f"{self.input_name!r} and {self.output_name!r}", fix="pass --input-name and --output-name")
        if self.input_format not in INPUT_FORMATS or self.output_format not in OUTPUT_FORMATS:
            raise UserError(f"unknown input/output format {self.input_format!r}/{self.output_format!r}",
                            fix=f"use --input-format {'|'.join(INPUT_FORMATS)} and --output-format "
                                f"{'|'.join(OUTPUT_FORMATS)}")
        self._check_cpu_forms()
        if self.fp16 and (self.input_format != forms.TENSOR or self.output_format != forms.FLOAT):
            raise UserError("fp16 export is for the plain tensor graph only",
                            fix="export fp32 with --input-format/--output-format and let the runtime pick precision "
                                "(TensorRT trt_fp16_enable, ATC --precision_mode)")
        if self.check_inst is not None and self.check_map is None:
            raise UserError("--check-inst needs --check-map (the label map it belongs to)",
                            fix="pass --check-map LABEL.png --check-inst INST.png")
        if self.tolerance is not None and not self.tolerance >= 0:
            raise UserError(f"the tolerance must be 0 or more, not {self.tolerance}", fix="pass e.g. --tolerance 1e-4")

    def _check_cpu_forms(self) -> None:
        """--fast-convs and --exact-norm, when asked for, need a static size and fp32."""
        if self.winograd_tile not in (None, 2, 4):
            raise UserError(f"--winograd-tile {self.winograd_tile} is not built", fix="pass 2 or 4")
        if self.winograd_tile is not None and not self.fast_convs:
            raise UserError("--winograd-tile applies to --fast-convs", fix="add --fast-convs, or drop --winograd-tile")
        for flag, given in (("--fast-convs", self.fast_convs), ("--exact-norm", self.exact_norm)):
            if given and self.dynamic_hw:
                raise UserError(f"{flag} needs a static height and width (its tiling or sums are fixed at export)",
                                fix=f"drop --dynamic-hw and pass --height and --width, or drop {flag}")
            if given and self.fp16:
                # fp16 keeps InstanceNormalization in float32 (its sums overflow half); these are fp32 CPU forms
                raise UserError(f"{flag} is for fp32 CPU graphs, not --fp16 ones",
                                fix=f"drop --fp16 (for a CPU) or {flag} (for a GPU or NPU)")

    @property
    def tile(self) -> int:
        """Winograd's output tile that ``fast_convs`` uses: ``winograd_tile``, or 2 when not given."""
        return self.winograd_tile or 2

    @property
    def precise_norm(self) -> bool:
        """Two-stage instance norms: asked for, or by default wherever they apply (fp32 at a static size)."""
        return self.exact_norm if self.exact_norm is not None else not (self.fp16 or self.dynamic_hw)

    @property
    def row_moment_norms(self) -> bool:
        """The CPU graph's form of the precise norms (with ``fast_convs``): rewrites.RowMomentsInstanceNorm, with no
        biases before them, the stems' included."""
        return self.fast_convs and self.precise_norm

    @property
    def graph_output_name(self) -> str:
        if self.output_format == forms.UINT8 and self.output_name == FLOAT_OUTPUT_NAME:
            return UINT8_OUTPUT_NAME
        return self.output_name

    @property
    def wrapped(self) -> bool:
        """The graph holds more than the generator: the encoding before it or the uint8 conversion after it."""
        return self.input_format != forms.TENSOR or self.output_format != forms.FLOAT

    def label_nc(self, channels: int) -> int:
        """The label classes of a generator with ``channels`` inputs (one of them the edge map with instances)."""
        return channels - 1 if self.use_instance else channels

    def notes(self) -> Tuple[str, ...]:
        """What the user should know about these settings, whatever the model."""
        out = []
        if self.opset not in CANN6_OPSETS:
            out.append(f"opset {self.opset} needs CANN 7 or later for atc: CANN 5.0.4 and 6.0.x (the seed's 6.0.RC1) "
                       f"accept ONNX opsets {CANN6_OPSETS[0]}-{CANN6_OPSETS[-1]} only (ASCEND.md §3); export with "
                       "--opset 11 for them")
        if self.fast_convs:
            out.append("--fast-convs is a CPU form (OpenVINO, ONNX Runtime CPU); for atc, TensorRT or CUDA export "
                       "without it: their convolution kernels choose Winograd or not by themselves")
        if self.dynamic_hw:
            out.append(f"height and width are dynamic; the atc commands below fix them at {self.height}x{self.width}")
        return tuple(out)
