"""Dataset discovery and reading: Cityscapes gtFine folders and pix2pixHD data roots in, label/instance pairs out.

* :func:`convert_cityscapes` is the seed's ``datasets_deal.py``: it gathers ``*_gtFine_labelIds.png`` and
  ``*_gtFine_instanceIds.png`` from the city folders of one gtFine split into flat ``test_label/`` and
  ``test_inst/`` folders, copying (atomically) or symlinking.
* :func:`find_pairs` lists ``DATAROOT/<phase>_label`` and ``DATAROOT/<phase>_inst`` (recursively, upstream's image
  extensions) and pairs the files **by their stem**, not by sorted position as upstream does (UPSTREAM.md §3), so a
  missing or extra file is an error instead of a silent mismatch.
  :func:`resolve_instances` says where instance maps come from when the user did not: ``files`` when
  ``<phase>_inst/`` holds any, else ``labels`` (derived from the label maps), said in one log line.
* Reading the maps themselves (any kind of label map, fitted to the generator's size) is :mod:`labelmaps`.
* With ``from_colour``, :func:`convert_cityscapes` writes ``*_gtFine_labelIds.png`` converted from colour maps
  (``*_gtFine_color.png`` of a split, or any folder of painted Cityscapes-colour masks).
"""
from __future__ import annotations

import contextlib
import filecmp
import logging
import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

import numpy as np

from ..errors import PathLike, UserError
from ..fileio import atomic_open, stem_of
from .labelmaps import INSTANCE_MODES, MapOptions, Pair, load_maps, planned_size, read_label_ids

log = logging.getLogger(__name__)

#: upstream ``data/image_folder.py`` IMG_EXTENSIONS
IMG_EXTENSIONS = (".jpg", ".JPG", ".jpeg", ".JPEG", ".png", ".PNG", ".ppm", ".PPM", ".bmp", ".BMP", ".tiff")
LABEL_SUFFIX = "_gtFine_labelIds.png"
INSTANCE_SUFFIX = "_gtFine_instanceIds.png"
COLOUR_SUFFIX = "_gtFine_color.png"
_PAIR_SUFFIX = re.compile(r"(_gt(Fine|Coarse))?_(labelIds|instanceIds|labels?|inst(ances?)?|colou?r)$")


def pair_key(path: PathLike) -> str:
    """The stem shared by a label map and its instance map.

    ``frankfurt_000000_000576_gtFine_labelIds.png`` and ``frankfurt_000000_000576_gtFine_instanceIds.png`` both give
    ``frankfurt_000000_000576``; files without a known suffix pair when their stems are equal.
    """
    return _PAIR_SUFFIX.sub("", stem_of(path))




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


def resolve_instances(dataroot: PathLike, instances: Optional[str] = None, *, phase: str = "test") -> str:
    """Where the instance maps come from: ``instances`` when given, else ``files`` when ``<phase>_inst/`` holds any
    image and ``labels`` (derived from the label maps, said in one log line) when the data root has none."""
    if instances is not None:
        if instances not in INSTANCE_MODES:
            raise UserError(f"unknown --instances {instances!r}", fix="use files, labels or none")
        return instances
    inst_dir = Path(dataroot) / f"{phase}_inst"
    if inst_dir.is_dir() and _list_images(inst_dir):
        return "files"
    log.info("%s has no instance maps (no %s_inst/ images), so they are derived from the label maps "
             "(--instances labels: touching objects of one class become one instance)", dataroot, phase)
    return "labels"


def find_pairs(dataroot: PathLike, *, phase: str = "test", use_instance: bool = True,
               instances: Optional[str] = None) -> List[Pair]:
    """Pairs of ``<dataroot>/<phase>_label`` and ``<dataroot>/<phase>_inst`` files, sorted by label path.

    ``instances`` (``files``, ``labels`` or ``none``; None: ``files`` when ``use_instance`` else ``none``): only
    ``files`` pairs label maps with instance maps; the others give pairs without an instance file.
    """
    instances = instances or ("files" if use_instance else "none")
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
    if instances != "files":
        return [Pair(k, p, None) for k, p in sorted(label_by_key.items(), key=lambda kv: kv[1])]
    if not inst_dir.is_dir():
        raise UserError(f"there is no {phase}_inst/ folder here", path=dataroot,
                        fix=f"add {phase}_inst/ with the *_gtFine_instanceIds.png files, or pass --instances "
                            "labels to derive them from the label maps (--instances none for a model trained "
                            "without instance maps)")
    inst_by_key = _index_by_key(_list_images(inst_dir), inst_dir)
    lonely_labels = sorted(label_by_key[k].name for k in label_by_key.keys() - inst_by_key.keys())
    lonely_insts = sorted(inst_by_key[k].name for k in inst_by_key.keys() - label_by_key.keys())
    if lonely_labels:
        raise UserError(f"{len(lonely_labels)} label map(s) have no instance map in {inst_dir}: "
                        f"{_describe(lonely_labels)}", path=label_dir,
                        fix="add the matching *_instanceIds.png files, remove these label maps, or pass "
                            "--instances labels to derive every instance map from its label map")
    if lonely_insts:
        raise UserError(f"{len(lonely_insts)} instance map(s) have no label map in {label_dir}: "
                        f"{_describe(lonely_insts)}", path=inst_dir,
                        fix="add the matching *_labelIds.png files or remove these instance maps")
    return [Pair(k, label_by_key[k], inst_by_key[k]) for k in sorted(label_by_key, key=lambda k: label_by_key[k])]


# ----------------------------------------------------------------------------------------------- reading
# (the maps themselves: labelmaps.py)

def map_sizes(pairs, base: int = 32, fit: str = "resize") -> Set[Tuple[int, int]]:
    """The (H, W) sizes the network will see for ``pairs`` (label headers only; unreadable maps are left to the
    reading stage, which names them)."""
    sizes = set()
    for pair in pairs:
        with contextlib.suppress(UserError):
            size = planned_size(pair, base, fit)
            if min(size) > 0:  # a map too small for the generator gets its own error when it is read
                sizes.add(size)
    return sizes


def load_pair(pair: Pair, *, base: int = 32) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """(label uint8, instance int32 or None) as :func:`labelmaps.load_maps` reads them with the pair's own
    instance file (if it has one), resized as upstream; ids are checked only against 8 bits here."""
    maps = load_maps(pair, MapOptions(label_nc=None, base=base,
                                      instances="files" if pair.instance is not None else "none"))
    return maps.label, maps.inst


# -------------------------------------------------------------------------------------------- conversion

@dataclass
class ConvertReport:
    """What :func:`convert_cityscapes` did, per city and in total."""

    pairs: int = 0
    copied: int = 0
    linked: int = 0
    converted: int = 0
    unchanged: int = 0
    cities: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        how = f"{self.copied} copied, {self.linked} linked, {self.unchanged} already there"
        if self.converted:
            how = f"{self.converted} converted from colours, " + how
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


def cityscapes_pairs(split_dir: PathLike, *, label_suffix: str = LABEL_SUFFIX,
                     instances: str = "files") -> List[Pair]:
    """Pairs of ``SPLIT/<city>/*<label_suffix>`` and ``*_gtFine_instanceIds.png``, by Cityscapes stem.

    Unpaired files are refused with their names; with ``instances`` other than ``files`` the instance maps are
    not looked for.
    """
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise UserError("the Cityscapes split folder does not exist", path=split_dir,
                        fix="pass a gtFine split folder such as ./datasets/gtFine/val")
    labels = sorted(split_dir.glob("*/*" + label_suffix))
    insts = sorted(split_dir.glob("*/*" + INSTANCE_SUFFIX)) if instances == "files" else []
    if not labels and not insts:
        hint = " (it looks like the gtFine root: pass one split, e.g. gtFine/val)" if any(
            (split_dir / s).is_dir() for s in ("train", "val", "test")) else ""
        raise UserError(f"no city folders with *{label_suffix} files here{hint}", path=split_dir,
                        fix="pass a gtFine split folder whose subfolders are cities, such as gtFine/val")
    label_by_key = _index_by_key(labels, split_dir)
    if instances != "files":
        return [Pair(k, label_by_key[k], None) for k in sorted(label_by_key)]
    return _paired(label_by_key, _index_by_key(insts, split_dir), split_dir,
                   "each label map needs its instance map and the reverse")


def _paired(map_by_key: Dict[str, Path], inst_by_key: Dict[str, Path], folder: Path, rule: str) -> List[Pair]:
    """Pairs by key, or one UserError naming every file without its partner (``rule`` says what pairs with what)."""
    lonely = sorted(map_by_key.keys() ^ inst_by_key.keys())
    if lonely:
        names = [(map_by_key.get(k) or inst_by_key[k]).name for k in lonely]
        raise UserError(f"{len(lonely)} file(s) have no partner ({rule}): {_describe(names)}", path=folder,
                        fix="restore the missing files or remove these ones")
    return [Pair(k, map_by_key[k], inst_by_key[k]) for k in sorted(map_by_key)]


def colour_pairs(source: PathLike) -> List[Pair]:
    """Colour label maps to convert: a gtFine split's ``<city>/*_gtFine_color.png``, or every image of a folder of
    painted masks; each with its ``*_gtFine_instanceIds.png`` when the source has instance maps (all or none)."""
    source = Path(source)
    if not source.is_dir():
        raise UserError("the folder of colour label maps does not exist", path=source,
                        fix="pass a gtFine split (city folders with *_gtFine_color.png) or a folder of colour maps")
    colours = sorted(source.glob("*/*" + COLOUR_SUFFIX))
    insts = sorted(source.glob("*/*" + INSTANCE_SUFFIX))
    if not colours:  # a flat (or nested) folder of painted masks
        everything = _list_images(source)
        insts = [p for p in everything if p.name.endswith(INSTANCE_SUFFIX)]
        colours = [p for p in everything if not p.name.endswith((INSTANCE_SUFFIX, LABEL_SUFFIX))]
    if not colours:
        raise UserError("no colour label maps here", path=source,
                        fix="pass a gtFine split (city folders with *_gtFine_color.png) or a folder of colour maps")
    colour_by_key = _index_by_key(colours, source)
    if not insts:
        return [Pair(k, colour_by_key[k], None) for k in sorted(colour_by_key)]
    return _paired(colour_by_key, _index_by_key(insts, source), source,
                   "with instance maps present, each colour map needs its instance map and the reverse")


def _write_ids(src: Path, dst: Path, report: ConvertReport) -> None:
    """``src`` (any kind of label map) written as an 8-bit labelIds PNG; an equal file already there is kept."""
    from ..fileio import atomic_save_image

    ids = read_label_ids(src)
    if dst.exists() or dst.is_symlink():
        if dst.is_file() and np.array_equal(read_label_ids(dst), ids):
            report.unchanged += 1
            return
        raise UserError("a different file with this name is already in the output folder", path=dst,
                        fix="remove it or choose empty output folders; nothing is overwritten")
    atomic_save_image(dst, ids)
    report.converted += 1


def convert_cityscapes(split_dir: PathLike, inst_dir: PathLike, label_dir: PathLike, *, link: bool = False,
                       from_colour: bool = False, progress_fn=None) -> ConvertReport:
    """Gather a gtFine split (``SPLIT/<city>/*_gtFine_{labelIds,instanceIds}.png``) into flat folders.

    With ``from_colour`` the label maps are colour maps (:func:`colour_pairs`), written as
    ``<key>_gtFine_labelIds.png`` 8-bit ids; instance maps are gathered when the source has them (else
    ``inst_dir`` is left alone and ``run`` derives them). Every pair is checked before anything is written;
    unpaired files are refused with their names.
    """
    from ..fileio import ensure_output_dir

    pairs = colour_pairs(split_dir) if from_colour else cityscapes_pairs(split_dir)
    with_instances = any(p.instance is not None for p in pairs)
    inst_out = ensure_output_dir(inst_dir, what="instance output folder") if with_instances else None
    label_out = ensure_output_dir(label_dir, what="label output folder")
    report = ConvertReport()
    for pair in (progress_fn(pairs) if progress_fn else pairs):
        if from_colour:
            _write_ids(pair.label, label_out / (pair.key + LABEL_SUFFIX), report)
        else:
            _place(pair.label, label_out / pair.label.name, link, report)
        if pair.instance is not None:
            _place(pair.instance, inst_out / pair.instance.name, link, report)
        report.pairs += 1
        report.cities[pair.label.parent.name] += 1
    if not with_instances:
        log.info("%s has no instance maps, so none were written to %s; run derives them from the label maps "
                 "(--instances labels)", split_dir, inst_dir)
    log.info("converted %s", report.summary())
    return report
