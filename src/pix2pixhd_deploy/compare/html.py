"""The HTML report of ``compare``: what a person looks at instead of two folders of pictures.

In:  the pictures of each compared pair (uint8 (H, W, 3)), the per-pixel largest channel error in levels, and the
     :class:`~pix2pixhd_deploy.compare.compare.Comparison` with every figure; optionally the label maps (``test_label/``).
Out: ``index.html`` (or the ``.html`` file named) and, beside it, a folder of PNGs that the page links relatively:
     per image the coloured label map, A, B and an amplified difference map, with the figures under its name, and a
     summary table with the verdict on top. PNG keeps every level, so what is shown is what was measured (a JPEG
     input is shown as it decodes).

The difference map is a heat ramp (black -> red -> yellow -> white) of ``amplify`` x |A - B| in levels (the largest
of the three channels), so with the default x10 a one-level error is a dark red and 25.5 levels or more is white.
"""
from __future__ import annotations

import html
import logging
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from ..errors import PathLike
from ..fileio import atomic_save_image, ensure_output_dir
from .compare import Comparison
from .metrics import ImageComparison, format_figure
from .page import page_start, picture_cell, write_page

log = logging.getLogger(__name__)

DEFAULT_AMPLIFY = 10.0


def difference_map(diff_levels: np.ndarray, amplify: float = DEFAULT_AMPLIFY) -> np.ndarray:
    """(H, W) error in levels -> (H, W, 3) uint8 heat map of ``amplify`` x error (black = equal)."""
    t = np.clip(np.asarray(diff_levels, np.float64) * amplify / 255.0, 0.0, 1.0) * 3.0
    rgb = np.stack([np.clip(t, 0, 1), np.clip(t - 1, 0, 1), np.clip(t - 2, 0, 1)], axis=-1)
    return np.round(rgb * 255.0).astype(np.uint8)


def label_maps(dataroot: PathLike, phase: str = "test") -> Dict[str, Path]:
    """label stem -> label map file in ``DATAROOT/<phase>_label``, for the report's first column."""
    from ..data.dataset import find_pairs

    return {pair.name: pair.label for pair in find_pairs(dataroot, phase=phase, use_instance=False)}


class CompareReport:
    """Writes the pictures as ``compare`` meets each pair (:meth:`add`), then the page (:meth:`finish`).

    ``target``: a folder (the page is ``index.html`` in it) or a ``.html`` file; pictures go to ``images/`` (or
    ``<name>_images/``) beside the page.
    """

    def __init__(self, target: PathLike, *, labels: Optional[Dict[str, Path]] = None,
                 amplify: float = DEFAULT_AMPLIFY, title: str = "pix2pixhd-deploy compare", width: int = 320):
        target = Path(target)
        if target.suffix.lower() in (".html", ".htm"):
            self.page = target
            folder = ensure_output_dir(target.parent, what="report folder")
            self.images_dir = ensure_output_dir(folder / f"{target.stem}_images", what="report images folder")
        else:
            folder = ensure_output_dir(target, what="report folder")
            self.page = folder / "index.html"
            self.images_dir = ensure_output_dir(folder / "images", what="report images folder")
        self.labels = labels or {}
        self.amplify = amplify
        self.title = title
        self.width = width
        self._rows: List[tuple] = []

    def add(self, result: ImageComparison, pic_a: np.ndarray, pic_b: np.ndarray, diff_levels: np.ndarray) -> None:
        from ..data.labelmaps import read_label_ids
        from ..data.labels import colorize

        cells = []
        label_file = self.labels.get(result.name)
        if label_file is not None:
            target = self.images_dir / f"{result.name}_label.png"
            atomic_save_image(target, colorize(read_label_ids(label_file)))
            cells.append(("label map", target))
        elif self.labels:
            log.warning("%s: no label map for it in the data root; its label column is empty", result.name)
            cells.append(("label map (none)", None))
        for caption, picture, suffix in (("A", pic_a, "a"), ("B", pic_b, "b"),
                                         (f"|A−B| × {self.amplify:g}", difference_map(diff_levels, self.amplify),
                                          "diff")):
            target = self.images_dir / f"{result.name}_{suffix}.png"
            atomic_save_image(target, np.ascontiguousarray(picture))
            cells.append((caption, target))
        self._rows.append((result, cells))

    def finish(self, comparison: Comparison) -> Path:
        """Write the page: the verdict and the settings, the summary over all images, then each image."""
        parts = page_start(self.title, STYLE)
        parts += _verdict(comparison)
        parts += _summary(comparison, self.amplify)
        for result, cells in self._rows:
            parts += self._image(result, cells, "" if comparison.units == "raw" else " levels")
        return write_page(self.page, parts)

    def _image(self, result: ImageComparison, cells: List[tuple], unit: str) -> List[str]:
        """One image's heading (its verdict), its figures and its pictures."""
        e = html.escape
        status = ("<span class=\"pass\">pass</span>" if result.passed else
                  f"<span class=\"fail\">FAIL: {e('; '.join(result.failures))}</span>")
        figures = {"max abs": format_figure(result.max_abs) + unit, "mean abs": format_figure(result.mean_abs) + unit,
                   "PSNR (dB)": format_figure(result.psnr_db), "SSIM": format_figure(result.ssim),
                   "pixels > 1 level": f"{result.over_one_level_share:.4%}",
                   "max level diff": str(result.max_level_diff), "size": f"{result.width}x{result.height}"}
        return [f"<h3 id=\"{e(result.name, quote=True)}\">{e(result.name)} — {status}</h3>",
                "<table class=\"fig\"><tr>" + "".join(f"<th>{e(h)}</th>" for h in figures) + "</tr><tr>"
                + "".join(f"<td>{e(v)}</td>" for v in figures.values()) + "</tr></table>",
                "<table class=\"pics\"><tr>",
                *(f"<td>{e(caption)}</td>" if file is None else
                  picture_cell(file, self.page.parent, caption, width=self.width, alt=f"{result.name} {caption}")
                  for caption, file in cells),
                "</tr></table>"]


STYLE = ("body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}"
         "td,th{padding:3px 8px;text-align:left;vertical-align:top}.fig td,.fig th,.sum td,.sum th"
         "{border:1px solid #ccc}.pass{color:#1a7f37;font-weight:bold}.fail{color:#c62828;font-weight:bold}"
         ".pics td{text-align:center}")


def _verdict(comparison: Comparison) -> List[str]:
    """The verdict, the folders, the units, the tolerance and each check."""
    e = html.escape
    verdict = "PASS" if comparison.passed else "FAIL"
    parts = [f"<p>Verdict: <span class=\"{verdict.lower()}\">{verdict}</span> — {len(comparison.images)} image "
             f"pair(s), {sum(not i.passed for i in comparison.images)} failed.</p>",
             "<table class=\"sum\">",
             f"<tr><th>A</th><td>{e(comparison.folder_a)}</td></tr>",
             f"<tr><th>B</th><td>{e(comparison.folder_b)}</td></tr>",
             f"<tr><th>units</th><td>{e(comparison.units_note)}</td></tr>",
             f"<tr><th>tolerance</th><td>preset {e(comparison.tolerance.preset)} ({e(comparison.preset_reason)})"
             "</td></tr>"]
    parts += [f"<tr><th>check</th><td class=\"{'pass' if c.passed else 'fail'}\">{e(c.line())}</td></tr>"
              for c in comparison.checks]
    if comparison.only_a or comparison.only_b:
        parts.append(f"<tr><th>unpaired</th><td>{len(comparison.only_a)} only in A, {len(comparison.only_b)} "
                     "only in B (allowed)</td></tr>")
    return parts + ["</table>"]


def _summary(comparison: Comparison, amplify: float) -> List[str]:
    """Each figure's worst, median and mean over all images, and how to read the difference maps."""
    e = html.escape
    parts = ["<h2>Summary over all images</h2><table class=\"sum\"><tr><th>figure</th><th>worst</th>"
             "<th>median</th><th>mean</th></tr>"]
    parts += [f"<tr><td>{e(figure)}</td>" + "".join(f"<td>{e(format_figure(values[k]))}</td>"
                                                    for k in ("worst", "median", "mean")) + "</tr>"
              for figure, values in comparison.summary().items()]
    return parts + ["</table>", f"<p>Difference maps: {e(_ramp_note(amplify))}. Errors are in "
                                f"{'raw [-1, 1] units' if comparison.units == 'raw' else 'levels'}.</p>"]


def _ramp_note(amplify: float) -> str:
    return (f"{amplify:g} × |A − B| in levels (largest channel), black = equal, red → yellow → white = "
            f"{255 / amplify / 3:.3g} / {2 * 255 / amplify / 3:.3g} / ≥ {255 / amplify:.3g} levels")


__all__ = ["CompareReport", "difference_map", "label_maps"]
