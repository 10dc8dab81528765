"""Postprocessing: generator outputs (float32 (3, H, W) in [-1, 1]) -> uint8 pictures, exactly as upstream.

:func:`tensor2im` is upstream ``util.tensor2im``: float32 ``(x + 1) / 2 * 255`` in that order, clip to [0, 255],
truncate to uint8 (no rounding; 0.0 -> 127). :func:`postprocess_dir` is the seed's ``pix2pixhd_postprocess.py``:
every ``.bin`` in BIN_DIR becomes ``OUT_DIR/<bin stem>generated.png`` (lossless; ``fmt="jpg"`` gives the seed's and
upstream ``test.py``'s JPEG at Pillow's default quality 75). Each output's size comes from preprocess's sidecar
(``pix2pixhd_sizes.json``, given with ``sizes`` or found through the ``<BIN_DIR>_summary.json`` that ais_bench and
``infer`` write beside BIN_DIR, whose inputs sit beside it); with ``--fit pad`` the picture is cropped back to its
label map's size there. Without a sidecar the size is ``hw`` or the 1:2 Cityscapes aspect.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..data.labelmaps import crop_to
from ..errors import PathLike, UserError
from ..fileio import (
    atomic_save_image,
    ensure_output_dir,
    image_format,
    natural_sorted,
    progress,
    remove_stale_temporaries,
    stem_of,
)
from ..model.decoding import read_output_bin, tensor2im

log = logging.getLogger(__name__)










def output_image_name(bin_path: PathLike, fmt: str = "png") -> str:
    """The seed's naming: ``<bin name cut at the first '.'>generated.<fmt>``."""
    return f"{stem_of(bin_path)}generated.{fmt}"


def save_image(path: PathLike, image: np.ndarray) -> None:
    """PNG losslessly; JPEG as upstream saves it (Pillow's defaults: quality 75, 4:2:0)."""
    atomic_save_image(path, image)


def find_sizes_sidecar(bin_dir: Path) -> Optional[Path]:
    """Preprocess's sidecar for the outputs in ``bin_dir``, through the inputs named in the run's summary JSON."""
    from .preprocess import SIZES_SIDECAR

    summary = bin_dir.parent / f"{bin_dir.name}_summary.json"
    try:
        files = json.loads(summary.read_text()).get("filesinfo", {})
    except (OSError, ValueError, AttributeError):
        return None
    for info in files.values() if isinstance(files, dict) else []:
        for infile in (info or {}).get("infiles", []):
            candidate = Path(infile).parent / SIZES_SIDECAR
            if candidate.is_file():
                return candidate
    return None


def read_sizes_sidecar(path: PathLike) -> Dict[str, object]:
    try:
        sidecar = json.loads(Path(path).read_text())
        if not isinstance(sidecar.get("images"), dict):
            raise ValueError("no 'images' table")
    except (OSError, ValueError, AttributeError) as exc:
        raise UserError(f"cannot read the sizes sidecar ({exc})", path=path,
                        fix="pass the pix2pixhd_sizes.json that pix2pixhd_preprocess.py wrote beside the .bin inputs")
    return sidecar


_OUTPUT_INDEX = re.compile(r"_\d+$")


def postprocess_dir(bin_dir: PathLike, out_dir: PathLike, *, fmt: str = "png",
                    hw: Optional[Tuple[int, int]] = None, sizes: Optional[PathLike] = None) -> List[Path]:
    """Turn every output ``.bin`` in ``bin_dir`` into a picture in ``out_dir``; returns the pictures in order."""
    fmt = image_format(fmt)
    bin_dir = Path(bin_dir)
    if not bin_dir.is_dir():
        raise UserError("the output folder to convert does not exist", path=bin_dir,
                        fix="pass the folder that infer (or ais_bench) wrote, e.g. ./result/bs1")
    bins = natural_sorted(p for p in bin_dir.iterdir() if p.is_file() and p.suffix.lower() == ".bin")
    if not bins:
        raise UserError("no .bin files in this folder", path=bin_dir,
                        fix="pass the folder that infer (or ais_bench) wrote, e.g. ./result/bs1")
    sizes = Path(sizes) if sizes is not None else find_sizes_sidecar(bin_dir)
    sidecar = read_sizes_sidecar(sizes) if sizes is not None else None
    crop = sidecar is not None and sidecar.get("fit") == "pad"
    if sidecar is not None:
        log.info("output sizes from %s%s", sizes, " (cropped back to the label maps' sizes: --fit pad)" if crop else "")
        missing = [p.name for p in bins if _OUTPUT_INDEX.sub("", stem_of(p)) not in sidecar["images"]]
        if missing and crop:
            raise UserError(f"{len(missing)} output(s) have no entry in the sizes sidecar, so they cannot be cropped "
                            f"back: {', '.join(missing[:3])}", path=sizes,
                            fix="postprocess the outputs of the inputs that preprocess wrote with this sidecar")
    out = ensure_output_dir(out_dir)
    remove_stale_temporaries(out)
    written = []
    for path in progress(bins, desc="postprocess"):
        entry = sidecar["images"].get(_OUTPUT_INDEX.sub("", stem_of(path))) if sidecar else None
        if entry is None:
            image = tensor2im(read_output_bin(path, hw))
        else:
            image = tensor2im(read_output_bin(path, (entry["input_height"], entry["input_width"])))
            if crop:
                image = crop_to(image, (entry["height"], entry["width"]))
        target = out / output_image_name(path, fmt)
        save_image(target, image)
        written.append(target)
    return written
