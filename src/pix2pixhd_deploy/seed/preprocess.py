"""The seed's preprocessing step (``pix2pixhd_preprocess.py``): each label/instance pair of a data root -> one
``.bin`` of upstream's 36-channel encoding (float32 (C, H, W), C = label_nc + 1), plus the sizes sidecar
(``pix2pixhd_sizes.json``) that ``postprocess`` reads to give each picture its map's size back.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from ..data.dataset import find_pairs, resolve_instances
from ..data.labelmaps import MapOptions, Pair, fitted_size
from ..data.labels import LABEL_NC
from ..errors import Failures, PathLike, UserError
from ..fileio import (
    atomic_write_array,
    atomic_write_text,
    check_free_space,
    ensure_output_dir,
    progress,
    remove_stale_temporaries,
)
from ..model.encoding import encode_pair, input_channels

log = logging.getLogger(__name__)


#: what preprocess writes beside the .bin files: each image's map size and input size, so postprocess can crop back
SIZES_SIDECAR = "pix2pixhd_sizes.json"



def _image_size(path: Path) -> Tuple[int, int]:
    """(height, width) from the file's header, without decoding it."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.size[1], img.size[0]
    except (OSError, SyntaxError, ValueError):
        return 0, 0  # decoding it says what is wrong, with the file named



def sizes_sidecar(pairs: List[Pair], options: MapOptions) -> Dict[str, object]:
    """The sidecar preprocess writes: the settings and, per ``.bin`` stem, the map's size and the input's size."""
    images = {}
    for pair in pairs:
        h, w = _image_size(pair.label)
        ih, iw = fitted_size(h, w, options.base, options.fit)
        images[pair.name] = {"height": h, "width": w, "input_height": ih, "input_width": iw}
    return {"tool": "pix2pixhd-deploy preprocess", "fit": options.fit, "instances": options.instances,
            "label_nc": options.label_nc, "size_multiple": options.base, "images": images}



def _check_sidecar(out_dir: Path, sidecar: Dict[str, object]) -> None:
    """Refuse to add to a folder of .bin files made with other settings (its old sidecar says which)."""
    path = out_dir / SIZES_SIDECAR
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"the sizes sidecar is unreadable ({exc})", path=path,
                        fix="delete it (and the .bin files beside it) to start afresh") from exc
    keys = ("fit", "instances", "label_nc", "size_multiple")
    diffs = [f"{k}: {old.get(k)!r} -> {sidecar[k]!r}" for k in keys if old.get(k) != sidecar[k]]
    if diffs:
        raise UserError("this folder holds .bin files made with other settings (" + "; ".join(diffs) + ")",
                        path=out_dir, fix="choose a new output folder, or empty this one")



def preprocess_dataset(dataroot: PathLike, out_dir: PathLike, *, label_nc: int = LABEL_NC,
                       use_instance: bool = True, instances: Optional[str] = None, fit: str = "resize",
                       base: int = 32, phase: str = "test", skip_existing: bool = True,
                       keep_going: bool = False) -> List[Path]:
    """The seed's ``pix2pixhd_preprocess.py``: one ``OUT_DIR/<label stem>.bin`` per pair, float32 (C, H, W), and
    ``OUT_DIR/pix2pixhd_sizes.json`` (:data:`SIZES_SIDECAR`: each map's size and input size, so that postprocess
    reshapes each output and, with ``fit="pad"``, crops it back to the map's size; ais_bench reads only .bin).

    ``instances`` (None: ``files`` when the data root has instance maps, else ``labels``; ``use_instance=False``
    means ``none``) and ``fit`` as :mod:`labelmaps`. Free disk is checked before the first write; files that
    already exist with the right size are kept, so an interrupted run resumes. A bad pair stops the run, or with
    ``keep_going`` is skipped (it gets no ``.bin``; the sidecar's ``failed`` records it) and all the bad ones are
    reported in one error at the end.
    """
    options = MapOptions(label_nc=label_nc, base=base, fit=fit,
                         instances=resolve_instances(dataroot, instances if use_instance else "none", phase=phase))
    pairs = find_pairs(dataroot, phase=phase, instances=options.instances)
    sidecar = sizes_sidecar(pairs, options)
    out_dir = Path(out_dir)
    _check_sidecar(out_dir, sidecar)
    failed = Failures("pair")

    def encode(pair: Pair) -> Optional[np.ndarray]:
        try:
            return encode_pair(pair, options=options)
        except UserError as exc:
            if not keep_going:
                raise
            failed.add(exc, pair.name)
            return None

    ready = _first_encoded(pairs, encode)
    if not ready:
        raise failed.error(0, path=dataroot)
    channels = input_channels(label_nc, options.use_instance)
    nbytes = {name: channels * e["input_height"] * e["input_width"] * 4 for name, e in sidecar["images"].items()}
    todo = [p for p in pairs if p.name not in failed
            and not (skip_existing and _has_bin(out_dir / f"{p.name}.bin", nbytes[p.name]))]
    out_dir = _prepare_output(out_dir, [nbytes[p.name] for p in todo], sidecar)
    if len(pairs) > len(todo) + len(failed):
        log.info("%d of %d .bin files are already complete in %s; skipping them", len(pairs) - len(todo) - len(failed),
                 len(pairs), out_dir)
    for pair in progress(todo, desc="preprocess"):
        x = ready.pop(pair.name, None)
        if x is None:
            x = encode(pair)
        if x is not None:
            atomic_write_array(out_dir / f"{pair.name}.bin", x)
    if failed:
        atomic_write_text(out_dir / SIZES_SIDECAR, json.dumps({**sidecar, "failed": failed.records}, indent=1,
                                                              sort_keys=True))
        raise failed.error(len(pairs) - len(failed), path=dataroot)
    return [out_dir / f"{p.name}.bin" for p in pairs]



def _first_encoded(pairs: List[Pair], encode: Callable[[Pair], Optional[np.ndarray]]) -> Dict[str, np.ndarray]:
    """The first pair that encodes (name -> input), read before anything is written: a bad input leaves nothing
    behind; empty when none does (``encode`` raised for a bad pair, or recorded it under ``--keep-going``)."""
    for pair in pairs:
        x = encode(pair)
        if x is not None:
            return {pair.name: x}
    return {}



def _has_bin(path: Path, nbytes: int) -> bool:
    return path.is_file() and path.stat().st_size == nbytes



def _prepare_output(out_dir: Path, sizes: List[int], sidecar: Dict[str, object]) -> Path:
    """Free disk checked for the inputs still to write (``sizes`` in bytes), then the folder made, the leftovers
    of an interrupted run removed and the sidecar written."""
    each, need = set(sizes), sum(sizes)
    check_free_space(out_dir, need, what=f"{len(sizes)} input tensors " + (
        f"of {next(iter(each)) / 2**20:.0f} MiB" if len(each) == 1 else f"({need / 2**20:.0f} MiB in all)"))
    out_dir = ensure_output_dir(out_dir)
    remove_stale_temporaries(out_dir)
    atomic_write_text(out_dir / SIZES_SIDECAR, json.dumps(sidecar, indent=1, sort_keys=True))
    return out_dir
