"""File-driven inference with ais_bench's conventions (ASCEND.md §2.2-2.4), for every runner.

In:  per model input, a folder (or comma-separated files) of raw ``.bin`` / ``.npy`` samples in that input's dtype
     and per-sample shape (the seed's: float32 (36, H, W)); several inputs take one folder each, comma-separated.
Out: with ``--output``: ``OUTPUT/OUTPUT_DIRNAME/<first input's stem>_0.<fmt>`` per sample (BIN: the raw output
     slice; NPY: with its batch axis, e.g. (1, 3, H, W)) and ``OUTPUT/OUTPUT_DIRNAME_summary.json`` with the
     timings, the throughput and the input -> output map. Without ``--output`` nothing is written (ais_bench's way)
     and only the summary is printed.

As ais_bench does: inputs in natural sort order; ``files_per_batch`` = the model's static batch, or ``--batchsize``
for a dynamic-batch model; a short last batch is padded with its first sample for a model with fixed batch sizes
(padding outputs are not saved); ``warmup_count`` untimed executions on the first batch; each batch runs ``loop``
times; throughput = 1000 x batch / mean compute ms; outputs split per sample along ``--output_batchsize_axis``.
Figures never measured (H2D/D2H copies) are null in the JSON, not 0. Without inputs it runs pure inference on zeros.
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


def infer_hw(n_bytes: int, channels: int, *, path: Optional[PathLike] = None,
             hw: Optional[Tuple[int, int]] = None, size_flag: str = "--dymHW", itemsize: int = 4,
             dtype: str = "float32") -> Tuple[int, int]:
    """(H, W) of a raw float32 (C, H, W) file: from ``hw`` if given, else the 1:2 Cityscapes aspect.

    ``size_flag``: the option that gives the size to the command at hand, for the error messages.
    """
    if n_bytes == 0:
        raise UserError("the file is empty", path=path,
                        fix="make it again: an interrupted copy or a full disk leaves empty files")
    if n_bytes % (itemsize * channels):
        raise UserError(f"the file has {n_bytes} bytes, which is not a whole {dtype} ({channels}, H, W) tensor",
                        path=path, fix="use the .bin files written by pix2pixhd_preprocess.py for this model")
    pixels = n_bytes // (itemsize * channels)
    if hw is not None:
        if hw[0] * hw[1] != pixels:
            raise UserError(f"the file holds {pixels} pixels per channel, not {hw[0]}x{hw[1]} "
                            f"({channels}x{hw[0]}x{hw[1]} {dtype} = {itemsize * channels * hw[0] * hw[1]} bytes, file "
                            f"has {n_bytes})", path=path, fix=f"pass the size the files were made at ({size_flag} H,W)")
        return hw
    h = int(round(math.sqrt(pixels / 2)))
    if h * 2 * h != pixels:
        raise UserError(f"cannot tell the image size: {pixels} pixels is not a 1:2 image", path=path,
                        fix=f"pass {size_flag} HEIGHT,WIDTH")
    return h, 2 * h


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
    from .encoding import SIZES_SIDECAR

    found = set()
    for folder in {p.parent for p in files}:
        try:
            images = json.loads((folder / SIZES_SIDECAR).read_text())["images"]
            found |= {(images[stem_of(p)]["input_height"], images[stem_of(p)]["input_width"]) for p in files
                      if p.parent == folder}
        except (OSError, ValueError, KeyError, TypeError):
            return None
    return found.pop() if len(found) == 1 else None


def _scan_inputs(samples: List[Tuple[Path, ...]], layout: InputLayout, keep_going: bool,
                 failed: List[Tuple[str, str]]) -> List[Tuple[Path, ...]]:
    """Check every input's size before anything runs, so a bad file stops the run now, not at file 4,000.

    A dynamic image size is taken from the size most first-input files have (1:2 aspect). Samples with a file that
    does not fit are an error, or with ``keep_going`` are left out and added to ``failed``.
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
        firsts = [s[0] for s in samples if s[0] in sizes]
        hw = (sidecar_hw(firsts) if firsts else None) or CITYSCAPES_HW
        if firsts and hw is CITYSCAPES_HW:
            common = Counter(sizes[p] for p in firsts).most_common(1)[0][0]
            itemsize = np.dtype(layout.dtypes[0]).itemsize
            hw = infer_hw(common, layout.pixel_bytes(0) // itemsize, itemsize=itemsize, dtype=layout.dtypes[0],
                          path=next(p for p in firsts if sizes[p] == common))
        layout.fix_hw(hw)
    for sample in samples:
        for i, p in enumerate(sample):
            want = int(np.prod(layout.shapes[i])) * np.dtype(layout.dtypes[i]).itemsize
            if p in sizes and sizes[p] != want:
                errors[p] = _size_error(p, sizes[p], layout.shapes[i], layout.dtypes[i])
    bad = [errors[p] for s in samples for p in s if p in errors]
    if bad and not keep_going:
        first = bad[0]
        if len(bad) == 1:
            raise first
        raise UserError(f"{first.problem} ({len(bad) - 1} other input(s) do not fit either)", path=first.path,
                        fix=f"{first.fix}; or pass --keep-going to run the others")
    for exc in bad:
        log.error("%s", exc)
        failed.append((str(exc.path), exc.problem))
    return [s for s in samples if not any(p in errors for p in s)]


def write_output(path: Path, array: np.ndarray, outfmt: str) -> None:
    with atomic_open(path, "wb") as fh:
        if outfmt == "BIN":
            np.ascontiguousarray(array).tofile(fh)
        elif outfmt == "NPY":
            np.save(fh, array, allow_pickle=False)
        else:
            np.savetxt(fh, array.reshape(-1, array.shape[-1]) if array.ndim > 1 else array[None], fmt="%.8g")


def _stats(times_ms: Sequence[float]) -> Optional[Dict[str, float]]:
    """min/max/mean/median/p99/count, or None for figures never measured (ais_bench would print zeros)."""
    if not times_ms:
        return None
    a = np.asarray(times_ms, dtype=np.float64)
    return {"min": float(a.min()), "max": float(a.max()), "mean": float(a.mean()), "median": float(np.median(a)),
            "percentile(99%)": float(np.percentile(a, 99)), "count": int(a.size)}


@dataclass
class InferResult:
    """What one ``infer`` call did; ``summary`` is the JSON written beside the outputs (when there is an output
    folder: without ``--output`` nothing is saved, as ais_bench does)."""

    output_dir: Optional[Path]
    summary_path: Optional[Path]
    outputs: List[Path] = field(default_factory=list)
    compute_ms: List[float] = field(default_factory=list)
    batch_size: int = 1
    summary: Dict[str, object] = field(default_factory=dict)
    start_time: float = 0.0
    end_time: float = 0.0
    samples: int = 0

    @property
    def throughput(self) -> float:
        mean = float(np.mean(self.compute_ms)) if self.compute_ms else 0.0
        return 1000.0 * self.batch_size / mean if mean > 0 else 0.0


@dataclass
class InferOptions:
    """ais_bench's file-driven flags, checked once (None means the default)."""

    inputs: Optional[str] = None
    output: Optional[PathLike] = None
    output_dirname: Optional[str] = None
    outfmt: str = "BIN"
    batchsize: Optional[int] = None
    loop: int = 1
    warmup_count: int = 1
    hw: Optional[Tuple[int, int]] = None
    output_batchsize_axis: int = 0
    keep_going: bool = False
    show_progress: bool = True
    debug: bool = False

    def check(self) -> None:
        self.outfmt = self.outfmt.upper()
        if self.outfmt not in OUTFMTS:
            raise UserError(f"unknown --outfmt {self.outfmt!r}", fix=f"use one of {', '.join(OUTFMTS)}")
        if self.loop < 1:
            raise UserError(f"--loop must be at least 1, not {self.loop}", fix="pass --loop 1 or more")
        if self.batchsize is not None and self.batchsize < 1:
            raise UserError(f"--batchsize must be at least 1, not {self.batchsize}", fix="pass --batchsize 1 or more")
        if self.output_dirname and self.output is None:
            raise UserError("--output_dirname needs --output", fix="pass --output DIR as well")
        if self.warmup_count < 0:
            raise UserError(f"--warmup_count must be 0 or more, not {self.warmup_count}", fix="pass --warmup_count 1")


def run_inference(runner: Runner, *, argv: Optional[List[str]] = None, **options) -> InferResult:
    """Run ``runner`` over input files the way ``python -m ais_bench`` does (see the module docstring);
    ``options`` are :class:`InferOptions`' fields.

    Every input's size is checked, and the free disk for the outputs, before the first output is written. A bad
    input (wrong size, NaN, unreadable) stops the run, or with ``keep_going`` is skipped, listed in the summary's
    ``failed`` and reported, with all the others, in one error at the end. Without ``output`` nothing is written.
    """
    opts = InferOptions(**options)
    opts.check()
    layout = InputLayout.of(runner, opts.hw)
    static_batch = runner.input_spec().batch
    files_per_batch = static_batch or opts.batchsize or 1
    pad_to = static_batch or (files_per_batch if getattr(runner, "gears", None) else None)
    failed: List[Tuple[str, str]] = []
    samples = input_samples(opts.inputs, layout.names) if opts.inputs else []
    if samples:
        samples = _scan_inputs(samples, layout, opts.keep_going, failed)
        if not samples:
            raise failed_inputs_error(failed, 0, what="input", path=opts.inputs)
    elif layout.hw is None:
        layout.fix_hw(CITYSCAPES_HW)
    out_dir, summary_path = _output_folder(opts, runner, max(len(samples), files_per_batch), layout.hw)
    batches = ([samples[i:i + files_per_batch] for i in range(0, len(samples), files_per_batch)] if samples
               else [[None] * files_per_batch])  # pure inference on zeros
    result = InferResult(output_dir=out_dir, summary_path=summary_path, batch_size=opts.batchsize or files_per_batch)
    if opts.debug:
        log.info("model inputs: %s; output: %s", ", ".join(s.describe() for s in runner.input_specs()),
                 runner.output_spec().describe())
    result.start_time = time.time()
    filesinfo = _run_batches(runner, batches, layout, pad_to, opts, result, failed)
    result.end_time = time.time()
    result.summary = _summary(runner, result, filesinfo, failed, argv, [files_per_batch, *layout.shapes[0]])
    if summary_path is not None:
        atomic_write_text(summary_path, json.dumps(result.summary, indent=2))
    if failed:
        raise failed_inputs_error(failed, len(result.outputs), what="input", path=out_dir or opts.inputs)
    return result


def _output_folder(opts: InferOptions, runner: Runner, n_outputs: int, hw: Tuple[int, int]):
    """(output folder, summary path), both None without ``--output``; the free disk is checked first."""
    if opts.output is None:
        return None, None
    dirname = opts.output_dirname or time.strftime("%Y_%m_%d-%H_%M_%S")
    spec = runner.output_spec()
    values = int(np.prod(spec.shape[1:])) if None not in spec.shape[1:] else 3 * hw[0] * hw[1]
    one = {"BIN": values * np.dtype(spec.dtype).itemsize, "NPY": values * np.dtype(spec.dtype).itemsize + 128,
           "TXT": 16 * values}[opts.outfmt]
    check_free_space(Path(opts.output) / dirname, n_outputs * one,
                     what=f"{n_outputs} outputs of {one / 2**20:.1f} MiB")
    out_root = ensure_output_dir(opts.output, what="output folder")
    out_dir = ensure_output_dir(out_root / dirname, what="output folder")
    remove_stale_temporaries(out_dir)
    return out_dir, out_root / f"{dirname}_summary.json"


def _load_batch(batch: List[Optional[Tuple[Path, ...]]], layout: InputLayout, pad_to: Optional[int],
                keep_going: bool, failed: List[Tuple[str, str]]):
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
            log.error("%s", exc)
            failed.append((str(exc.path), exc.problem))
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


def _run_batches(runner: Runner, batches, layout: InputLayout, pad_to: Optional[int], opts: InferOptions,
                 result: InferResult, failed) -> Dict[str, Dict[str, List[str]]]:
    """Warm-up on the first batch, then each batch ``loop`` times; outputs split per sample and saved."""
    ext = opts.outfmt.lower()
    filesinfo: Dict[str, Dict[str, List[str]]] = {}
    it = progress(batches, desc=f"infer ({runner.name})", unit="batch") if opts.show_progress else batches
    warm = opts.warmup_count
    for batch in it:
        feeds, kept = _load_batch(batch, layout, pad_to, opts.keep_going, failed)
        if feeds is None:
            continue
        for _ in range(warm):  # ais_bench warms up on the first real batch, untimed
            runner.infer(feeds)
        warm = 0
        for _ in range(opts.loop):
            y = runner.infer(feeds)
            result.compute_ms.append(runner.inference_time * 1000.0)
            if opts.debug:
                log.info("execution %d: %.3f ms", len(result.compute_ms), result.compute_ms[-1])
        parts = _split_outputs(y, pad_to or len(kept), opts.output_batchsize_axis)
        for slot, sample in enumerate(kept):
            outfiles = []
            if result.output_dir is not None:
                name = f"{stem_of(sample[0])}_0.{ext}" if sample is not None else f"pure_infer_data_0.{ext}"
                target = result.output_dir / name
                write_output(target, parts[slot], opts.outfmt)
                result.outputs.append(target)
                outfiles.append(str(target))
            filesinfo[str(result.samples)] = {"infiles": [str(p) for p in sample] if sample is not None else [],
                                              "outfiles": outfiles}
            result.samples += 1
    return filesinfo


def _split_outputs(y: np.ndarray, batch: int, axis: int) -> List[np.ndarray]:
    """One piece per sample along ``axis`` (ais_bench's --output_batchsize_axis), the axis kept (length 1), as
    ais_bench saves NPY outputs (e.g. (1, 3, H, W))."""
    if not -y.ndim <= axis < y.ndim or y.shape[axis] != batch:
        raise UserError(f"--output_batchsize_axis {axis}: the output {tuple(y.shape)} does not have the batch "
                        f"({batch}) on that axis", fix="pass the axis that holds the batch (0 for these models)")
    return np.split(y, batch, axis=axis)


def _summary(runner: Runner, result: InferResult, filesinfo, failed, argv, input_shape) -> Dict[str, object]:
    return {
        "NPU_compute_time": _stats(result.compute_ms),
        "H2D_latency": None,  # not measured by our runners: null, never a made-up 0
        "D2H_latency": None,
        "throughput": result.throughput,
        "npu_compute_time_list": result.compute_ms,
        "pid": os.getpid(),
        "args": argv if argv is not None else sys.argv,
        "filesinfo": filesinfo,
        "backend": runner.name,
        "runner": runner.describe(),
        "batchsize": result.batch_size,
        "input_shape": input_shape,
        "start_time": result.start_time,
        "end_time": result.end_time,
        "failed": [{"file": f, "problem": why} for f, why in failed],
    }


def format_summary(result: InferResult, display_all: bool = False) -> str:
    """ais_bench's console summary; the compute time is the runner's synchronised device time. H2D/D2H
    (``display_all``) are shown as not measured: our runners time the execution only."""
    s = result.summary["NPU_compute_time"] or {k: float("nan") for k in ("min", "max", "mean", "median",
                                                                          "percentile(99%)")}
    lines = ["[INFO] -----------------Performance Summary------------------"]
    if display_all:
        lines.append("[INFO] H2D_latency (ms): not measured (the runner times the execution only)")
    lines.append(f"[INFO] NPU_compute_time (ms): min = {s['min']:.4f}, max = {s['max']:.4f}, mean = "
                 f"{s['mean']:.4f}, median = {s['median']:.4f}, percentile(99%) = {s['percentile(99%)']:.4f}")
    if display_all:
        lines.append("[INFO] D2H_latency (ms): not measured (the runner times the execution only)")
    lines += [f"[INFO] throughput 1000*batchsize.mean({result.batch_size})/NPU_compute_time.mean({s['mean']:.4f}): "
              f"{result.throughput:.4f}",
              "[INFO] ------------------------------------------------------"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ several devices

def parse_devices(text: Optional[str]) -> List[Optional[str]]:
    """ais_bench's ``--device``: one device, or a comma-separated list (one process per device)."""
    if text is None or "," not in str(text):
        return [text]
    devices = [d.strip() for d in str(text).split(",") if d.strip()]
    if len(set(devices)) != len(devices) or not all(d.isdigit() for d in devices):
        raise UserError(f"--device {text!r}: a list must be distinct device numbers", fix="pass e.g. --device 0,1")
    return devices


def _device_job(job: Dict[str, object]) -> Dict[str, object]:
    """One device's run in its own process (ais_bench starts one per device): summary figures for the parent."""
    from .runners import make_runner

    with make_runner(**job["runner"]) as runner:
        result = run_inference(runner, argv=job["argv"], **job["options"])
    return {"device": job["runner"]["device"], "throughput": result.throughput, "start_time": result.start_time,
            "end_time": result.end_time, "outputs": len(result.outputs), "summary_text": format_summary(
                result, job["display_all"]), "output_dir": str(result.output_dir) if result.output_dir else None}


def run_on_devices(devices: Sequence[str], runner_args: Dict[str, object], options: Dict[str, object],
                   argv: List[str], display_all: bool = False) -> List[Dict[str, object]]:
    """``infer --device 0,1``: one process per device, each over all the inputs, its outputs in
    ``OUTPUT_DIRNAME/device<N>`` (ais_bench's layout); returns each device's figures, in device order."""
    import multiprocessing

    dirname = options.get("output_dirname") or (time.strftime("%Y_%m_%d-%H_%M_%S") if options.get("output") else None)
    jobs = []
    for device in devices:
        opts = dict(options, show_progress=False)
        if dirname:
            opts["output_dirname"] = f"{dirname}/device{device}"
        jobs.append({"runner": dict(runner_args, device=device), "options": opts, "argv": argv,
                     "display_all": display_all})
    with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
        return pool.map(_device_job, jobs)
