"""File-driven inference the way ``python -m ais_bench`` runs it (ASCEND.md §2.2-2.4), for every runner.

In:  a runner and ais_bench's flags (:class:`InferOptions`); the input files as :mod:`infer_files` reads them.
Out: with ``--output``: ``OUTPUT/OUTPUT_DIRNAME/<first input's stem>_0.<fmt>`` per sample and
     ``OUTPUT/OUTPUT_DIRNAME_summary.json`` with the timings, the throughput, the input -> output map and the
     ``--keep-going`` failures (:class:`errors.Failures`' record). Without ``--output`` nothing is written (ais_bench's
     way) and only the summary is printed (:func:`format_summary`).

As ais_bench does: ``files_per_batch`` = the model's static batch, or ``--batchsize`` for a dynamic-batch model; a
short last batch is padded with its first sample for a model with fixed batch sizes (padding outputs are not
saved); ``warmup_count`` untimed executions on the first batch; each batch runs ``loop`` times; throughput = 1000 x
batch / mean compute ms; outputs split per sample along ``--output_batchsize_axis``. Figures never measured
(H2D/D2H copies) are null in the JSON, not 0. Without inputs it runs pure inference on zeros. ``--device 0,1`` runs
one process per device (:func:`run_on_devices`).
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import Failures, PathLike, UserError
from ..fileio import atomic_write_text, check_free_space, ensure_output_dir, progress, remove_stale_temporaries, stem_of
from ..runners import Runner
from .infer_files import (
    CITYSCAPES_HW,
    OUTFMTS,
    InputLayout,
    Sample,
    input_samples,
    load_batch,
    scan_inputs,
    split_outputs,
    write_output,
)

log = logging.getLogger(__name__)


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
    input (wrong size, NaN, unreadable) stops the run, or with ``keep_going`` is skipped, recorded in the summary's
    ``failed`` and reported, with all the others, in one error at the end. Without ``output`` nothing is written.
    """
    opts = InferOptions(**options)
    opts.check()
    layout = InputLayout.of(runner, opts.hw)
    static_batch = runner.input_spec().batch
    files_per_batch = static_batch or opts.batchsize or 1
    pad_to = static_batch or (files_per_batch if getattr(runner, "gears", None) else None)
    failed = Failures("input")
    samples = input_samples(opts.inputs, layout.names) if opts.inputs else []
    if samples:
        samples = scan_inputs(samples, layout, keep_going=opts.keep_going, failed=failed)
        if not samples:
            raise failed.error(0, path=opts.inputs)
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
        raise failed.error(len(result.outputs), path=out_dir or opts.inputs)
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


def _run_batches(runner: Runner, batches: List[List[Sample]], layout: InputLayout, pad_to: Optional[int],
                 opts: InferOptions, result: InferResult, failed: Failures) -> Dict[str, Dict[str, List[str]]]:
    """Warm-up on the first batch, then each batch ``loop`` times; outputs split per sample and saved."""
    ext = opts.outfmt.lower()
    filesinfo: Dict[str, Dict[str, List[str]]] = {}
    it = progress(batches, desc=f"infer ({runner.name})", unit="batch") if opts.show_progress else batches
    warm = opts.warmup_count
    for batch in it:
        feeds, kept = load_batch(batch, layout, pad_to, keep_going=opts.keep_going, failed=failed)
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
        parts = split_outputs(y, pad_to or len(kept), opts.output_batchsize_axis)
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


def _summary(runner: Runner, result: InferResult, filesinfo: Dict[str, Dict[str, List[str]]], failed: Failures,
             argv: Optional[List[str]], input_shape: List[int]) -> Dict[str, object]:
    """The summary JSON, in ais_bench's keys, with what ``--keep-going`` skipped under ``failed``."""
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
        "failed": failed.records,
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

def _device_job(job: Dict[str, object]) -> Dict[str, object]:
    """One device's run in its own process (ais_bench starts one per device): summary figures for the parent."""
    from ..runners import make_runner

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
