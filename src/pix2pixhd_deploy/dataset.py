"""Dataset discovery and reading: Cityscapes gtFine folders and pix2pixHD data roots in, label/instance pairs out.

* :func:`convert_cityscapes` is the seed's ``datasets_deal.py``: it gathers ``*_gtFine_labelIds.png`` and
  ``*_gtFine_instanceIds.png`` from the city folders of one gtFine split into flat ``test_label/`` and
  ``test_inst/`` folders, copying (atomically) or symlinking.
* :func:`find_pairs` lists ``DATAROOT/<phase>_label`` and ``DATAROOT/<phase>_inst`` (recursively, upstream's image
  extensions) and pairs the files **by their stem**, not by sorted position as upstream does (UPSTREAM.md §3), so a
  missing or extra file is an error instead of a silent mismatch.
* :func:`read_label_map` / :func:`read_instance_map` decode the PNGs exactly as upstream's loader does, and
  :func:`load_pair` applies upstream's "make power of 2" nearest resize to a multiple of ``base`` (32 for
  label2city_1024p).
"""
from __future__ import annotations

import contextlib
import filecmp
import logging
import os
import re
import shutil
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

import numpy as np

from .errors import PathLike, UserError
from .fileio import atomic_open, stem_of

log = logging.getLogger(__name__)

#: upstream ``data/image_folder.py`` IMG_EXTENSIONS
IMG_EXTENSIONS = (".jpg", ".JPG", ".jpeg", ".JPEG", ".png", ".PNG", ".ppm", ".PPM", ".bmp", ".BMP", ".tiff")
LABEL_SUFFIX = "_gtFine_labelIds.png"
INSTANCE_SUFFIX = "_gtFine_instanceIds.png"
_PAIR_SUFFIX = re.compile(r"(_gt(Fine|Coarse))?_(labelIds|instanceIds|labels?|inst(ances?)?)$")


def pair_key(path: PathLike) -> str:
    """The stem shared by a label map and its instance map.

    ``frankfurt_000000_000576_gtFine_labelIds.png`` and ``frankfurt_000000_000576_gtFine_instanceIds.png`` both give
    ``frankfurt_000000_000576``; files without a known suffix pair when their stems are equal.
    """
    return _PAIR_SUFFIX.sub("", stem_of(path))


@dataclass(frozen=True)
class Pair:
    """One input sample. ``name`` (the label file's stem) names every output made from it."""

    key: str
    label: Path
    instance: Optional[Path]

    @property
    def name(self) -> str:
        return stem_of(self.label)


def _list_images(folder: Path) -> List[Path]:
    files = []
    for root, _dirs, names in sorted(os.walk(folder)):
        files.extend(Path(root) / n for n in sorted(names) if n.endswith(IMG_EXTENSIONS))
    return sorted(files)


def _index_by_key(files: List[Path], folder: Path) -> Dict[str, Path]:
    by_key: Dict[str, Path] = {}
    for f in files:
        k = pair_key(f)
        if k in by_key:
            raise UserError(f"two files share the stem {k!r}: {by_key[k].name} and {f.name}", path=folder,
                            fix="keep one file per image in each folder")
        by_key[k] = f
    return by_key


def _describe(names: List[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def find_pairs(dataroot: PathLike, *, phase: str = "test", use_instance: bool = True) -> List[Pair]:
    """Pairs of ``<dataroot>/<phase>_label`` and ``<dataroot>/<phase>_inst`` files, sorted by label path."""
    dataroot = Path(dataroot)
    label_dir = dataroot / f"{phase}_label"
    inst_dir = dataroot / f"{phase}_inst"
    if not dataroot.is_dir():
        raise UserError("the data root does not exist or is not a folder", path=dataroot,
                        fix=f"pass the folder that holds {phase}_label/ and {phase}_inst/")
    if not label_dir.is_dir():
        raise UserError(f"there is no {phase}_label/ folder here", path=dataroot,
                        fix=f"pass the folder that holds {phase}_label/ (made by datasets_deal.py)")
    labels = _list_images(label_dir)
    if not labels:
        raise UserError("no label maps (.png and other image files) in this folder", path=label_dir,
                        fix="put the *_gtFine_labelIds.png files there, e.g. with datasets_deal.py")
    label_by_key = _index_by_key(labels, label_dir)
    if not use_instance:
        return [Pair(k, p, None) for k, p in sorted(label_by_key.items(), key=lambda kv: kv[1])]
    if not inst_dir.is_dir():
        raise UserError(f"there is no {phase}_inst/ folder here", path=dataroot,
                        fix=f"add {phase}_inst/ with the *_gtFine_instanceIds.png files, "
                            "or use --no-instance for a model trained without instance maps")
    inst_by_key = _index_by_key(_list_images(inst_dir), inst_dir)
    lonely_labels = sorted(label_by_key[k].name for k in label_by_key.keys() - inst_by_key.keys())
    lonely_insts = sorted(inst_by_key[k].name for k in inst_by_key.keys() - label_by_key.keys())
    if lonely_labels:
        raise UserError(f"{len(lonely_labels)} label map(s) have no instance map in {inst_dir}: "
                        f"{_describe(lonely_labels)}", path=label_dir,
                        fix="add the matching *_instanceIds.png files or remove these label maps")
    if lonely_insts:
        raise UserError(f"{len(lonely_insts)} instance map(s) have no label map in {label_dir}: "
                        f"{_describe(lonely_insts)}", path=inst_dir,
                        fix="add the matching *_labelIds.png files or remove these instance maps")
    return [Pair(k, label_by_key[k], inst_by_key[k]) for k in sorted(label_by_key, key=lambda k: label_by_key[k])]


# ----------------------------------------------------------------------------------------------- reading

def _open_image(path: Path, what: str):
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise UserError(f"the {what} does not exist", path=path, fix="check the path")
    try:
        with warnings.catch_warnings():  # Pillow's notes on damaged metadata: the error below says it better
            warnings.simplefilter("ignore", UserWarning)
            img = Image.open(path)
            img.load()
    except Image.DecompressionBombError as exc:
        raise UserError(f"the {what} is far too large to be a Cityscapes map ({exc})", path=path,
                        fix=f"check that this is the {what} PNG") from exc
    except UnidentifiedImageError as exc:
        raise UserError(f"not an image file (cannot identify its format)", path=path,
                        fix=f"replace it with the real {what} PNG") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"the {what} is damaged or truncated ({exc})", path=path,
                        fix=f"copy the {what} again from the dataset") from exc
    return img


#: (width, height, new width, new height) of the resizes already told about: one log line per kind of resize
_RESIZES_TOLD: Set[Tuple[int, int, int, int]] = set()


def snapped_size(height: int, width: int, base: int) -> Tuple[int, int]:
    """Upstream's ``__make_power_2`` size: (round(H/base)*base, round(W/base)*base)."""
    return int(round(height / base) * base), int(round(width / base) * base)


def planned_size(pair: Pair, base: int = 32) -> Tuple[int, int]:
    """(H, W) of the pair's maps as the network will see them, from the label PNG's header alone."""
    from PIL import Image

    try:
        with Image.open(pair.label) as img:
            w, h = img.size
    except (OSError, SyntaxError, ValueError):
        w, h = _open_image(Path(pair.label), "label map").size  # raises the one-line error for this file
    return snapped_size(h, w, base)


def map_sizes(pairs, base: int = 32) -> Set[Tuple[int, int]]:
    """The (H, W) sizes the network will see for ``pairs`` (label headers only; unreadable maps are left to the
    reading stage, which names them)."""
    sizes = set()
    for pair in pairs:
        with contextlib.suppress(UserError):
            sizes.add(planned_size(pair, base))
    return sizes


def _snap(img, base: int, path: Path):
    """Upstream's ``__make_power_2``: nearest resize to round(size/base)*base, only when that changes the size."""
    from PIL import Image

    ow, oh = img.size
    h, w = snapped_size(oh, ow, base)
    if (h, w) == (oh, ow):
        return img
    if h == 0 or w == 0:
        raise UserError(f"the image is {ow}x{oh}, too small for the generator (needs at least {base // 2 + 1} "
                        "pixels each way)", path=path, fix="use larger label maps")
    if (ow, oh, w, h) not in _RESIZES_TOLD:  # correct behaviour, but the outputs will not have the input's size
        _RESIZES_TOLD.add((ow, oh, w, h))
        log.info("%s: %dx%d is not a multiple of %d, so it is resized to %dx%d (nearest, as upstream does); other "
                 "%dx%d images are resized the same way without another notice", path, ow, oh, base, w, h, ow, oh)
    return img.resize((w, h), Image.NEAREST)


def read_label_map(path: PathLike, *, base: int = 32) -> np.ndarray:
    """An 8-bit label map (PIL mode ``L`` or ``P``) as (H, W) uint8 ids, snapped to a multiple of ``base``."""
    path = Path(path)
    img = _open_image(path, "label map")
    if img.mode not in ("L", "P"):
        kind = {"RGB": "an RGB colour image", "RGBA": "an RGBA colour image", "I;16": "a 16-bit image",
                "I;16B": "a 16-bit image", "I": "a 32-bit integer image", "F": "a float image",
                "1": "a 1-bit image"}.get(img.mode, f"a mode-{img.mode} image")
        raise UserError(f"the label map is {kind}; pix2pixHD needs 8-bit label ids (PIL mode L)", path=path,
                        fix="use the Cityscapes *_gtFine_labelIds.png file, not the *_color.png visualisation "
                            "or an instance map")
    if base > 1:
        img = _snap(img, base, path)
    return np.asarray(img, dtype=np.uint8)


def read_instance_map(path: PathLike, *, base: int = 32) -> np.ndarray:
    """A 16-bit (or 32-bit) instance map as (H, W) int32 ids, snapped to a multiple of ``base``.

    An 8-bit instance map is accepted (upstream accepts it) with a warning: ids such as 26001 cannot be stored in
    8 bits, so the file has probably lost the boundaries between instances (upstream issue #11).
    """
    path = Path(path)
    img = _open_image(path, "instance map")
    if img.mode in ("L", "P"):
        log.warning("%s: the instance map is 8-bit, so Cityscapes instance ids (e.g. 26001) have been collapsed "
                    "and edges between touching instances are lost; use the 16-bit *_gtFine_instanceIds.png "
                    "(upstream issue #11)", path)
    elif img.mode not in ("I;16", "I;16L", "I;16B", "I"):
        raise UserError(f"the instance map has PIL mode {img.mode}; pix2pixHD needs a 16-bit greyscale "
                        "instance-id image", path=path, fix="use the Cityscapes *_gtFine_instanceIds.png file")
    if base > 1:
        img = _snap(img, base, path)
    return np.asarray(img).astype(np.int32)


def load_pair(pair: Pair, *, base: int = 32) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Read one pair: (label uint8 (H, W), instance int32 (H, W) or None). Sizes must agree."""
    label = read_label_map(pair.label, base=base)
    if pair.instance is None:
        return label, None
    inst = read_instance_map(pair.instance, base=base)
    if inst.shape != label.shape:
        raise UserError(f"the instance map is {inst.shape[1]}x{inst.shape[0]} but its label map "
                        f"{pair.label.name} is {label.shape[1]}x{label.shape[0]}", path=pair.instance,
                        fix="pair each label map with the instance map of the same image")
    return label, inst


# -------------------------------------------------------------------------------------------- conversion

@dataclass
class ConvertReport:
    """What :func:`convert_cityscapes` did, per city and in total."""

    pairs: int = 0
    copied: int = 0
    linked: int = 0
    unchanged: int = 0
    cities: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        how = f"{self.copied} copied, {self.linked} linked, {self.unchanged} already there"
        return f"{self.pairs} pairs from {len(self.cities)} cities ({how})"


def _place(src: Path, dst: Path, link: bool, report: ConvertReport) -> None:
    if dst.exists() or dst.is_symlink():
        same = dst.resolve() == src.resolve() or (dst.is_file() and filecmp.cmp(src, dst, shallow=False))
        if same:
            report.unchanged += 1
            return
        raise UserError("a different file with this name is already in the output folder", path=dst,
                        fix="remove it or choose empty output folders; nothing is overwritten")
    if link:
        os.symlink(src.resolve(), dst)
        report.linked += 1
    else:
        with open(src, "rb") as fin, atomic_open(dst, "wb") as fout:
            shutil.copyfileobj(fin, fout)
        report.copied += 1


def cityscapes_pairs(split_dir: PathLike) -> List[Pair]:
    """Pairs of ``SPLIT/<city>/*_gtFine_labelIds.png`` and ``*_gtFine_instanceIds.png``, by Cityscapes stem.

    Unpaired files are refused with their names.
    """
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise UserError("the Cityscapes split folder does not exist", path=split_dir,
                        fix="pass a gtFine split folder such as ./datasets/gtFine/val")
    labels = sorted(split_dir.glob("*/*" + LABEL_SUFFIX))
    insts = sorted(split_dir.glob("*/*" + INSTANCE_SUFFIX))
    if not labels and not insts:
        hint = " (it looks like the gtFine root: pass one split, e.g. gtFine/val)" if any(
            (split_dir / s).is_dir() for s in ("train", "val", "test")) else ""
        raise UserError(f"no city folders with *{LABEL_SUFFIX} files here{hint}", path=split_dir,
                        fix="pass a gtFine split folder whose subfolders are cities, such as gtFine/val")
    label_by_key = _index_by_key(labels, split_dir)
    inst_by_key = _index_by_key(insts, split_dir)
    lonely = sorted(label_by_key.keys() ^ inst_by_key.keys())
    if lonely:
        names = [(label_by_key.get(k) or inst_by_key[k]).name for k in lonely]
        raise UserError(f"{len(lonely)} file(s) have no partner (each label map needs its instance map and the "
                        f"reverse): {_describe(names)}", path=split_dir,
                        fix="restore the missing files or remove these ones")
    return [Pair(k, label_by_key[k], inst_by_key[k]) for k in sorted(label_by_key)]


def convert_cityscapes(split_dir: PathLike, inst_dir: PathLike, label_dir: PathLike, *, link: bool = False,
                       progress_fn=None) -> ConvertReport:
    """Gather a gtFine split (``SPLIT/<city>/*_gtFine_{labelIds,instanceIds}.png``) into flat folders.

    Every pair is checked before anything is written; unpaired files are refused with their names.
    """
    from .fileio import ensure_output_dir

    pairs = cityscapes_pairs(split_dir)
    inst_out = ensure_output_dir(inst_dir, what="instance output folder")
    label_out = ensure_output_dir(label_dir, what="label output folder")
    report = ConvertReport()
    for pair in (progress_fn(pairs) if progress_fn else pairs):
        _place(pair.label, label_out / pair.label.name, link, report)
        _place(pair.instance, inst_out / pair.instance.name, link, report)
        report.pairs += 1
        report.cities[pair.label.parent.name] += 1
    log.info("converted %s", report.summary())
    return report
