"""The figures and the one tolerance rule of ``compare`` and the export check: arrays in, figures and verdicts out.

In:  two arrays of one image, in ``raw`` units (float (3, H, W) generator outputs in [-1, 1]) or ``levels`` (uint8
     (H, W, 3) pictures), and a :class:`Tolerance`.
Out: an :class:`ImageComparison` per pair (max/mean/median/p99 abs error, PSNR, SSIM, the share of pixels whose
     picture differs by more than one level), its failures against the tolerance, and one :class:`Check` per limit
     over a set of pairs (the worst figure and the limit that would have passed).

Units. Raw errors are in the [-1, 1] units of the output (PSNR with a peak-to-peak of 2.0); picture errors are in
levels (0..255, PSNR peak 255). The share of pixels that differ by more than one level is always measured on the
pictures (upstream's ``tensor2im`` of raw outputs); a pixel counts when any of its three channels differs.

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

Explicit limits override the preset's one by one; ``None`` means "the preset's".
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..errors import UserError

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
                   file_b: str = "", with_ssim: bool = True,
                   pictures: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> Tuple[ImageComparison, np.ndarray]:
    """Figures of one pair, and the per-pixel largest channel difference in levels (H, W) for a difference map.

    ``units='raw'``: ``a``, ``b`` float (3, H, W) outputs in [-1, 1]. ``units='levels'``: uint8 (H, W, 3) pictures.
    ``with_ssim=False`` leaves SSIM out (None), for a check whose tolerance does not look at it. ``pictures``: the
    two pictures (``tensor2im`` of raw outputs) when the caller has made them already.
    """
    if a.shape != b.shape:
        raise UserError(f"{name}: A is {_describe_shape(a, units)} but B is {_describe_shape(b, units)}",
                        path=file_a or None, fix="compare outputs made from the same inputs at the same size")
    if units == "raw":
        if pictures is None:
            from ..model.decoding import tensor2im

            pictures = tensor2im(a), tensor2im(b)
        chw_a, chw_b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        h, w = a.shape[1:]
    elif units == "levels":
        pictures = a, b
        chw_a = np.transpose(a, (2, 0, 1)).astype(np.float64)
        chw_b = np.transpose(b, (2, 0, 1)).astype(np.float64)
        h, w = a.shape[:2]
    else:
        raise ValueError(f"units must be raw or levels, not {units!r}")
    pic_a, pic_b = pictures
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


#: tolerance field -> its flag
CHECKS_FLAG = {tfield: flag for tfield, flag, _ in CHECKS.values()}
