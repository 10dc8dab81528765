"""ais_bench's file conventions (ASCEND.md §2.2-2.4), for ``infer``: the input files in, the output files out.

In:  ``--input``: per model input, a folder (or comma-separated files) of raw ``.bin`` / ``.npy`` samples in that
     input's dtype and per-sample shape (the seed's: float32 (36, H, W)); several inputs take one folder each,
     comma-separated. The k-th file of each folder makes sample k; folders are read in natural sort order.
Out: samples as tuples of paths, checked for size before anything runs (:func:`scan_inputs`), batches of feeds
     (name -> (N, ...) array; :func:`load_batch`), and each sample's output written as BIN (the raw slice), NPY (with
     its batch axis, e.g. (1, 3, H, W)) or TXT (:func:`write_output`).

A dynamic image size comes from ``--dymHW``, else preprocess's sizes sidecar beside the inputs, else the size most
files have at the 1:2 Cityscapes aspect. A wrong size, NaN or infinity is a :class:`UserError` naming the file.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import Failures, UserError
from ..fileio import atomic_open, load_npy, natural_sorted, raw_file_hw, stem_of
from ..runners import Runner

INPUT_SUFFIXES = (".bin", ".BIN", ".npy", ".NPY")
OUTFMTS = ("BIN", "NPY", "TXT")
CITYSCAPES_HW = (1024, 2048)
#: one model input sample: a file per model input (None: pure inference on zeros)
Sample = Optional[Tuple[Path, ...]]


def list_input_files(spec: str) -> List[Path]:
    """One ``--input`` entry: comma-separated files and folders; folder contents natural-sorted."""
    files: List[Path] = []
    for part in [p for p in spec.split(",") if p.strip()]:
        path = Path(part.strip())
        if path.is_dir():
            files.extend(_folder_inputs(path))
        elif path.is_file():
            files.append(path)
        else:
            raise UserError("the input does not exist", path=path, fix="pass a folder of .bin files or file paths")
    if not files:
        raise UserError("no input files given", fix="pass --input DIR")
    return files


def _folder_inputs(path: Path) -> List[Path]:
    found = natural_sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(INPUT_SUFFIXES))
    if not found:
        raise UserError("no .bin or .npy input files in this folder", path=path,
                        fix="run pix2pixhd_preprocess.py first, or point --input at its output folder")
    return found


def input_samples(spec: str, names: Sequence[str]) -> List[Tuple[Path, ...]]:
    """ais_bench's ``--input`` for a model with inputs ``names``: one folder (or file) per input, comma-separated,
    the k-th file of each folder making sample k; a one-input model also takes a list of files and folders."""
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if len(names) == 1:
        return [(f,) for f in list_input_files(spec)]
    if len(parts) != len(names):
        raise UserError(f"--input has {len(parts)} entries but the model has {len(names)} inputs "
                        f"({', '.join(names)})", fix="pass one folder per model input, comma-separated, in that order")
    columns = []
    for part in parts:
        path = Path(part)
        if not path.exists():
            raise UserError("the input does not exist", path=path, fix="pass one folder per model input")
        columns.append(_folder_inputs(path) if path.is_dir() else [path])
    counts = {len(c) for c in columns}
    if len(counts) != 1:
        raise UserError(f"the input folders hold different numbers of files ({', '.join(str(len(c)) for c in columns)})",
                        path=parts[0], fix="give each model input the same number of files, in the same order")
    return list(zip(*columns))




def input_nbytes(path: Path, itemsize: int = 4) -> int:
    """Bytes of an input's data: a .bin's size, a .npy's element count x ``itemsize`` (without its header)."""
    if path.suffix.lower() == ".npy":
        return load_npy(path, mmap_mode="r").size * itemsize
    try:
        return path.stat().st_size
    except OSError as exc:
        raise UserError(f"cannot read the input ({exc.strerror or exc})", path=path, fix="check the file") from exc


def _size_error(path: Path, n_bytes: int, shape: Tuple[int, ...], dtype: str = "float32") -> UserError:
    return UserError(f"the file has {n_bytes} bytes but a {dtype} {shape} input needs "
                     f"{int(np.prod(shape)) * np.dtype(dtype).itemsize}", path=path,
                     fix="re-run pix2pixhd_preprocess.py; inputs of different sizes need separate runs")


def read_input(path: Path, shape: Tuple[int, ...], dtype: str = "float32") -> np.ndarray:
    """One sample of ``shape`` and ``dtype`` from a raw .bin or a .npy (with or without a batch axis of 1); a wrong
    size, NaN or infinity is a UserError."""
    expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if path.suffix.lower() == ".npy":
        arr = load_npy(path)
        if arr.dtype != np.dtype(dtype) or arr.nbytes != expected:
            raise UserError(f"the .npy holds {arr.dtype} {arr.shape}, expected {dtype} {shape}", path=path,
                            fix="use inputs made for this model")
    else:
        size = input_nbytes(path)
        if size != expected:
            raise _size_error(path, size, shape, dtype)
        try:
            arr = np.fromfile(path, dtype=dtype)
        except OSError as exc:
            raise UserError(f"cannot read the input ({exc.strerror or exc})", path=path, fix="check the file") from exc
        if arr.nbytes != expected:  # it changed since
            raise _size_error(path, arr.nbytes, shape, dtype)
    # a float64 sum is finite exactly when every float32 value is (it cannot overflow), and needs no mask
    if arr.dtype.kind == "f" and not np.isfinite(arr.sum(dtype=np.float64)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise UserError(f"the input holds {bad} NaN or infinite values", path=path,
                        fix="make it again with pix2pixhd_preprocess.py (an encoded input holds only 0.0 and 1.0)")
    return arr.reshape(shape)



@dataclass
class InputLayout:
    """What one sample of each model input is: names, per-sample shapes and dtypes (from the runner's specs)."""

    names: List[str]
    shapes: List[Tuple[int, ...]]
    dtypes: List[str]

    @classmethod
    def of(cls, runner: Runner, hw: Optional[Tuple[int, int]]) -> "InputLayout":
        """The layout, with a dynamic height and width taken from ``hw`` (None: left to the first file's size)."""
        specs = runner.input_specs()
        shapes = []
        for spec in specs:
            dims = list(spec.shape[1:])
            if spec.dtype == "float32" and len(dims) == 3 and dims[0] is None:
                dims[0] = 36
            if any(d is None for d in dims[-2:]) and hw is not None:
                dims[-2:] = list(hw)
            shapes.append(tuple(dims))
        return cls([s.name for s in specs], shapes, [s.dtype for s in specs])

    def pixel_bytes(self, i: int) -> int:
        """Bytes per pixel of input ``i``: channels x item size."""
        lead = self.shapes[i][:-2]
        return int(np.prod([d or 1 for d in lead])) * np.dtype(self.dtypes[i]).itemsize

    def fix_hw(self, hw: Tuple[int, int]) -> None:
        self.shapes = [tuple(s[:-2]) + tuple(hw) if None in s[-2:] else s for s in self.shapes]

    @property
    def hw(self) -> Optional[Tuple[int, int]]:
        h, w = self.shapes[0][-2:]
        return (h, w) if h is not None and w is not None else None


def sidecar_hw(files: List[Path]) -> Optional[Tuple[int, int]]:
    """The input size preprocess's sidecar (``pix2pixhd_sizes.json`` beside the inputs) gives these files, when
    it gives them all one size (``--fit pad`` makes sizes that are not 1:2)."""
    from .preprocess import SIZES_SIDECAR

    found = set()
    for folder in {p.parent for p in files}:
        try:
            images = json.loads((folder / SIZES_SIDECAR).read_text())["images"]
            found |= {(images[stem_of(p)]["input_height"], images[stem_of(p)]["input_width"]) for p in files
                      if p.parent == folder}
        except (OSError, ValueError, KeyError, TypeError):
            return None
    return found.pop() if len(found) == 1 else None


def sample_name(sample: Sample) -> str:
    """What a sample is called in the summary and its failure record: its first input's file name."""
    return sample[0].name if sample is not None else "pure_infer_data"


def scan_inputs(samples: List[Tuple[Path, ...]], layout: InputLayout, *, keep_going: bool,
                failed: Failures) -> List[Tuple[Path, ...]]:
    """Check every input's size before anything runs, so a bad file stops the run now, not at file 4,000.

    A dynamic image size is settled first (:func:`_settle_hw`). Samples with a file that does not fit are an error,
    or with ``keep_going`` are left out and added to ``failed``.
    """
    errors: Dict[Path, UserError] = {}
    sizes: Dict[Path, int] = {}
    for sample in samples:
        for i, p in enumerate(sample):
            try:
                sizes[p] = input_nbytes(p, np.dtype(layout.dtypes[i]).itemsize)
            except UserError as exc:
                errors[p] = exc
    if layout.hw is None:
        layout.fix_hw(_settle_hw([s[0] for s in samples if s[0] in sizes], sizes, layout))
    for sample in samples:
        for i, p in enumerate(sample):
            want = int(np.prod(layout.shapes[i])) * np.dtype(layout.dtypes[i]).itemsize
            if p in sizes and sizes[p] != want:
                errors[p] = _size_error(p, sizes[p], layout.shapes[i], layout.dtypes[i])
    bad = [(sample, errors[p]) for sample in samples for p in sample if p in errors]
    if bad and not keep_going:
        first = bad[0][1]
        if len(bad) == 1:
            raise first
        raise UserError(f"{first.problem} ({len(bad) - 1} other input(s) do not fit either)", path=first.path,
                        fix=f"{first.fix}; or pass --keep-going to run the others")
    for sample, exc in bad:
        failed.add(exc, sample_name(sample))
    return [s for s in samples if not any(p in errors for p in s)]


def _settle_hw(firsts: List[Path], sizes: Dict[Path, int], layout: InputLayout) -> Tuple[int, int]:
    """The image size of a dynamic-size model: the sidecar's, else the size most first-input files have at 1:2."""
    hw = (sidecar_hw(firsts) if firsts else None) or CITYSCAPES_HW
    if firsts and hw is CITYSCAPES_HW:
        common = Counter(sizes[p] for p in firsts).most_common(1)[0][0]
        itemsize = np.dtype(layout.dtypes[0]).itemsize
        hw = raw_file_hw(common, layout.pixel_bytes(0) // itemsize, itemsize=itemsize, dtype=layout.dtypes[0],
                      path=next(p for p in firsts if sizes[p] == common))
    return hw


def load_batch(batch: List[Sample], layout: InputLayout, pad_to: Optional[int], *, keep_going: bool,
               failed: Failures) -> Tuple[Optional[Dict[str, np.ndarray]], List[Sample]]:
    """(feeds or None, the samples that read cleanly): a bad sample is left out with ``keep_going``; a short
    batch for a static-batch model is padded with its first sample, as ais_bench pads."""
    columns: List[List[np.ndarray]] = [[] for _ in layout.names]
    kept = []
    for sample in batch:
        try:
            arrays = [read_input(p, layout.shapes[i], layout.dtypes[i]) if sample is not None
                      else np.zeros(layout.shapes[i], layout.dtypes[i]) for i, p in
                      enumerate(sample or [None] * len(layout.names))]
        except UserError as exc:
            if not keep_going:
                raise
            failed.add(exc, sample_name(sample))
            continue
        for column, arr in zip(columns, arrays):
            column.append(arr)
        kept.append(sample)
    if not kept:
        return None, kept
    if pad_to and len(kept) < pad_to:
        for column in columns:
            column += [column[0]] * (pad_to - len(kept))
    return {name: np.stack(column) for name, column in zip(layout.names, columns)}, kept


def split_outputs(y: np.ndarray, batch: int, axis: int) -> List[np.ndarray]:
    """One piece per sample along ``axis`` (ais_bench's --output_batchsize_axis), the axis kept (length 1), as
    ais_bench saves NPY outputs (e.g. (1, 3, H, W))."""
    if not -y.ndim <= axis < y.ndim or y.shape[axis] != batch:
        raise UserError(f"--output_batchsize_axis {axis}: the output {tuple(y.shape)} does not have the batch "
                        f"({batch}) on that axis", fix="pass the axis that holds the batch (0 for these models)")
    return np.split(y, batch, axis=axis)


def write_output(path: Path, array: np.ndarray, outfmt: str) -> None:
    """One sample's output, atomically: BIN raw, NPY with its header, TXT one row per last-axis line."""
    with atomic_open(path, "wb") as fh:
        if outfmt == "BIN":
            np.ascontiguousarray(array).tofile(fh)
        elif outfmt == "NPY":
            np.save(fh, array, allow_pickle=False)
        else:
            np.savetxt(fh, array.reshape(-1, array.shape[-1]) if array.ndim > 1 else array[None], fmt="%.8g")
