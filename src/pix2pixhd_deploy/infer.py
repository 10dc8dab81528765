"""File-driven inference with ais_bench's conventions (ASCEND.md §2.3), for every runner.

In:  a folder (or comma-separated files/folders) of raw float32 (C, H, W) ``.bin`` / ``.npy`` inputs.
Out: ``OUTPUT/OUTPUT_DIRNAME/<input stem>_0.<fmt>`` per input (float32 (3, H, W) for ``bin``), and
     ``OUTPUT/OUTPUT_DIRNAME_summary.json`` with the timings, the throughput and the input -> output map.

As ais_bench does: inputs in natural sort order; ``files_per_batch`` = the model's static batch, or ``--batchsize``
for a dynamic-batch model; a short last batch is padded with its first file for a static-batch model (padding
outputs are not saved) and run as it is for a dynamic one; ``warmup_count`` executions first, not timed; each batch
runs ``loop`` times; throughput = 1000 x batch / mean compute ms. (The warm-up runs on zeros, so no input is read
twice.) Without inputs it runs pure inference on zeros.
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import PathLike, UserError, failed_inputs_error
from .fileio import atomic_open, atomic_write_text, check_free_space, ensure_output_dir, natural_sorted, progress, \
    load_npy, remove_stale_temporaries, stem_of
from .runners import Runner

log = logging.getLogger(__name__)

INPUT_SUFFIXES = (".bin", ".BIN", ".npy", ".NPY")
OUTFMTS = ("BIN", "NPY", "TXT")
CITYSCAPES_HW = (1024, 2048)


def list_input_files(spec: str) -> List[Path]:
    """ais_bench's ``--input``: comma-separated files and folders; folder contents natural-sorted."""
    files: List[Path] = []
    for part in [p for p in spec.split(",") if p.strip()]:
        path = Path(part.strip())
        if path.is_dir():
            found = natural_sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(INPUT_SUFFIXES))
            if not found:
                raise UserError("no .bin or .npy input files in this folder", path=path,
                                fix="run pix2pixhd_preprocess.py first, or point --input at its output folder")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise UserError("the input does not exist", path=path, fix="pass a folder of .bin files or file paths")
    if not files:
        raise UserError("no input files given", fix="pass --input DIR")
    return files


def infer_hw(n_bytes: int, channels: int, *, path: Optional[PathLike] = None,
             hw: Optional[Tuple[int, int]] = None, size_flag: str = "--dymHW") -> Tuple[int, int]:
    """(H, W) of a raw float32 (C, H, W) file: from ``hw`` if given, else the 1:2 Cityscapes aspect.

    ``size_flag``: the option that gives the size to the command at hand, for the error messages.
    """
    if n_bytes == 0:
        raise UserError("the file is empty", path=path,
                        fix="make it again: an interrupted copy or a full disk leaves empty files")
    if n_bytes % (4 * channels):
        raise UserError(f"the file has {n_bytes} bytes, which is not a whole float32 ({channels}, H, W) tensor",
                        path=path, fix="use the .bin files written by pix2pixhd_preprocess.py for this model")
    pixels = n_bytes // (4 * channels)
    if hw is not None:
        if hw[0] * hw[1] != pixels:
            raise UserError(f"the file holds {pixels} pixels per channel, not {hw[0]}x{hw[1]} "
                            f"({channels}x{hw[0]}x{hw[1]} float32 = {4 * channels * hw[0] * hw[1]} bytes, file "
                            f"has {n_bytes})", path=path, fix=f"pass the size the files were made at ({size_flag} H,W)")
        return hw
    h = int(round(math.sqrt(pixels / 2)))
    if h * 2 * h != pixels:
        raise UserError(f"cannot tell the image size: {pixels} pixels is not a 1:2 image", path=path,
                        fix=f"pass {size_flag} HEIGHT,WIDTH")
    return h, 2 * h


def input_nbytes(path: Path) -> int:
    """Bytes of an input's data: a .bin's size, a .npy's element count x 4 (without its header)."""
    if path.suffix.lower() == ".npy":
        return load_npy(path, mmap_mode="r").size * 4
    try:
        return path.stat().st_size
    except OSError as exc:
        raise UserError(f"cannot read the input ({exc.strerror or exc})", path=path, fix="check the file") from exc


def _size_error(path: Path, n_bytes: int, shape: Tuple[int, int, int]) -> UserError:
    return UserError(f"the file has {n_bytes} bytes but a float32 {shape} input needs {int(np.prod(shape)) * 4}",
                     path=path, fix="re-run pix2pixhd_preprocess.py; inputs of different sizes need separate runs")


def read_input(path: Path, shape: Tuple[int, int, int]) -> np.ndarray:
    """One float32 (C, H, W) input from a raw .bin or a .npy; a wrong size, NaN or infinity is a UserError."""
    expected = int(np.prod(shape)) * 4
    if path.suffix.lower() == ".npy":
        arr = load_npy(path)
        if arr.dtype != np.float32 or arr.size * 4 != expected:
            raise UserError(f"the .npy holds {arr.dtype} {arr.shape}, expected float32 {shape}", path=path,
                            fix="use inputs made for this model")
    else:
        size = input_nbytes(path)
        if size != expected:
            raise _size_error(path, size, shape)
        try:
            arr = np.fromfile(path, dtype=np.float32)
        except OSError as exc:
            raise UserError(f"cannot read the input ({exc.strerror or exc})", path=path, fix="check the file") from exc
        if arr.nbytes != expected:  # it changed since
            raise _size_error(path, arr.nbytes, shape)
    # a float64 sum is finite exactly when every float32 value is (it cannot overflow), and needs no mask
    if not np.isfinite(arr.sum(dtype=np.float64)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise UserError(f"the input holds {bad} NaN or infinite values", path=path,
                        fix="make it again with pix2pixhd_preprocess.py (an encoded input holds only 0.0 and 1.0)")
    return arr.reshape(shape)


def output_bytes(hw: Tuple[int, int], outfmt: str, channels: int = 3) -> int:
    """Disk one output takes: 3 x H x W float32 (24 MiB at 1024x2048), a .npy header, or ~16 characters a value."""
    values = channels * hw[0] * hw[1]
    return {"BIN": 4 * values, "NPY": 4 * values + 128, "TXT": 16 * values}[outfmt]


def _scan_inputs(files: List[Path], channels: int, hw: Optional[Tuple[int, int]], keep_going: bool,
                 failed: List[Tuple[str, str]]) -> Tuple[List[Path], Tuple[int, int]]:
    """Check every input's size before anything runs, so a bad file stops the run now, not at file 4,000.

    The image size is ``hw`` if known, else the one most inputs have. Files that do not fit are an error, or with
    ``keep_going`` are left out and added to ``failed``. Returns the files to run and (H, W).
    """
    sizes: Dict[Path, int] = {}
    errors: Dict[Path, UserError] = {}
    for p in files:
        try:
            sizes[p] = input_nbytes(p)
        except UserError as exc:
            errors[p] = exc
    if hw is None and sizes:
        common = Counter(sizes.values()).most_common(1)[0][0]
        hw = infer_hw(common, channels, path=next(p for p, n in sizes.items() if n == common))
    if hw is not None:
        for p, n in sizes.items():
            if n != 4 * channels * hw[0] * hw[1]:
                errors[p] = _size_error(p, n, (channels, *hw))
    bad = [errors[p] for p in files if p in errors]
    if bad and not keep_going:
        first = bad[0]
        if len(bad) == 1:
            raise first
        raise UserError(f"{first.problem} ({len(bad) - 1} other input(s) do not fit either)", path=first.path,
                        fix=f"{first.fix}; or pass --keep-going to run the others")
    for exc in bad:
        log.error("%s", exc)
        failed.append((str(exc.path), exc.problem))
    return [p for p in files if p not in errors], hw or CITYSCAPES_HW


def write_output(path: Path, array: np.ndarray, outfmt: str) -> None:
    with atomic_open(path, "wb") as fh:
        if outfmt == "BIN":
            np.ascontiguousarray(array).tofile(fh)
        elif outfmt == "NPY":
            np.save(fh, array, allow_pickle=False)
        else:
            np.savetxt(fh, array.reshape(array.shape[0], -1) if array.ndim > 1 else array[None], fmt="%.8g")


def _stats(times_ms: Sequence[float]) -> Dict[str, float]:
    if not times_ms:
        return {"min": 0.0, "max": 0.0, "mean": 0.0, "median": 0.0, "percentile(99%)": 0.0, "count": 0}
    a = np.asarray(times_ms, dtype=np.float64)
    return {"min": float(a.min()), "max": float(a.max()), "mean": float(a.mean()), "median": float(np.median(a)),
            "percentile(99%)": float(np.percentile(a, 99)), "count": int(a.size)}


@dataclass
class InferResult:
    """What one ``infer`` call did; ``summary`` is the JSON written beside the outputs."""

    output_dir: Path
    summary_path: Path
    outputs: List[Path] = field(default_factory=list)
    compute_ms: List[float] = field(default_factory=list)
    batch_size: int = 1
    summary: Dict[str, object] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        mean = float(np.mean(self.compute_ms)) if self.compute_ms else 0.0
        return 1000.0 * self.batch_size / mean if mean > 0 else 0.0


def run_inference(runner: Runner, *, inputs: Optional[str], output: Optional[PathLike],
                  output_dirname: Optional[str] = None, outfmt: str = "BIN", batchsize: Optional[int] = None,
                  loop: int = 1, warmup_count: int = 1, hw: Optional[Tuple[int, int]] = None,
                  argv: Optional[List[str]] = None, show_progress: bool = True,
                  keep_going: bool = False) -> InferResult:
    """Run ``runner`` over input files the way ``python -m ais_bench`` does (see the module docstring).

    Every input's size is checked, and the free disk for the outputs, before the first output is written. A bad
    input (wrong size, NaN, unreadable) stops the run, or with ``keep_going`` is skipped, listed in the summary's
    ``failed`` and reported, with all the others, in one error at the end.
    """
    outfmt = outfmt.upper()
    if outfmt not in OUTFMTS:
        raise UserError(f"unknown --outfmt {outfmt!r}", fix=f"use one of {', '.join(OUTFMTS)}")
    if loop < 1:
        raise UserError(f"--loop must be at least 1, not {loop}", fix="pass --loop 1 or more")
    if batchsize is not None and batchsize < 1:
        raise UserError(f"--batchsize must be at least 1, not {batchsize}", fix="pass --batchsize 1 or more")
    if output_dirname and output is None:
        raise UserError("--output_dirname needs --output", fix="pass --output DIR as well")
    if output is None:
        output = Path(".")
    if not output_dirname:
        output_dirname = time.strftime("%Y_%m_%d-%H_%M_%S")

    spec = runner.input_spec()
    channels = spec.channels or 36
    static_batch = spec.batch
    files_per_batch = static_batch or batchsize or 1
    hw = spec.spatial or hw
    files = list_input_files(inputs) if inputs else []
    failed: List[Tuple[str, str]] = []
    if files:
        files, hw = _scan_inputs(files, channels, hw, keep_going, failed)
        if not files:
            raise failed_inputs_error(failed, 0, what="input", path=inputs)
    hw = hw or CITYSCAPES_HW
    sample_shape = (channels, *hw)
    ext = {"BIN": "bin", "NPY": "npy", "TXT": "txt"}[outfmt]
    n_outputs = len(files) or files_per_batch
    check_free_space(Path(output) / output_dirname, n_outputs * output_bytes(hw, outfmt),
                     what=f"{n_outputs} outputs of {output_bytes(hw, outfmt) / 2**20:.1f} MiB")
    out_root = ensure_output_dir(output, what="output folder")
    out_dir = ensure_output_dir(out_root / output_dirname, what="output folder")
    remove_stale_temporaries(out_dir)

    batches: List[List[Optional[Path]]]
    if files:
        batches = [files[i:i + files_per_batch] for i in range(0, len(files), files_per_batch)]
    else:
        batches = [[None] * files_per_batch]  # pure inference on zeros

    def load(batch: List[Optional[Path]]) -> Tuple[Optional[np.ndarray], List[Optional[Path]]]:
        """The batch's inputs that read cleanly (with ``keep_going`` a bad one is left out) and their paths."""
        arrays, kept = [], []
        for p in batch:
            try:
                arrays.append(read_input(p, sample_shape) if p is not None else np.zeros(sample_shape, np.float32))
            except UserError as exc:
                if not keep_going:
                    raise
                log.error("%s", exc)
                failed.append((str(p), exc.problem))
                continue
            kept.append(p)
        if not arrays:
            return None, kept
        if static_batch and len(arrays) < static_batch:  # ais_bench pads with the batch's first file
            arrays += [arrays[0]] * (static_batch - len(arrays))
        return np.stack(arrays), kept

    result = InferResult(output_dir=out_dir, summary_path=out_root / f"{output_dirname}_summary.json",
                         batch_size=batchsize or files_per_batch)
    if warmup_count > 0:  # untimed, on zeros of the first batch's shape (no input is read twice)
        warm = np.zeros((static_batch or len(batches[0]), *sample_shape), np.float32)
        for _ in range(warmup_count):
            runner.infer(warm)
    filesinfo: Dict[str, Dict[str, List[str]]] = {}
    sample_id = 0
    it = progress(batches, desc=f"infer ({runner.name})", unit="batch") if show_progress else batches
    for batch_files in it:
        x, kept = load(batch_files)
        if x is None:
            continue
        for _ in range(loop):
            y = runner.infer(x)
            result.compute_ms.append(runner.inference_time * 1000.0)
        for slot, path in enumerate(kept):
            name = f"{stem_of(path)}_0.{ext}" if path is not None else f"pure_infer_data_0.{ext}"
            target = out_dir / name
            write_output(target, y[slot], outfmt)
            result.outputs.append(target)
            filesinfo[str(sample_id)] = {"infiles": [str(path)] if path is not None else [],
                                         "outfiles": [str(target)]}
            sample_id += 1

    stats = _stats(result.compute_ms)
    result.summary = {
        "NPU_compute_time": stats,
        "H2D_latency": _stats([]),
        "D2H_latency": _stats([]),
        "throughput": result.throughput,
        "npu_compute_time_list": result.compute_ms,
        "pid": os.getpid(),
        "args": argv if argv is not None else sys.argv,
        "filesinfo": filesinfo,
        "backend": runner.name,
        "runner": runner.describe(),
        "batchsize": result.batch_size,
        "input_shape": [files_per_batch, *sample_shape],
        "failed": [{"file": f, "problem": why} for f, why in failed],
    }
    atomic_write_text(result.summary_path, json.dumps(result.summary, indent=2))
    if failed:
        raise failed_inputs_error(failed, len(result.outputs), what="input", path=out_dir)
    return result


def format_summary(result: InferResult) -> str:
    """ais_bench's console summary; the compute time is the runner's synchronised device time."""
    s = result.summary["NPU_compute_time"]
    return "\n".join([
        "[INFO] -----------------Performance Summary------------------",
        f"[INFO] NPU_compute_time (ms): min = {s['min']:.4f}, max = {s['max']:.4f}, mean = {s['mean']:.4f}, "
        f"median = {s['median']:.4f}, percentile(99%) = {s['percentile(99%)']:.4f}",
        f"[INFO] throughput 1000*batchsize.mean({result.batch_size})/NPU_compute_time.mean({s['mean']:.4f}): "
        f"{result.throughput:.4f}",
        "[INFO] ------------------------------------------------------",
    ])
