"""Compare two folders of generator outputs with numbers, and give a verdict from explicit tolerances.

In:  two folders A and B of outputs, each holding raw float32 (3, H, W) ``.bin`` / ``.npy`` files (from ``infer``,
     any runner, or ais_bench) or pictures (``.png``, ``.jpg``; from ``postprocess`` or upstream ``test.py``).
Out: a :class:`Comparison` (per image figures, a summary, the checks and the verdict) that
     :meth:`Comparison.to_dict` turns into JSON another process can read.

Pairing is by the **label stem**: ``<stem>_0.bin`` (ais_bench), ``<stem>_0generated.png`` (postprocess) and
``<stem>_synthesized_image.jpg`` (upstream test.py) all name ``<stem>``, so a ``.bin`` folder can be compared with a
folder of pictures; upstream's ``*_input_label.*`` / ``*_real_image.*`` files beside them are ignored.

Units. When both folders hold raw outputs, errors are in the [-1, 1] units of the output (PSNR with a peak-to-peak
of 2.0). Otherwise every raw output is first turned into its picture with upstream's ``tensor2im`` and errors are
in levels (0..255, PSNR peak 255). The share of pixels that differ by more than one level is always measured on the
pictures (``tensor2im`` of raw outputs); a pixel counts when any of its three channels differs.

SSIM is Wang et al. (2004): an 11-tap Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, data range 2.0 (raw)
or 255 (levels), population (not sample) statistics, computed per RGB channel over the pixels where the window fits
wholly inside the image, and averaged over the channels. This equals scikit-image's
``structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False, channel_axis=...)``.

Tolerances (Polygraphy's way: a figure, a limit, and the limit that would have passed):

========= ===================================================== ==============================================
preset    raw vs raw                                            pictures (levels)
========= ===================================================== ==============================================
fp32      max abs error <= 1e-4                                  max abs <= 1 level, no pixel > 1 level off
fp16      PSNR >= 40 dB, <= 1 % of pixels > 1 level off          PSNR >= 40 dB, <= 1 % of pixels > 1 level off
jpeg      PSNR >= 30 dB, SSIM >= 0.9                              PSNR >= 30 dB, SSIM >= 0.9
========= ===================================================== ==============================================

The default preset follows the inputs: any JPEG -> ``jpeg``; otherwise ``fp32``. Explicit limits override the
preset's one by one; ``None`` means "the preset's".
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import PathLike, UserError
from .fileio import load_npy, natural_key, stem_of

log = logging.getLogger(__name__)

RAW_SUFFIXES = (".bin", ".npy")
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")
JPEG_SUFFIXES = (".jpg", ".jpeg")
#: what output naming adds to a label stem: upstream test.py, postprocess, ais_bench (in that order of precedence)
_OUTPUT_SUFFIX = re.compile(r"(_synthesized_image|_0generated|generated|_0)$")
#: other pictures upstream's results/.../images/ folder holds beside the outputs
_NOT_OUTPUTS = re.compile(r"_(input_label|real_image)$")

#: peak-to-peak of the comparison units, for PSNR and SSIM
PEAK = {"raw": 2.0, "levels": 255.0}
#: one picture level in the comparison units
LEVEL = {"raw": 2.0 / 255.0, "levels": 1.0}


# ------------------------------------------------------------------------------------------- tolerances

@dataclass(frozen=True)
class Tolerance:
    """Limits of a verdict; ``None`` means the figure is not checked. ``atol`` is in the comparison's units."""

    preset: str
    atol: Optional[float] = None
    min_psnr: Optional[float] = None
    min_ssim: Optional[float] = None
    max_diff_share: Optional[float] = None


PRESETS = ("fp32", "fp16", "jpeg")


def preset_tolerance(preset: str, units: str) -> Tolerance:
    """The limits of ``preset`` for ``units`` (``raw`` or ``levels``); see the module docstring."""
    if preset == "fp32":
        if units == "raw":
            return Tolerance("fp32", atol=1e-4)
        return Tolerance("fp32", atol=1.0, max_diff_share=0.0)
    if preset == "fp16":
        return Tolerance("fp16", min_psnr=40.0, max_diff_share=0.01)
    if preset == "jpeg":
        return Tolerance("jpeg", min_psnr=30.0, min_ssim=0.9)
    raise UserError(f"unknown tolerance preset {preset!r}", fix=f"use one of {', '.join(PRESETS)}")


def tolerance_for(preset: str, units: str, *, atol: Optional[float] = None, min_psnr: Optional[float] = None,
                  min_ssim: Optional[float] = None, max_diff_share: Optional[float] = None) -> Tolerance:
    """The one tolerance rule: ``preset``'s limits for ``units``, each replaced by an explicit limit where given.

    ``compare`` and the export check both judge with it, so output one of them accepts the other does not reject.
    """
    base = preset_tolerance(preset, units)
    given = {"atol": atol, "min_psnr": min_psnr, "min_ssim": min_ssim, "max_diff_share": max_diff_share}
    return Tolerance(base.preset, **{k: getattr(base, k) if v is None else v for k, v in given.items()})


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


# ---------------------------------------------------------------------------------------------- metrics

def gaussian_kernel(sigma: float = 1.5, truncate: float = 3.5) -> np.ndarray:
    """The normalised 1-d Gaussian of Wang et al.'s SSIM window (11 taps for sigma 1.5, as scipy truncates)."""
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _filter_valid(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable correlation of an (H, W) float64 image with ``kernel``, only where the window fits ('valid')."""
    n = kernel.size
    h, w = img.shape
    rows = kernel[0] * img[0:h - n + 1]
    for i in range(1, n):
        rows += kernel[i] * img[i:h - n + 1 + i]
    out = kernel[0] * rows[:, 0:w - n + 1]
    for i in range(1, n):
        out += kernel[i] * rows[:, i:w - n + 1 + i]
    return out


def ssim(a: np.ndarray, b: np.ndarray, data_range: float, *, sigma: float = 1.5) -> Optional[float]:
    """Mean SSIM of two (C, H, W) or (H, W) arrays (see the module docstring); None if smaller than the window."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"ssim: shapes differ {a.shape} vs {b.shape}")
    if a.ndim == 2:
        a, b = a[None], b[None]
    kernel = gaussian_kernel(sigma)
    if min(a.shape[1:]) < kernel.size:
        return None
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    values = []
    for ca, cb in zip(a, b):
        mu_a = _filter_valid(ca, kernel)
        mu_b = _filter_valid(cb, kernel)
        var_a = _filter_valid(ca * ca, kernel) - mu_a * mu_a
        var_b = _filter_valid(cb * cb, kernel) - mu_b * mu_b
        cov = _filter_valid(ca * cb, kernel) - mu_a * mu_b
        s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2))
        values.append(float(s.mean()))
    return float(np.mean(values))


def psnr(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    """10 log10(peak^2 / MSE) in dB; ``inf`` for identical arrays."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(peak * peak / mse)


@dataclass
class ImageComparison:
    """The figures of one image pair. Errors are in ``units`` (``raw``: [-1, 1] outputs; ``levels``: 0..255)."""

    name: str
    file_a: str
    file_b: str
    units: str
    height: int
    width: int
    max_abs: float
    mean_abs: float
    median_abs: float
    p99_abs: float
    psnr_db: float
    ssim: Optional[float]
    #: share of pixels whose picture differs at all / by more than one level (any channel), and the largest
    #: picture difference in levels
    differing_share: float
    over_one_level_share: float
    max_level_diff: int
    failures: List[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


def compare_arrays(a: np.ndarray, b: np.ndarray, units: str, *, name: str = "", file_a: str = "",
                   file_b: str = "", with_ssim: bool = True) -> Tuple[ImageComparison, np.ndarray]:
    """Figures of one pair, and the per-pixel largest channel difference in levels (H, W) for a difference map.

    ``units='raw'``: ``a``, ``b`` float (3, H, W) outputs in [-1, 1]. ``units='levels'``: uint8 (H, W, 3) pictures.
    ``with_ssim=False`` leaves SSIM out (None), for a check whose tolerance does not look at it.
    """
    from .postprocess import tensor2im

    if a.shape != b.shape:
        raise UserError(f"{name}: A is {_describe_shape(a, units)} but B is {_describe_shape(b, units)}",
                        path=file_a or None, fix="compare outputs made from the same inputs at the same size")
    if units == "raw":
        pic_a, pic_b = tensor2im(a), tensor2im(b)
        chw_a, chw_b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        h, w = a.shape[1:]
    elif units == "levels":
        pic_a, pic_b = a, b
        chw_a = np.transpose(a, (2, 0, 1)).astype(np.float64)
        chw_b = np.transpose(b, (2, 0, 1)).astype(np.float64)
        h, w = a.shape[:2]
    else:
        raise ValueError(f"units must be raw or levels, not {units!r}")
    err = np.abs(chw_a - chw_b)
    levels = np.abs(pic_a.astype(np.int16) - pic_b.astype(np.int16)).max(axis=2)
    result = ImageComparison(
        name=name, file_a=file_a, file_b=file_b, units=units, height=int(h), width=int(w),
        max_abs=float(err.max()), mean_abs=float(err.mean()), median_abs=float(np.median(err)),
        p99_abs=float(np.percentile(err, 99)), psnr_db=psnr(chw_a, chw_b, PEAK[units]),
        ssim=ssim(chw_a, chw_b, PEAK[units]) if with_ssim else None,
        differing_share=float((levels > 0).mean()), over_one_level_share=float((levels > 1).mean()),
        max_level_diff=int(levels.max()))
    # the difference map shows the error in the comparison's units, expressed in levels
    diff_levels = err.max(axis=0) / LEVEL[units]
    return result, diff_levels


def _describe_shape(arr: np.ndarray, units: str) -> str:
    h, w = (arr.shape[1:] if units == "raw" else arr.shape[:2])
    return f"{w}x{h}"


# ---------------------------------------------------------------------------------------------- checks

#: figure -> (tolerance field, flag, worse is higher?)
CHECKS = {
    "max_abs": ("atol", "--atol", True),
    "psnr_db": ("min_psnr", "--min-psnr", False),
    "ssim": ("min_ssim", "--min-ssim", False),
    "over_one_level_share": ("max_diff_share", "--max-diff-share", True),
}


def _fails(value: Optional[float], limit: float, higher_is_worse: bool) -> bool:
    if value is None:
        return False  # SSIM of an image smaller than its window: not checked (logged)
    return value > limit if higher_is_worse else value < limit


def format_figure(value: Optional[float]) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4g}"
    return f"{value:.3e}"


def round_outwards(value: float, *, up: bool, digits: int = 4) -> float:
    """``value`` to ``digits`` significant digits, rounded up (or down), so a limit printed short still holds."""
    if value == 0 or not math.isfinite(value):
        return value
    step = 10.0 ** (math.floor(math.log10(abs(value))) - digits + 1)
    return float((math.ceil if up else math.floor)(value / step) * step)


def check_image(result: ImageComparison, tol: Tolerance) -> None:
    """Fill ``result.failures`` with one line per figure outside ``tol``."""
    result.failures = []
    for figure, (tfield, _flag, higher_is_worse) in CHECKS.items():
        limit = getattr(tol, tfield)
        if limit is None:
            continue
        value = getattr(result, figure)
        if _fails(value, limit, higher_is_worse):
            rel = ">" if higher_is_worse else "<"
            result.failures.append(f"{figure} {format_figure(value)} {rel} {format_figure(limit)}")


@dataclass
class Check:
    """One tolerance over all images: the worst figure, how many images failed, and the limit that passes all."""

    figure: str
    flag: str
    limit: float
    worst: Optional[float]
    failed_images: int
    passed: bool

    @property
    def would_pass(self) -> Optional[float]:
        """The worst figure rounded outwards to 4 significant digits: a limit that passes every image."""
        if self.passed or self.worst is None:
            return None
        return round_outwards(self.worst, up=CHECKS[self.figure][2])

    def line(self) -> str:
        rel = "<=" if CHECKS[self.figure][2] else ">="
        head = f"{self.figure} {rel} {format_figure(self.limit)}: worst {format_figure(self.worst)}"
        if self.passed:
            return head + " ok"
        return (f"{head} FAILED in {self.failed_images} image(s) ({self.flag} {format_figure(self.would_pass)} "
                "would pass)")


# ------------------------------------------------------------------------------------------ the folders

def output_stem(path: PathLike) -> str:
    """The label stem an output file was made from (see the module docstring)."""
    return _OUTPUT_SUFFIX.sub("", stem_of(path), count=1)


def list_outputs(folder: PathLike, *, side: str) -> Dict[str, Path]:
    """label stem -> output file, for the raw outputs and pictures in ``folder`` (not recursive)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"folder {side} does not exist or is not a folder", path=folder,
                        fix="pass a folder of outputs: .bin from infer/ais_bench, or pictures from postprocess")
    found: Dict[str, Path] = {}
    for p in sorted(folder.iterdir(), key=lambda p: natural_key(p.name)):
        if not p.is_file() or p.name.startswith("."):
            continue
        if p.suffix.lower() not in RAW_SUFFIXES + PICTURE_SUFFIXES or _NOT_OUTPUTS.search(stem_of(p)):
            continue
        key = output_stem(p)
        if key in found:
            raise UserError(f"two outputs in folder {side} are for the same image {key!r}: {found[key].name} and "
                            f"{p.name}", path=folder, fix="keep one output per image in each folder")
        found[key] = p
    if not found:
        raise UserError(f"no outputs in folder {side} (.bin, .npy, .png or .jpg)", path=folder,
                        fix="pass the folder that infer, ais_bench or postprocess wrote, e.g. ./result/bs1")
    return found


def read_output(path: Path, hw: Optional[Tuple[int, int]] = None) -> Tuple[str, np.ndarray]:
    """(units, array): ``raw`` float32 (3, H, W) for .bin/.npy, ``levels`` uint8 (H, W, 3) for pictures."""
    from .postprocess import check_finite, read_output_bin

    suffix = path.suffix.lower()
    if suffix == ".bin":
        return "raw", read_output_bin(path, hw)
    if suffix == ".npy":
        arr = load_npy(path)
        if arr.ndim == 4 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim != 3 or arr.shape[0] != 3:
            raise UserError(f"the .npy holds shape {arr.shape}, not a (3, H, W) output", path=path,
                            fix="use the outputs infer writes with --outfmt NPY")
        return "raw", check_finite(arr, path).astype(np.float32, copy=False)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            rgb = img if img.mode == "RGB" else img.convert("RGB")
            return "levels", np.asarray(rgb, dtype=np.uint8)
    except UnidentifiedImageError as exc:
        raise UserError("not a picture (cannot identify its format)", path=path,
                        fix="remove it from the folder or replace it with the real output") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"the picture is damaged or truncated ({exc})", path=path,
                        fix="make the output again") from exc


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
        from . import __version__
        from .provenance import machine, versions

        return _json_safe({
            "tool": "pix2pixhd-deploy compare",
            "version": __version__,
            "versions": versions(),
            "machine": machine(),
            "a": self.folder_a,
            "b": self.folder_b,
            "units": self.units,
            "units_note": ("[-1, 1] generator output units; PSNR peak-to-peak 2.0" if self.units == "raw"
                           else "picture levels 0..255; PSNR peak 255"),
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
    from .fileio import progress
    from .postprocess import tensor2im

    files_a = list_outputs(folder_a, side="A")
    files_b = list_outputs(folder_b, side="B")
    only_a = sorted(set(files_a) - set(files_b), key=natural_key)
    only_b = sorted(set(files_b) - set(files_a), key=natural_key)
    common = sorted(set(files_a) & set(files_b), key=natural_key)
    if not common:
        raise UserError(f"no image is in both folders (A has {_names(list(files_a))}; B has "
                        f"{_names(list(files_b))})", path=folder_a,
                        fix="compare outputs made from the same label maps; names pair by label stem")
    if (only_a or only_b) and not allow_missing:
        parts = []
        if only_a:
            parts.append(f"{len(only_a)} only in A ({_names([files_a[k].name for k in only_a])})")
        if only_b:
            parts.append(f"{len(only_b)} only in B ({_names([files_b[k].name for k in only_b])})")
        raise UserError("unpaired outputs: " + "; ".join(parts), path=folder_a,
                        fix="compare folders made from the same inputs, or pass --allow-missing to compare "
                            "the pairs there are")
    for k in only_a + only_b:
        log.warning("unpaired output %s (skipped: --allow-missing)", (files_a.get(k) or files_b[k]).name)

    paired_a = [files_a[k] for k in common]
    paired_b = [files_b[k] for k in common]
    all_raw = all(p.suffix.lower() in RAW_SUFFIXES for p in paired_a + paired_b)
    units = "raw" if all_raw else "levels"
    if preset is None:
        preset, reason = default_preset(paired_a, paired_b)
    else:
        reason = "chosen with --preset"
    tol = tolerance_for(preset, units, atol=atol, min_psnr=min_psnr, min_ssim=min_ssim,
                        max_diff_share=max_diff_share)
    given = {k: v for k, v in (("atol", atol), ("min_psnr", min_psnr), ("min_ssim", min_ssim),
                               ("max_diff_share", max_diff_share)) if v is not None}
    if given:
        reason += "; overridden: " + ", ".join(f"{CHECKS_FLAG[k]} {v}" for k, v in given.items())

    images: List[ImageComparison] = []
    pairs = list(zip(common, paired_a, paired_b))
    it = progress(pairs, desc="compare") if show_progress else pairs
    for key, pa, pb in it:
        arrays = _read_pair(pa, pb, size)
        (ua, a), (ub, b) = arrays["a"], arrays["b"]
        if units == "levels":
            a = tensor2im(a) if ua == "raw" else a
            b = tensor2im(b) if ub == "raw" else b
        result, diff = compare_arrays(a, b, units, name=key, file_a=str(pa), file_b=str(pb))
        if result.ssim is None:
            log.warning("%s: %dx%d is smaller than the 11-pixel SSIM window; SSIM not computed", key,
                        result.width, result.height)
        check_image(result, tol)
        images.append(result)
        if on_image is not None:
            pic_a = tensor2im(a) if units == "raw" else a
            pic_b = tensor2im(b) if units == "raw" else b
            on_image(result, pic_a, pic_b, diff)

    return Comparison(str(folder_a), str(folder_b), units, tol, reason, images, summarise_checks(images, tol),
                      only_a, only_b)


def summarise_checks(images: Sequence[ImageComparison], tol: Tolerance) -> List[Check]:
    """One :class:`Check` per limit of ``tol`` over all ``images``: the worst figure and how many failed."""
    checks = []
    for figure, (tfield, flag, higher_is_worse) in CHECKS.items():
        limit = getattr(tol, tfield)
        if limit is None:
            continue
        values = [getattr(i, figure) for i in images if getattr(i, figure) is not None]
        worst = (max(values) if higher_is_worse else min(values)) if values else None
        failed = sum(_fails(getattr(i, figure), limit, higher_is_worse) for i in images)
        checks.append(Check(figure, flag, limit, worst, failed, failed == 0))
    return checks


def _read_pair(pa: Path, pb: Path, size: Optional[Tuple[int, int]]) -> Dict[str, Tuple[str, np.ndarray]]:
    """side -> (units, array) of one pair; pictures first, so a raw output paired with one takes its size."""
    arrays: Dict[str, Tuple[str, np.ndarray]] = {}
    for side, path in sorted((("a", pa), ("b", pb)), key=lambda sp: sp[1].suffix.lower() in RAW_SUFFIXES):
        pictures = [arr for units_, arr in arrays.values() if units_ == "levels"]
        hw = size
        if hw is None and pictures and path.suffix.lower() == ".bin" \
                and path.stat().st_size == 3 * 4 * pictures[0].shape[0] * pictures[0].shape[1]:
            hw = pictures[0].shape[:2]  # else the 1:2 default, and a size mismatch names both sizes
        arrays[side] = read_output(path, hw)
    return arrays


CHECKS_FLAG = {tfield: flag for tfield, flag, _ in CHECKS.values()}


def _names(names: List[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
