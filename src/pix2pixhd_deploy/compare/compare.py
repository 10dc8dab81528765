"""Compare two folders of generator outputs with numbers, and give a verdict from explicit tolerances.

In:  two folders A and B of outputs, each holding raw float32 (3, H, W) ``.bin`` / ``.npy`` files (from ``infer``,
     any runner, or ais_bench) or pictures (``.png``, ``.jpg``; from ``postprocess`` or upstream ``test.py``),
     paired by label stem (:mod:`compare_folders`).
Out: a :class:`Comparison` (per image figures, a summary, the checks and the verdict) that
     :meth:`Comparison.to_dict` turns into JSON another process can read, and :meth:`Comparison.lines` prints.

Units. When both folders hold raw outputs, errors are in the [-1, 1] units of the output. Otherwise every raw output
is first turned into its picture with upstream's ``tensor2im`` and errors are in levels (0..255). The figures, SSIM
and the tolerance presets are :mod:`compare_metrics`'.

The default preset follows the inputs: any JPEG -> ``jpeg``; otherwise ``fp32``. Explicit limits override the
preset's one by one; ``None`` means "the preset's".
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import PathLike
from .folders import JPEG_SUFFIXES, RAW_SUFFIXES, pair_outputs, read_pair
from .metrics import (
    CHECKS_FLAG,
    Check,
    ImageComparison,
    Tolerance,
    check_image,
    compare_arrays,
    format_figure,
    summarise_checks,
    tolerance_for,
)

log = logging.getLogger(__name__)


def default_preset(files_a: Sequence[Path], files_b: Sequence[Path]) -> Tuple[str, str]:
    """(preset, why) from the kinds of files: any JPEG -> jpeg; else fp32."""
    suffixes = {p.suffix.lower() for p in (*files_a, *files_b)}
    if suffixes & set(JPEG_SUFFIXES):
        return "jpeg", "JPEG pictures are lossy (q75), so they are held to PSNR and SSIM"
    if suffixes <= set(RAW_SUFFIXES):
        return "fp32", "both folders hold raw float32 outputs"
    if suffixes & set(RAW_SUFFIXES):
        return "fp32", "raw outputs against lossless pictures, compared as pictures: every pixel within one level"
    return "fp32", "lossless pictures: every pixel within one level"


@dataclass
class Comparison:
    """Everything a ``compare`` run found; ``to_dict`` is the JSON."""

    folder_a: str
    folder_b: str
    units: str
    tolerance: Tolerance
    preset_reason: str
    images: List[ImageComparison]
    checks: List[Check]
    only_a: List[str]
    only_b: List[str]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks) and all(i.passed for i in self.images)

    @property
    def units_note(self) -> str:
        return ("[-1, 1] generator output units; PSNR peak-to-peak 2.0" if self.units == "raw"
                else "picture levels 0..255; PSNR peak 255")

    def summary(self) -> Dict[str, Dict[str, Optional[float]]]:
        """Per figure over all images: the worst value, the median and the mean."""
        out: Dict[str, Dict[str, Optional[float]]] = {}
        for figure, higher_is_worse in (("max_abs", True), ("mean_abs", True), ("median_abs", True),
                                        ("p99_abs", True), ("psnr_db", False), ("ssim", False),
                                        ("differing_share", True), ("over_one_level_share", True),
                                        ("max_level_diff", True)):
            values = [getattr(i, figure) for i in self.images if getattr(i, figure) is not None]
            if not values:
                out[figure] = {"worst": None, "median": None, "mean": None}
                continue
            arr = np.asarray(values, dtype=np.float64)
            worst = arr.max() if higher_is_worse else arr.min()
            mean = float(arr.mean()) if np.isfinite(arr).all() else (math.inf if figure == "psnr_db" else None)
            out[figure] = {"worst": float(worst), "median": float(np.median(arr)), "mean": mean}
        return out

    def to_dict(self) -> Dict[str, object]:
        from ..provenance import machine, versions
        from ..version import __version__

        return _json_safe({
            "tool": "pix2pixhd-deploy compare",
            "version": __version__,
            "versions": versions(),
            "machine": machine(),
            "a": self.folder_a,
            "b": self.folder_b,
            "units": self.units,
            "units_note": self.units_note,
            "preset": self.tolerance.preset,
            "preset_reason": self.preset_reason,
            "tolerance": asdict(self.tolerance),
            "passed": self.passed,
            "checks": [{**asdict(c), "would_pass": c.would_pass} for c in self.checks],
            "images_compared": len(self.images),
            "images_failed": sum(not i.passed for i in self.images),
            "summary": self.summary(),
            "unpaired": {"only_a": self.only_a, "only_b": self.only_b},
            "images": [asdict(i) for i in self.images],
        })

    def lines(self) -> List[str]:
        """What the command prints: the preset, one line per image, the summary, the verdict."""
        s = self.summary()
        unit = "" if self.units == "raw" else " levels"
        out = [f"compare: {len(self.images)} image pairs, errors in "
               f"{'raw [-1, 1] units' if self.units == 'raw' else 'levels (0..255)'}; tolerance preset "
               f"{self.tolerance.preset} ({self.preset_reason})"]
        f = format_figure
        for i in self.images:
            out.append(f"  {i.name}: max abs {f(i.max_abs)}{unit}, mean abs {f(i.mean_abs)}{unit}, "
                       f"PSNR {f(i.psnr_db)} dB, SSIM {f(i.ssim)}, >1 level {i.over_one_level_share:.4%}"
                       + (f"  FAIL: {'; '.join(i.failures)}" if i.failures else ""))
        out.append(f"summary: max abs {f(s['max_abs']['worst'])}{unit}, mean abs {f(s['mean_abs']['mean'])}{unit}, "
                   f"worst PSNR {f(s['psnr_db']['worst'])} dB, worst SSIM {f(s['ssim']['worst'])}, "
                   f"worst >1 level {f(s['over_one_level_share']['worst'])}")
        if self.only_a or self.only_b:
            out.append(f"unpaired (allowed): {len(self.only_a)} only in A, {len(self.only_b)} only in B")
        out.extend("  " + c.line() for c in self.checks)
        out.append("verdict: PASS" if self.passed else "verdict: FAIL")
        return out


def _json_safe(obj):
    """JSON has no infinity: an infinite PSNR is written as the string "inf"."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "inf" if obj > 0 else ("-inf" if obj < 0 else None)
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


#: called per pair with (figures, picture A (H, W, 3) uint8, picture B, largest channel error in levels (H, W))
ImageVisitor = Callable[[ImageComparison, np.ndarray, np.ndarray, np.ndarray], None]


def compare_dirs(folder_a: PathLike, folder_b: PathLike, *, preset: Optional[str] = None,
                 atol: Optional[float] = None, min_psnr: Optional[float] = None, min_ssim: Optional[float] = None,
                 max_diff_share: Optional[float] = None, size: Optional[Tuple[int, int]] = None,
                 allow_missing: bool = False, on_image: Optional[ImageVisitor] = None,
                 show_progress: bool = True) -> Comparison:
    """Compare the outputs in two folders, paired by label stem; see the module docstring.

    ``size`` (H, W) of raw outputs (default: the size of the paired picture, else the 1:2 Cityscapes aspect).
    Unpaired files are a :class:`UserError` naming them unless ``allow_missing``. ``on_image`` sees every pair's
    pictures (the HTML report uses it), so nothing is read twice.
    """
    from ..fileio import progress

    pairing = pair_outputs(folder_a, folder_b, allow_missing=allow_missing)
    pairs = pairing.pairs()
    units = "raw" if pairing.all_raw() else "levels"
    limits = {"atol": atol, "min_psnr": min_psnr, "min_ssim": min_ssim, "max_diff_share": max_diff_share}
    tol, reason = choose_tolerance(preset, units, pairs, limits)
    images = [compare_pair(key, pa, pb, units, tol, size=size, on_image=on_image)
              for key, pa, pb in (progress(pairs, desc="compare") if show_progress else pairs)]
    return Comparison(str(folder_a), str(folder_b), units, tol, reason, images, summarise_checks(images, tol),
                      pairing.only_a, pairing.only_b)


def choose_tolerance(preset: Optional[str], units: str, pairs: Sequence[Tuple[str, Path, Path]],
                     limits: Dict[str, Optional[float]]) -> Tuple[Tolerance, str]:
    """(tolerance, why): ``preset`` (None: :func:`default_preset` of the files) with the explicit ``limits``."""
    if preset is None:
        preset, reason = default_preset([pa for _, pa, _ in pairs], [pb for _, _, pb in pairs])
    else:
        reason = "chosen with --preset"
    given = {k: v for k, v in limits.items() if v is not None}
    if given:
        reason += "; overridden: " + ", ".join(f"{CHECKS_FLAG[k]} {v}" for k, v in given.items())
    return tolerance_for(preset, units, **limits), reason


def compare_pair(key: str, pa: Path, pb: Path, units: str, tol: Tolerance, *, size: Optional[Tuple[int, int]],
                 on_image: Optional[ImageVisitor] = None) -> ImageComparison:
    """Read one pair, measure it in ``units``, check it against ``tol`` and show it to ``on_image``."""
    from ..model.decoding import tensor2im

    (ua, a), (ub, b) = read_pair(pa, pb, size)
    if units == "levels":  # a raw output against a picture: compared as pictures
        a = tensor2im(a) if ua == "raw" else a
        b = tensor2im(b) if ub == "raw" else b
        pictures = a, b
    else:
        pictures = tensor2im(a), tensor2im(b)
    result, diff = compare_arrays(a, b, units, name=key, file_a=str(pa), file_b=str(pb), pictures=pictures)
    if result.ssim is None:
        log.warning("%s: %dx%d is smaller than the 11-pixel SSIM window; SSIM not computed", key,
                    result.width, result.height)
    check_image(result, tol)
    if on_image is not None:
        on_image(result, *pictures, diff)
    return result
