"""The folders ``compare`` reads: outputs found, paired by label stem, and read into arrays.

In:  two folders of outputs: raw float32 (3, H, W) ``.bin`` / ``.npy`` files (from ``infer``, any runner, or
     ais_bench) or pictures (``.png``, ``.jpg``; from ``postprocess`` or upstream ``test.py``).
Out: the pairs (label stem, file in A, file in B) and the names found in one folder only; per file, ``raw`` float32
     (3, H, W) or ``levels`` uint8 (H, W, 3).

Pairing is by the **label stem**: ``<stem>_0.bin`` (ais_bench), ``<stem>_0generated.png`` (postprocess) and
``<stem>_synthesized_image.jpg`` (upstream test.py) all name ``<stem>``, so a ``.bin`` folder can be compared with a
folder of pictures; upstream's ``*_input_label.*`` / ``*_real_image.*`` files beside them are ignored. A raw
``.bin`` paired with a picture takes the picture's size.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..errors import PathLike, UserError
from ..fileio import load_npy, natural_key, stem_of

log = logging.getLogger(__name__)

RAW_SUFFIXES = (".bin", ".npy")
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")
JPEG_SUFFIXES = (".jpg", ".jpeg")
#: what output naming adds to a label stem: upstream test.py, postprocess, ais_bench (in that order of precedence)
_OUTPUT_SUFFIX = re.compile(r"(_synthesized_image|_0generated|generated|_0)$")
#: other pictures upstream's results/.../images/ folder holds beside the outputs
_NOT_OUTPUTS = re.compile(r"_(input_label|real_image)$")


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


@dataclass
class Pairing:
    """The outputs of two folders by label stem: those in both (in natural order) and those in one only."""

    files_a: Dict[str, Path]
    files_b: Dict[str, Path]
    common: List[str]
    only_a: List[str]
    only_b: List[str]

    def pairs(self) -> List[Tuple[str, Path, Path]]:
        return [(key, self.files_a[key], self.files_b[key]) for key in self.common]

    def all_raw(self) -> bool:
        return all(p.suffix.lower() in RAW_SUFFIXES for _, pa, pb in self.pairs() for p in (pa, pb))


def pair_outputs(folder_a: PathLike, folder_b: PathLike, *, allow_missing: bool = False) -> Pairing:
    """The outputs of both folders paired by label stem; unpaired ones are a :class:`UserError` naming them
    unless ``allow_missing`` (then each is logged)."""
    files_a = list_outputs(folder_a, side="A")
    files_b = list_outputs(folder_b, side="B")
    pairing = Pairing(files_a, files_b, sorted(set(files_a) & set(files_b), key=natural_key),
                      sorted(set(files_a) - set(files_b), key=natural_key),
                      sorted(set(files_b) - set(files_a), key=natural_key))
    if not pairing.common:
        raise UserError(f"no image is in both folders (A has {_names(list(files_a))}; B has "
                        f"{_names(list(files_b))})", path=folder_a,
                        fix="compare outputs made from the same label maps; names pair by label stem")
    if (pairing.only_a or pairing.only_b) and not allow_missing:
        parts = [f"{len(keys)} only in {side} ({_names([files[k].name for k in keys])})"
                 for side, keys, files in (("A", pairing.only_a, files_a), ("B", pairing.only_b, files_b)) if keys]
        raise UserError("unpaired outputs: " + "; ".join(parts), path=folder_a,
                        fix="compare folders made from the same inputs, or pass --allow-missing to compare "
                            "the pairs there are")
    for k in pairing.only_a + pairing.only_b:
        log.warning("unpaired output %s (skipped: --allow-missing)", (files_a.get(k) or files_b[k]).name)
    return pairing


def read_output(path: Path, hw: Optional[Tuple[int, int]] = None) -> Tuple[str, np.ndarray]:
    """(units, array): ``raw`` float32 (3, H, W) for .bin/.npy, ``levels`` uint8 (H, W, 3) for pictures."""
    from ..model.decoding import check_finite, read_output_bin

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


def read_pair(pa: Path, pb: Path, size: Optional[Tuple[int, int]]) -> Tuple[Tuple[str, np.ndarray], ...]:
    """(units, array) of A and of B; pictures are read first, so a raw output paired with one takes its size."""
    arrays: Dict[str, Tuple[str, np.ndarray]] = {}
    for side, path in sorted((("a", pa), ("b", pb)), key=lambda sp: sp[1].suffix.lower() in RAW_SUFFIXES):
        pictures = [arr for units_, arr in arrays.values() if units_ == "levels"]
        hw = size
        if hw is None and pictures and path.suffix.lower() == ".bin" \
                and path.stat().st_size == 3 * 4 * pictures[0].shape[0] * pictures[0].shape[1]:
            hw = pictures[0].shape[:2]  # else the 1:2 default, and a size mismatch names both sizes
        arrays[side] = read_output(path, hw)
    return arrays["a"], arrays["b"]


def _names(names: List[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
