"""What an export made and how well it matched PyTorch (:class:`ExportReport`), and the atc commands that compile it
for an Ascend NPU (:func:`atc_commands`, the seed's guide, ASCEND.md §1.4)."""
from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import PathLike
from ..model import forms
from .options import DEFAULT_SOC_VERSION

ATC_BATCHES = (1, 4, 8)         # the batch sizes the seed's guide reports


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
    verify_input: Optional[str] = None       # what the check ran on: a street scene, or a map's name
    max_abs_error: Optional[float] = None    # float outputs: in [-1, 1] units; uint8 outputs: in levels
    mean_abs_error: Optional[float] = None   # in the units of the tolerance
    psnr_db: Optional[float] = None
    max_level_diff: Optional[int] = None     # the largest difference of the pictures, in levels
    tolerance: Optional[float] = None        # the max abs error allowed, in ``tolerance_units``
    tolerance_units: Optional[str] = None    # raw ([-1, 1]) or levels (0..255)
    tolerance_rule: Optional[str] = None     # which of compare's presets, and why
    min_psnr: Optional[float] = None
    atc_commands: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    fast_convs: bool = False
    exact_norm: bool = False
    output_format: str = forms.FLOAT
    provenance: Dict[str, object] = field(default_factory=dict)  # versions, machine, the checkpoint's sha256

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

    def _norm_words(self) -> str:
        if not self.exact_norm:
            return ""
        # with the fast convolutions, the CPU form: rewrites.RowMomentsInstanceNorm, biases before norms dropped
        return ", row-moment instance norms" if self.fast_convs else ", two-stage instance norms"

    def lines(self) -> List[str]:
        """The report as the command prints it."""
        shape = lambda s: "x".join("?" if d is None else str(d) for d in s)  # noqa: E731
        out = [f"export: {self.path} ({self.size_bytes / 2**20:.1f} MiB, {self.seconds:.1f} s), opset {self.opset}, "
               f"{'fp16 (InstanceNormalization fp32, I/O float32)' if self.fp16 else 'fp32'}"
               f"{', avgpool rewritten' if self.rewrite_avgpool else ''}"
               f"{', fast convolutions (Winograd 3x3, row-sum output conv)' if self.fast_convs else ''}"
               f"{self._norm_words()}",
               f"  {self.input_name} {shape(self.input_shape)} -> {self.output_name} {shape(self.output_shape)}",
               "  ops: " + ", ".join(f"{k} {v}" for k, v in sorted(self.ops.items()))]
        out.append(self._check_line(shape))
        out += [f"  note: {n}" for n in self.notes]
        if self.atc_commands:
            out.append("  ATC (Ascend; run after `source /usr/local/Ascend/ascend-toolkit/set_env.sh`):")
            out += [f"    {c}" for c in self.atc_commands]
        return out

    def _check_line(self, shape) -> str:
        if not self.verified:
            return "  checked: onnx.checker and shape inference only (no ONNX Runtime comparison)"
        if self.fp16:
            verdict = (f"PSNR {self.psnr_db:.2f} dB (peak 2.0 on the [-1, 1] output; needs >= {self.min_psnr:g}), "
                       f"max abs error {self.max_abs_error:.3g}")
        elif self.tolerance_units == "levels":
            unit = " levels" if self.output_format == forms.UINT8 else ""
            verdict = (f"max abs error {self.max_abs_error:.3g}{unit}, pictures at most {self.max_level_diff} level(s) "
                       f"apart (tolerance {self.tolerance:g} level)")
        else:
            verdict = (f"max abs error {self.max_abs_error:.3g} (tolerance {self.tolerance:g}), "
                       f"mean {self.mean_abs_error:.3g}")
        return (f"  checked: onnx.checker, shape inference, ONNX Runtime CPU vs PyTorch fp32 on {self.verify_input}, "
                f"{shape(self.verify_shape)}: {verdict}; {self.tolerance_rule}")


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
