"""The one reader of label maps and instance maps: any form a user has them in, the generator's ids out.

In:  a label map PNG of one of these kinds, detected per file (a folder may mix them):

* 8-bit greyscale ids (PIL mode ``L``; the Cityscapes ``*_gtFine_labelIds.png``), read as they are;
* 16-bit greyscale ids (``I;16``/``I``), ids checked against ``label_nc`` before they are narrowed to 8 bits;
* a palette PNG whose indices are ids: its palette is greyscale, the Cityscapes palette in id order (upstream's
  ``labelcolormap(35)``) or the PASCAL VOC palette (upstream's ``labelcolormap(N)`` for other N, and labelme's);
* Cityscapes colours (``*_gtFine_color.png``, painted masks) as RGB, RGBA (alpha ignored) or a palette of
  Cityscapes colours, converted through :data:`labels.COLOUR_TO_ID` (car, not licence plate; pole, not polegroup;
  black is ego vehicle).

Each kind other than 8-bit ids is said once per process in the log. A colour in no table is one :class:`UserError`
naming the file, the colour, its pixel count and where it first occurs (x, y); ids out of range name the ids and
their pixel counts. The file is only read, never changed.

Out: :func:`load_maps` gives :class:`Maps`: the label ids (H, W) uint8, the instance ids (H, W) int32 or None, and
the map's own size, with both maps fitted to a multiple of ``base`` (32 for label2city_1024p) by ``fit``:

* ``resize``: upstream's ``__make_power_2``, a nearest resize to round(size / base) * base (the picture then has
  that size);
* ``pad``: edge replication on the bottom and right to the next multiple (each added row and column repeats the
  last id, so the padding draws no new instance edge); the caller crops the picture back to ``size`` exactly.

The instance map comes from ``instances``: ``files`` (the pair's instance map), ``labels`` (derived from the label
map as Cityscapes defines it, :func:`instances_from_labels`) or ``none`` (a model trained with ``--no_instance``).
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Optional, Set, Tuple

import numpy as np

from ..errors import PathLike, UserError
from ..fileio import stem_of
from .labels import BLACK_ID, COLOUR_TO_ID, LABEL_NC, PALETTE, THING_IDS

log = logging.getLogger(__name__)

INSTANCE_MODES = ("files", "labels", "none")
FIT_MODES = ("resize", "pad")
#: Cityscapes numbers the k-th instance of label L as L * 1000 + k; components past the 1000th of one class
#: continue from here, above every Cityscapes id, so that no two instances share an id.
OVERFLOW_INSTANCE_ID = 100_000

# Pillow's notes on damaged metadata (UserWarnings from its plugins) would print lines beside the one error a damaged
# map gets, which says it better. One narrow filter for the process, set once: ``warnings.catch_warnings`` swaps the
# process-wide filter list, so around each open in the decode threads it could leave another thread's list behind.
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")

# the Cityscapes colour table as sorted packed 0xRRGGBB keys, for a vectorised lookup
_KEYS = np.array(sorted((r << 16) | (g << 8) | b for r, g, b in COLOUR_TO_ID), dtype=np.int64)
_KEY_IDS = np.array([COLOUR_TO_ID[((k >> 16) & 255, (k >> 8) & 255, k & 255)] for k in _KEYS], dtype=np.uint8)
_COLOUR_RULE = "car, not licence plate; pole, not polegroup; black -> ego vehicle (id %d)" % BLACK_ID


# ------------------------------------------------------------------------------------------- the options

@dataclass(frozen=True)
class MapOptions:
    """How maps are read for one run: checked once, here."""

    label_nc: Optional[int] = LABEL_NC  # ids must be below it (None: below 256)
    instances: str = "files"   # files | labels | none
    fit: str = "resize"        # resize | pad
    base: int = 32             # the generator's size multiple

    def __post_init__(self) -> None:
        if self.instances not in INSTANCE_MODES:
            raise UserError(f"unknown --instances {self.instances!r}", fix="use files, labels or none")
        if self.fit not in FIT_MODES:
            raise UserError(f"unknown --fit {self.fit!r}", fix="use resize or pad")
        if self.base < 1:
            raise UserError(f"the size multiple must be at least 1, not {self.base}", fix="pass 32 (or 16)")

    @property
    def use_instance(self) -> bool:
        return self.instances != "none"


class Maps(NamedTuple):
    label: np.ndarray            # (H, W) uint8 ids, fitted
    inst: Optional[np.ndarray]   # (H, W) int32 ids, fitted, or None
    size: Tuple[int, int]        # (h, w) of the map as given: the picture is cropped to it with fit=pad


# ----------------------------------------------------------------------------------------------- opening

class Upload(NamedTuple):
    """A file's bytes without a file (an HTTP upload): read like a path; ``name`` is what errors call it."""

    name: str
    data: bytes

    def __fspath__(self) -> str:
        return self.name


def _source(path: "PathLike | Upload"):
    return path if isinstance(path, Upload) else Path(path)


def open_image(path: "Path | Upload", what: str):
    """A loaded Pillow image, or one UserError for a missing, damaged or huge file."""
    import io

    from PIL import Image, UnidentifiedImageError

    if not isinstance(path, Upload) and not path.is_file():
        raise UserError(f"the {what} does not exist", path=path, fix="check the path")
    try:
        img = Image.open(io.BytesIO(path.data) if isinstance(path, Upload) else path)
        img.load()
    except Image.DecompressionBombError as exc:
        raise UserError(f"the {what} is far too large to be a Cityscapes map ({exc})", path=path,
                        fix=f"check that this is the {what} PNG") from exc
    except UnidentifiedImageError as exc:
        raise UserError("not an image file (cannot identify its format)", path=path,
                        fix=f"replace it with the real {what} PNG") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"the {what} is damaged or truncated ({exc})", path=path,
                        fix=f"copy the {what} again from the dataset") from exc
    return img


#: kinds of conversion already told about: one log line each per process
_TOLD: Set[Tuple] = set()


def _tell_once(key: Tuple, message: str, *args) -> None:
    if key not in _TOLD:
        _TOLD.add(key)
        log.info(message, *args)


# ------------------------------------------------------------------------------------------------ checks

def check_label_ids(label: np.ndarray, label_nc: int, *, path: Optional[PathLike] = None) -> None:
    """Upstream's scatter crashes on an id >= label_nc (issues #206, #173); we say which ids and how many pixels."""
    if label.size and (int(label.max()) >= label_nc or (label.dtype.kind == "i" and int(label.min()) < 0)):
        bad, counts = np.unique(label[(label >= label_nc) | (label < 0)], return_counts=True)
        shown = ", ".join(f"{int(v)} ({int(n)} px)" for v, n in zip(bad[:8], counts[:8]))
        shown += f" and {bad.size - 8} more" if bad.size > 8 else ""
        raise UserError(f"label ids {shown} are outside 0..{label_nc - 1} (label_nc={label_nc})", path=path,
                        fix="use Cityscapes labelIds (not trainIds with 255) or pass the --label-nc your model "
                            "was trained with")


def _unknown_colours_error(packed: np.ndarray, unknown: np.ndarray, width: int, path: Path, what: str) -> UserError:
    """One line: the most frequent unknown colours, their pixel counts and first occurrences (x, y)."""
    values, first, counts = np.unique(packed[unknown], return_index=True, return_counts=True)
    where = np.flatnonzero(unknown)[first]
    order = np.argsort(-counts, kind="stable")
    shown = []
    for i in order[:3]:
        v = int(values[i])
        y, x = divmod(int(where[i]), width)
        shown.append(f"({v >> 16}, {(v >> 8) & 255}, {v & 255}) in {int(counts[i])} px, first at x={x}, y={y}")
    more = f" and {values.size - 3} more colours" if values.size > 3 else ""
    return UserError(f"{what} has colours that are no Cityscapes label colour: " + "; ".join(shown) + more,
                     path=path, fix="paint with the exact colours of cityscapesscripts' labels.py and no "
                                    "anti-aliasing, or give 8-bit label ids (*_gtFine_labelIds.png)")


def colours_to_ids(rgb: np.ndarray, *, path: PathLike, what: str = "the colour label map") -> np.ndarray:
    """(H, W, 3) uint8 Cityscapes colours -> (H, W) uint8 label ids, or one UserError naming unknown colours."""
    rgb = np.asarray(rgb)
    packed = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    at = np.minimum(np.searchsorted(_KEYS, packed), _KEYS.size - 1)
    unknown = _KEYS[at] != packed
    if unknown.any():
        raise _unknown_colours_error(packed.ravel(), unknown.ravel(), rgb.shape[1], _source(path), what)
    return _KEY_IDS[at]


# ---------------------------------------------------------------------------------------- the label reader

def _voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC palette (bit-interleaved), as upstream's ``labelcolormap(N)`` for N != 35 and labelme."""
    out = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out[i] = (r, g, b)
    return out


_ID_PALETTES = (("greyscale", np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)),
                ("Cityscapes, in id order", np.concatenate([PALETTE, np.zeros((256 - len(PALETTE), 3), np.uint8)])),
                ("PASCAL VOC", _voc_palette()))


def _palette_kind(img, index: np.ndarray) -> Tuple[str, np.ndarray]:
    """('ids', palette name) when the palette says its indices are ids, else ('colours', (256, 3) palette)."""
    raw = np.array(img.getpalette() or [], dtype=np.uint8)
    palette = np.zeros((256, 3), np.uint8)
    palette[: raw.size // 3] = raw[: raw.size // 3 * 3].reshape(-1, 3)[:256]
    used = np.flatnonzero(np.bincount(index.ravel(), minlength=256))
    for name, ids_palette in _ID_PALETTES:
        if np.array_equal(palette[used], ids_palette[used]):
            return "ids", name
    return "colours", palette


def read_label_ids(path: PathLike, *, label_nc: Optional[int] = None) -> np.ndarray:
    """A label map of any kind (module docstring) -> (H, W) uint8 label ids at the file's own size.

    ``label_nc``: ids must be below it (None: only below 256, the most 8 bits hold).
    """
    path = _source(path)
    img = open_image(path, "label map")
    mode = img.mode
    if mode == "L":
        ids = np.asarray(img, dtype=np.uint8)
    elif mode in ("I;16", "I;16L", "I;16B", "I"):
        wide = np.asarray(img).astype(np.int64)
        check_label_ids(wide, label_nc or 256, path=path)
        _tell_once(("16-bit",), "%s: a 16-bit label map, read as label ids; other 16-bit label maps are read the "
                                "same way without another notice", path)
        ids = wide.astype(np.uint8)
    elif mode == "P":
        index = np.asarray(img, dtype=np.uint8)
        kind, palette = _palette_kind(img, index)
        if kind == "ids":
            _tell_once(("palette ids", palette), "%s: a palette PNG with the %s palette: its indices are read as "
                                                 "label ids; other such files without another notice", path, palette)
            ids = index
        else:
            _tell_once(("palette colours",), "%s: a palette PNG of Cityscapes colours, converted to label ids (%s); "
                                             "other such files without another notice", path, _COLOUR_RULE)
            ids = colours_to_ids(palette[index], path=path,
                                 what="the palette label map (its palette is not greyscale, Cityscapes in id order "
                                      "or PASCAL VOC, so its colours are read)")
    elif mode in ("RGB", "RGBA"):
        _tell_once(("colours", mode), "%s: an %s label map of Cityscapes colours, converted to label ids (%s%s); "
                                      "other such files without another notice", path, mode, _COLOUR_RULE,
                   "; alpha ignored" if mode == "RGBA" else "")
        ids = colours_to_ids(np.asarray(img)[..., :3], path=path)
    else:
        kind = {"I": "a 32-bit integer image", "F": "a float image", "1": "a 1-bit image",
                "LA": "a greyscale image with alpha", "PA": "a palette image with alpha"}.get(mode,
                                                                                           f"a mode-{mode} image")
        raise UserError(f"the label map is {kind}; label maps are 8- or 16-bit greyscale ids, a palette PNG or "
                        "Cityscapes colours (RGB/RGBA)", path=path,
                        fix="use the Cityscapes *_gtFine_labelIds.png (or *_gtFine_color.png) file")
    if label_nc is not None:
        check_label_ids(ids, label_nc, path=path)
    return ids


def read_instance_ids(path: PathLike) -> np.ndarray:
    """A 16-bit (or 32-bit) instance map -> (H, W) int32 ids at the file's own size.

    An 8-bit instance map is accepted (upstream accepts it) with a warning: ids such as 26001 cannot be stored in
    8 bits, so the file has probably lost the boundaries between instances (upstream issue #11).
    """
    path = _source(path)
    img = open_image(path, "instance map")
    if img.mode in ("L", "P"):
        log.warning("%s: the instance map is 8-bit, so Cityscapes instance ids (e.g. 26001) have been collapsed "
                    "and edges between touching instances are lost; use the 16-bit *_gtFine_instanceIds.png "
                    "(upstream issue #11)", path)
    elif img.mode not in ("I;16", "I;16L", "I;16B", "I"):
        raise UserError(f"the instance map has PIL mode {img.mode}; pix2pixHD needs a 16-bit greyscale "
                        "instance-id image", path=path,
                        fix="use the Cityscapes *_gtFine_instanceIds.png file, or --instances labels to derive "
                            "the instance map from the label map")
    return np.asarray(img).astype(np.int32)


def instances_from_labels(label: np.ndarray) -> np.ndarray:
    """An instance map derived from label ids the Cityscapes way: (H, W) int32.

    Stuff pixels take their label id; each 4-connected component of a thing class (``hasInstances``) becomes one
    instance, L * 1000 + k (k from 0). Two touching instances of one class become one, so the edge between them is
    lost; everything else draws the same edges as a true instance map (edges compare 4-neighbours only).
    """
    from scipy import ndimage

    inst = label.astype(np.int32)
    overflow = OVERFLOW_INSTANCE_ID
    present = np.flatnonzero(np.bincount(label.ravel(), minlength=LABEL_NC))
    for thing in (t for t in THING_IDS if t in present):
        components, n = ndimage.label(label == thing)
        k = components.astype(np.int32) - 1
        ids = np.where(k < 1000, thing * 1000 + k, overflow + k - 1000)
        mask = components > 0
        inst[mask] = ids[mask]
        overflow += max(0, n - 1000)
    return inst


# -------------------------------------------------------------------------------------------------- fitting

def fitted_size(height: int, width: int, base: int, fit: str) -> Tuple[int, int]:
    """The size the generator gets: upstream's round to a multiple (resize) or the next multiple (pad)."""
    if fit == "pad":
        return -(-height // base) * base, -(-width // base) * base
    return int(round(height / base) * base), int(round(width / base) * base)


def planned_size(pair: "Pair", base: int = 32, fit: str = "resize") -> Tuple[int, int]:
    """(H, W) of the pair's maps as the network will see them, from the label PNG's header alone."""
    from PIL import Image

    try:
        with Image.open(pair.label) as img:
            w, h = img.size
    except (OSError, SyntaxError, ValueError):
        w, h = open_image(Path(pair.label), "label map").size  # raises the one-line error for this file
    return fitted_size(h, w, base, fit)


def fit_map(ids: np.ndarray, base: int, fit: str, *, path: PathLike) -> np.ndarray:
    """One map (label or instance ids) fitted to a multiple of ``base`` (module docstring)."""
    from PIL import Image

    h, w = ids.shape
    nh, nw = fitted_size(h, w, base, fit)
    if (nh, nw) == (h, w):
        return ids
    if fit == "pad":
        return np.pad(ids, ((0, nh - h), (0, nw - w)), mode="edge")
    if nh == 0 or nw == 0:
        raise UserError(f"the image is {w}x{h}, too small for the generator (needs at least {base // 2 + 1} "
                        "pixels each way)", path=path, fix="use larger label maps, or --fit pad")
    # correct behaviour, but the outputs will not have the input's size: one line per kind of resize
    _tell_once(("resize", w, h, nw, nh), "%s: %dx%d is not a multiple of %d, so it is resized to %dx%d (nearest, as "
                                         "upstream does; --fit pad keeps the size); other %dx%d images are resized "
                                         "the same way without another notice", path, w, h, base, nw, nh, w, h)
    img = Image.fromarray(ids) if ids.dtype == np.uint8 else Image.fromarray(ids.astype(np.int32), "I")
    return np.asarray(img.resize((nw, nh), Image.NEAREST)).astype(ids.dtype, copy=False)


def crop_to(array: np.ndarray, size: Optional[Tuple[int, int]], *, channels_first: bool = False) -> np.ndarray:
    """``array`` cut back to ``size`` (h, w) from its top-left corner, where ``fit=pad`` put the map."""
    if size is None:
        return array
    h, w = size
    return array[..., :h, :w] if channels_first else array[:h, :w]


def read_label_map(path: PathLike, *, base: int = 32, fit: str = "resize",
                   label_nc: Optional[int] = None) -> np.ndarray:
    """:func:`read_label_ids` fitted to a multiple of ``base``: (H, W) uint8."""
    ids = read_label_ids(path, label_nc=label_nc)
    return fit_map(ids, base, fit, path=path) if base > 1 else ids


def read_instance_map(path: PathLike, *, base: int = 32, fit: str = "resize") -> np.ndarray:
    """:func:`read_instance_ids` fitted to a multiple of ``base``: (H, W) int32."""
    inst = read_instance_ids(path)
    return fit_map(inst, base, fit, path=path) if base > 1 else inst


# ------------------------------------------------------------------------------------------- one sample

def load_maps(pair: "Pair", options: MapOptions = MapOptions()) -> Maps:
    """Read one pair as ``options`` say: the label ids, the instance ids (file, derived or none), both fitted."""
    label = read_label_ids(pair.label, label_nc=options.label_nc)
    inst = None
    if options.instances == "files":
        if pair.instance is None:
            raise UserError("this label map has no instance map", path=pair.label,
                            fix="add its *_instanceIds.png, or pass --instances labels (derive it) or --instances "
                                "none (a model trained without instance maps)")
        inst = read_instance_ids(pair.instance)
        if inst.shape != label.shape:
            raise UserError(f"the instance map is {inst.shape[1]}x{inst.shape[0]} but its label map "
                            f"{pair.label.name} is {label.shape[1]}x{label.shape[0]}", path=pair.instance,
                            fix="pair each label map with the instance map of the same image")
    return fit_maps(label, inst, options, path=pair.label, inst_path=pair.instance, checked=True)


def fit_maps(label: np.ndarray, inst: Optional[np.ndarray], options: MapOptions = MapOptions(), *,
             path: PathLike = "label map", inst_path: Optional[PathLike] = None, checked: bool = False) -> Maps:
    """Label ids (H, W) and instance ids (or None) already read, made into what the network takes as ``options``
    say (ids checked, instances derived with ``labels`` or dropped with ``none``, both fitted): :func:`load_maps`
    after reading, and the Python API's way in for arrays. ``path``: what the errors call the maps; ``checked``: the
    ids were checked when they were read."""
    label = np.asarray(label)
    if label.ndim != 2 or label.dtype.kind not in "ui":
        raise UserError(f"a label map must be (H, W) integer ids, not {label.dtype} of shape {label.shape}",
                        path=path, fix="pass the ids (e.g. *_gtFine_labelIds.png read as an array), or a file path")
    if not checked:  # read_label_ids checked a file's ids already
        check_label_ids(label, options.label_nc if options.label_nc is not None else 256, path=path)
    label = label.astype(np.uint8, copy=False)
    if options.instances == "labels":
        inst = instances_from_labels(label)
    elif options.instances == "none":
        inst = None
    elif inst is None:
        raise UserError("this label map has no instance map", path=path,
                        fix="give its instance map, or use instances='labels' (derive it) or 'none'")
    else:
        inst = np.asarray(inst)
        if inst.shape != label.shape or inst.dtype.kind not in "ui":
            raise UserError(f"the instance map ({inst.dtype} {inst.shape}) does not match its label map "
                            f"{label.shape}", path=inst_path or path, fix="give the instance ids of the same image")
        inst = inst.astype(np.int32, copy=False)
    size = label.shape
    if options.base > 1:
        label = fit_map(label, options.base, options.fit, path=path)
        if inst is not None:
            inst = fit_map(inst, options.base, options.fit, path=inst_path or path)
    return Maps(label, inst, (int(size[0]), int(size[1])))


@dataclass(frozen=True)
class Pair:
    """One input sample. ``name`` (the label file's stem) names every output made from it."""

    key: str
    label: Path
    instance: Optional[Path]

    @property
    def name(self) -> str:
        return stem_of(self.label)
