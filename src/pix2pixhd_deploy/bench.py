"""Benchmark a model per batch size: ais_bench's device-only throughput, end-to-end throughput, latency, memory.

In:  a model (``.pth`` / checkpoint folder, ``.onnx``, ``.om``) and its runner settings; batch sizes.
Out: a JSON-ready dict (:func:`run_bench`) holding every figure with the machine, the versions and the settings;
     :func:`format_tables` prints it in the seed's form (``| device | batch size | images/s |``) and in detail;
     :func:`draw_chart` draws images/s by runtime and batch size (PNG).

Two figures are kept apart (STYLE.md §6):

* **device-only** — the figure the seed reports (ASCEND.md §1.1, §2.4): one realistic input batch (one-hot label
  map + instance edges of a synthetic street scene) made once, ``warmup`` untimed executions, then ``loops`` timed
  executions of ``runner.infer``; each time is the runner's ``inference_time`` (torch: the forward alone, the input
  already on the device, CUDA synchronised before and after; onnxruntime: ``session.run``, which for GPU providers
  includes its host<->device copies; ais_bench: the NPU execute time). Throughput = 1000 x batch / mean ms, as
  ais_bench computes it; latency p50 / p90 / p99 of the same executions.
* **end-to-end** — files in, pictures out: for ``e2e_batches`` batches, read the label and instance PNGs, encode,
  infer, ``tensor2im``, save PNGs (to a temporary folder), timed with ``perf_counter`` per batch; throughput =
  images / total seconds. The model is already warm from the device-only part.

Memory: the process's peak resident set (``ru_maxrss``, so a high-water mark since start: it never decreases
across batch sizes) and, for torch on CUDA, ``torch.cuda.max_memory_allocated`` per batch size. Other devices'
memory is not measured (``null``).
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .backends import BACKENDS
from .data.synthetic import scene_maps
from .devices import parse_device
from .errors import PathLike, UserError
from .model import forms
from .provenance import machine, model_identity, versions

log = logging.getLogger(__name__)

DEFAULT_HW = (1024, 2048)


def _hardware(runner, machine: Dict[str, object]) -> str:
    """The device the numbers were measured on, in words."""
    name = runner.name
    gpus = machine.get("gpus") or []
    if name == "torch" and str(getattr(runner, "device", "")).startswith("cuda"):
        index = parse_device(runner.device).index or 0
        return str(gpus[index]) if index < len(gpus) else str(runner.device)
    if name == "onnxruntime" and any(p in ("cuda", "tensorrt") for p in getattr(runner, "providers", [])):
        return str(gpus[0]) if gpus else "NVIDIA GPU"
    if name == "ais_bench" or (name == "onnxruntime" and "cann" in getattr(runner, "providers", [])):
        return "Ascend NPU"
    return f"{machine.get('cpu')} ({machine.get('cpu_count')} cores)"


# -------------------------------------------------------------------------------------------- inputs

def realistic_batch(batch: int, height: int, width: int, *, label_nc: int, use_instance: bool,
                    seed: int = 0) -> np.ndarray:
    """(batch, C, H, W) float32: encoded synthetic street scenes (one-hot + edges), one distinct scene per slot."""
    from .model.encoding import encode_input

    labels, insts = scene_maps(batch, height, width, seed=seed)
    return np.stack([encode_input(lab, ins if use_instance else None, label_nc) for lab, ins in zip(labels, insts)])


def _synthetic_dataroot(folder: Path, count: int, height: int, width: int, seed: int) -> Path:
    from .data.synthetic import make_scene
    from .fileio import atomic_save_image

    for sub in ("test_label", "test_inst"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        label, inst = make_scene(height, width, seed=seed + i)
        atomic_save_image(folder / "test_label" / f"bench_000000_{i:06d}_gtFine_labelIds.png", label)
        atomic_save_image(folder / "test_inst" / f"bench_000000_{i:06d}_gtFine_instanceIds.png", inst)
    return folder


# ------------------------------------------------------------------------------------------- figures

def latency_stats(times_ms: Sequence[float]) -> Dict[str, float]:
    a = np.asarray(times_ms, dtype=np.float64)
    return {"mean_ms": float(a.mean()), "min_ms": float(a.min()), "max_ms": float(a.max()),
            "p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)),
            "p99_ms": float(np.percentile(a, 99))}


def peak_host_mib() -> float:
    """The process's peak resident set so far, MiB (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2 ** 20 if sys.platform == "darwin" else 2 ** 10), 1)


def bench_device_only(runner, feeds, *, loops: int, warmup: int) -> Dict[str, object]:
    """ais_bench's pure-inference figure for one batch of the model's inputs ``feeds`` (a dict of named arrays,
    or one array for a one-input model; see the module docstring)."""
    for _ in range(warmup):
        runner.infer(feeds)
    compute_ms, call_ms = [], []
    for _ in range(loops):
        start = time.perf_counter()
        runner.infer(feeds)
        call_ms.append((time.perf_counter() - start) * 1000.0)
        compute_ms.append(runner.inference_time * 1000.0)
    stats = latency_stats(compute_ms)
    batch = next(iter(feeds.values())).shape[0] if isinstance(feeds, dict) else feeds.shape[0]
    return {"images_per_s": 1000.0 * batch / stats["mean_ms"], **stats, "loops": loops, "warmup": warmup,
            "times_ms": compute_ms, "call_mean_ms": float(np.mean(call_ms)),
            "call_note": "wall time of runner.infer, with the host<->device copies and output conversion"}


def bench_end_to_end(engine, pairs, *, batch_size: int, batches: int, out_dir: Path, base: int,
                     instances: Optional[str] = None) -> Dict[str, object]:
    """Files in, pictures out, for ``batches`` batches of ``batch_size`` pairs (cycled through ``pairs``), through
    the same reader and adapter as ``run`` (:mod:`labelmaps`, :mod:`adapters`): read the maps (instance maps from
    ``instances``; None: ``files`` when the engine takes them, else ``none``), make the model's feeds, run, save the
    pictures."""
    from .data.labelmaps import MapOptions, load_maps
    from .fileio import atomic_save_image

    options = MapOptions(label_nc=engine.label_nc, base=base,
                         instances=(instances or "files") if engine.use_instance else "none")

    batch_ms = []
    n = 0
    for b in range(batches):
        chosen = [pairs[(b * batch_size + i) % len(pairs)] for i in range(batch_size)]
        start = time.perf_counter()
        maps = [load_maps(pair, options) for pair in chosen]
        labels = np.stack([m.label for m in maps])
        insts = np.stack([m.inst for m in maps]) if engine.use_instance else None
        pictures, _ = engine(labels, insts)
        for pair, picture in zip(chosen, pictures):
            atomic_save_image(out_dir / f"{pair.name}_{b}generated.png", picture)
        batch_ms.append((time.perf_counter() - start) * 1000.0)
        n += len(chosen)
    stats = latency_stats(batch_ms)
    total_s = sum(batch_ms) / 1000.0
    return {"images_per_s": n / total_s, "images": n, "batches": batches, "seconds": total_s, **stats,
            "times_ms": batch_ms, "height": int(pictures.shape[1]), "width": int(pictures.shape[2])}


# ---------------------------------------------------------------------------------------------- the run

def run_bench(model: PathLike, *, backend: Optional[str] = None, device: Optional[str] = None, fp16: bool = False,
              batch_sizes: Sequence[int] = (1,), loops: int = 20, warmup: int = 1, height: Optional[int] = None,
              width: Optional[int] = None, dataroot: Optional[PathLike] = None, e2e_batches: int = 2,
              seed: int = 0, **runner_options) -> Dict[str, object]:
    """Benchmark ``model`` at each batch size; returns the report (JSON-ready). See the module docstring.

    ``runner_options`` go to :func:`~pix2pixhd_deploy.runners.make_runner` (providers, ...). ``e2e_batches=0``
    skips the end-to-end part. A batch size that a static-batch model cannot take is recorded as skipped.
    """
    from .runners import backend_for

    batch_sizes = [int(b) for b in batch_sizes]
    _check_settings(batch_sizes, loops, warmup, e2e_batches, height, width)
    name = backend_for(model, backend)
    with contextlib.suppress(ImportError):
        import torch  # noqa: F401  (loaded, so that the machine record has torch's threads and the GPUs)
    settings = {"model": str(model), "backend": name, "device": device, "fp16": fp16, "batch_sizes": batch_sizes,
                "loops": loops, "warmup": warmup, "height": height, "width": width,
                "dataroot": str(dataroot) if dataroot else None, "e2e_batches": e2e_batches, "seed": seed,
                **{k: v for k, v in runner_options.items() if v is not None}}
    report = _new_report(model, name, settings)
    with tempfile.TemporaryDirectory(prefix="pix2pixhd-bench-") as tmp:
        inputs = _EndToEndInputs(dataroot, Path(tmp), needed=max(batch_sizes) * max(e2e_batches, 1), seed=seed,
                                 wanted=bool(e2e_batches or dataroot is not None))
        runner = None
        try:
            for bs in batch_sizes:
                if runner is None or name == "ais_bench":  # an OM runs one batch gear per session
                    if runner is not None:
                        runner.deactivate()
                    runner = _activate(model, name, bs, device=device, fp16=fp16, height=height, width=width,
                                       **runner_options)
                report["runs"].append(_bench_batch_size(
                    runner, name, bs, report["machine"], inputs, loops=loops, warmup=warmup, e2e_batches=e2e_batches,
                    seed=seed, asked_hw=(height, width) if height else None))
        finally:
            if runner is not None:
                runner.deactivate()
    return report


def _check_settings(batch_sizes: Sequence[int], loops: int, warmup: int, e2e_batches: int, height: Optional[int],
                    width: Optional[int]) -> None:
    for name, value, least in (("--loops", loops, 1), ("--warmup", warmup, 0), ("--e2e-batches", e2e_batches, 0)):
        if value < least:
            raise UserError(f"{name} must be at least {least}, not {value}", fix=f"pass {name} {least} or more")
    if not batch_sizes or min(batch_sizes) < 1:
        raise UserError(f"batch sizes must be 1 or more, not {list(batch_sizes)}",
                        fix="pass e.g. --batch-size 1 4 8")
    if (height is None) != (width is None):
        raise UserError("--height and --width go together", fix="pass both, or neither for the model's size")


def _new_report(model: PathLike, name: str, settings: Dict[str, object]) -> Dict[str, object]:
    """The report's header (tool, time, machine, versions, settings, model); ``runs`` filled per batch size."""
    return {
        "tool": "pix2pixhd-deploy bench", "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(), "versions": versions(), "settings": settings, "model": model_identity(model),
        "throughput_formula": "device-only images/s = 1000 x batch size / mean compute ms (ais_bench's); "
                              "end-to-end images/s = images / total seconds",
        "timing_note": BACKENDS[name].timing, "runs": []}


class _EndToEndInputs:
    """The label maps the end-to-end part reads, found or made once (:func:`_e2e_pairs`) for every batch size."""

    def __init__(self, dataroot: Optional[PathLike], tmp: Path, *, needed: int, seed: int, wanted: bool):
        self.dataroot, self.tmp, self.needed, self.seed, self.wanted = dataroot, tmp, needed, seed, wanted
        self.pairs, self.hw, self.instances = None, None, None

    def prepare(self, hw: Optional[Tuple[int, int]], base: int, use_instance: bool) -> None:
        if self.pairs is None and self.wanted:
            self.pairs, self.hw, self.instances = _e2e_pairs(self.dataroot, hw, self.tmp, self.needed, self.seed,
                                                             base, use_instance)


def _bench_batch_size(runner, name: str, bs: int, host: Dict[str, object], inputs: _EndToEndInputs, *, loops: int,
                      warmup: int, e2e_batches: int, seed: int,
                      asked_hw: Optional[Tuple[int, int]]) -> Dict[str, object]:
    """One batch size's figures: device-only, end-to-end, memory and the machine's load (or why it was skipped)."""
    from .runners.adapter import encoding_of, make_adapter

    label_nc, use_instance = encoding_of(runner)
    engine = make_adapter(runner, label_nc, use_instance)
    spec = runner.input_spec()
    config = getattr(runner, "config", None)
    base = config.size_multiple if config is not None else 32
    run: Dict[str, object] = {"backend": name, "runtime": runner.describe(), "hardware": _hardware(runner, host),
                              "batch_size": bs, "model_form": engine.describe()}
    run["device"] = f"{run['hardware']}, {run['runtime']}"
    if spec.batch is not None and spec.batch != bs:
        run["skipped"] = f"the model has a static batch of {spec.batch}"
        log.warning("batch %d skipped: %s", bs, run["skipped"])
        return run
    hw = engine.size or asked_hw
    inputs.prepare(hw, base, use_instance)
    hw = hw or inputs.hw or DEFAULT_HW
    log.info("bench %s, batch %d, %dx%d: %d warm-up + %d timed executions", runner.describe(), bs, hw[1], hw[0],
             warmup, loops)
    feeds = engine.feeds(*scene_maps(bs, hw[0], hw[1], seed=seed))
    cuda = _torch_cuda_device(runner)
    if cuda:
        import torch

        torch.cuda.reset_peak_memory_stats(cuda)
    run["input_shape"] = list(feeds[spec.name].shape)
    run["input_shapes"] = {k: list(v.shape) for k, v in feeds.items()}
    run["device_only"] = bench_device_only(runner, feeds, loops=loops, warmup=warmup)
    del feeds
    run["end_to_end"] = None
    if e2e_batches:
        out_dir = inputs.tmp / f"e2e_bs{bs}"
        out_dir.mkdir()
        run["end_to_end"] = bench_end_to_end(engine, inputs.pairs, batch_size=bs, batches=e2e_batches,
                                             out_dir=out_dir, base=base, instances=inputs.instances)
    run["peak_host_mib"] = peak_host_mib()
    # other work on the machine slows the figures down: the load says how busy it was
    run["load_average"] = [round(v, 2) for v in os.getloadavg()]
    run["peak_device_mib"] = None
    if cuda:
        import torch

        run["peak_device_mib"] = round(torch.cuda.max_memory_allocated(cuda) / 2 ** 20, 1)
    return run


def _activate(model: PathLike, name: str, batch_size: int, **options):
    """An active runner for ``batch_size``. An OM is asked for that gear (``--dymBatch``); a static-batch OM refuses
    a gear, so it is then opened as it is, and a batch it cannot take is skipped by the caller."""
    from .runners import make_runner

    if name == "torch":  # the form run uses: maps in, encoding and tensor2im on the device, pictures out
        options = dict(options, input_format=forms.MAPS, output_format=forms.UINT8)
    if name != "ais_bench":
        return make_runner(model, backend=name, **options).activate()
    try:
        return make_runner(model, backend=name, **dict(options, dym_batch=batch_size)).activate()
    except UserError as first:
        try:
            return make_runner(model, backend=name, **dict(options, dym_batch=None)).activate()
        except UserError:
            raise first from None


def _torch_cuda_device(runner) -> Optional[str]:
    device = str(getattr(runner, "device", "") or "")
    return device if runner.name == "torch" and device.startswith("cuda") else None


def _e2e_pairs(dataroot: Optional[PathLike], hw: Optional[Tuple[int, int]], tmp: Path, needed: int, seed: int,
               base: int, use_instance: bool):
    """The label/instance pairs the end-to-end part reads, their (H, W) and where their instance maps come from: the
    user's (any kind of label map; instance maps derived when the data root has none), or synthetic scenes (at most
    16 distinct ones, cycled)."""
    from .data.dataset import find_pairs, resolve_instances
    from .data.labelmaps import read_label_map

    if dataroot is not None:
        instances = resolve_instances(dataroot, None if use_instance else "none")
        pairs = find_pairs(dataroot, instances=instances)
        return pairs, read_label_map(pairs[0].label, base=base).shape, instances
    hw = hw or DEFAULT_HW
    count = max(1, min(needed, 16))
    folder = _synthetic_dataroot(tmp / "data", count, hw[0], hw[1], seed)
    return find_pairs(folder, use_instance=use_instance), hw, "files" if use_instance else "none"


# ------------------------------------------------------------------------------------- tables and charts

def format_number(value: Optional[float]) -> str:
    """How the tables print a figure: 4 significant digits, whole numbers from 1000 (the JSON keeps them all)."""
    if value is None:
        return "n/a"
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4g}"


SEED_COLUMNS = ("device", "batch size", "images/s")
DETAIL_COLUMNS = ("device", "batch size", "device-only images/s", "end-to-end images/s", "p50 ms", "p90 ms",
                  "p99 ms", "peak host MiB", "peak device MiB")


def table_rows(runs: Iterable[Dict[str, object]]) -> Tuple[List[List[str]], List[List[str]]]:
    """(seed-form rows, detail rows) of the figures, formatted; the JSON holds each of them."""
    seed_rows, detail_rows = [], []
    for run in runs:
        if run.get("skipped"):
            seed_rows.append([str(run["device"]), str(run["batch_size"]), f"skipped: {run['skipped']}"])
            continue
        dev = run["device_only"]
        e2e = run.get("end_to_end") or {}
        seed_rows.append([str(run["device"]), str(run["batch_size"]), format_number(dev["images_per_s"])])
        detail_rows.append([str(run["device"]), str(run["batch_size"]), format_number(dev["images_per_s"]),
                            format_number(e2e.get("images_per_s")), format_number(dev["p50_ms"]),
                            format_number(dev["p90_ms"]), format_number(dev["p99_ms"]),
                            format_number(run.get("peak_host_mib")), format_number(run.get("peak_device_mib"))])
    return seed_rows, detail_rows


def _markdown(columns: Sequence[str], rows: List[List[str]]) -> List[str]:
    return ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |",
            *("| " + " | ".join(r) + " |" for r in rows)]


def format_tables(report: Dict[str, object]) -> str:
    """The seed's table (device-only images/s, ais_bench's figure), then the detailed one, in Markdown."""
    seed_rows, detail_rows = table_rows(report["runs"])
    lines = ["images/s, device-only (ais_bench's pure-inference figure: 1000 x batch / mean compute ms):", "",
             *_markdown(SEED_COLUMNS, seed_rows), ""]
    if detail_rows:
        lines += ["detail (latency of one device-only execution; memory: process peak RSS so far, device peak "
                  "allocated by torch):", "", *_markdown(DETAIL_COLUMNS, detail_rows)]
    machine, vers = report.get("machine") or {}, report.get("versions") or {}
    if machine:
        load = "/".join(str(v) for v in machine.get("load_average", []))
        lines += ["", f"machine: {machine.get('cpu')}, {machine.get('cpu_count')} cores"
                      + (f", GPUs {', '.join(machine['gpus'])}" if machine.get("gpus") else "")
                      + (f"; load average at start {load} (1/5/15 min)" if load else "")
                      + "; " + ", ".join(f"{k} {v}" for k, v in vers.items() if v)]
    return "\n".join(lines)


def merge_reports(report: Optional[Dict[str, object]], others: Sequence[Tuple[str, Dict[str, object]]]):
    """One report holding ``report``'s runs and those of earlier reports (``(file, report)``), for one chart and
    table across backends run in different processes. Each merged run keeps its own machine and source file."""
    runs = []
    if report is not None:
        runs.extend(dict(r, source=None) for r in report["runs"])
    for source, other in others:
        if "runs" not in other or not isinstance(other["runs"], list):
            raise UserError("not a bench JSON (it has no runs)", path=source,
                            fix="pass files written by pix2pixhd-deploy bench --json")
        runs.extend(dict(r, source=source, machine=other.get("machine")) for r in other["runs"])
    merged = dict(report) if report is not None else {
        "tool": "pix2pixhd-deploy bench", "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(), "versions": versions()}
    merged["runs"] = runs
    merged["merged_from"] = [source for source, _ in others]
    return merged


def draw_chart(report: Dict[str, object], path: PathLike) -> Path:
    """A PNG of images/s by runtime (one bar colour each) and batch size: device-only and end-to-end panels."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise UserError("the chart needs matplotlib, which is not installed", fix="pip install matplotlib") from exc
    from .fileio import atomic_open

    runs = [r for r in report["runs"] if not r.get("skipped")]
    if not runs:
        raise UserError("there is nothing to chart: every batch size was skipped", fix="check the batch sizes")
    labels = list(dict.fromkeys(str(r["device"]) for r in runs))
    sizes = sorted({int(r["batch_size"]) for r in runs})
    panels = [("device_only", "device-only (ais_bench's figure)")]
    if any(r.get("end_to_end") for r in runs):
        panels.append(("end_to_end", "end-to-end (PNG files in, PNG pictures out)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    width = 0.8 / len(labels)
    for ax, (key, title) in zip(axes[0], panels):
        for k, label in enumerate(labels):
            xs, ys = [], []
            for r in runs:
                if str(r["device"]) == label and r.get(key):
                    xs.append(sizes.index(int(r["batch_size"])) + (k - (len(labels) - 1) / 2) * width)
                    ys.append(r[key]["images_per_s"])
            bars = ax.bar(xs, ys, width=width, label=label)
            ax.bar_label(bars, labels=[format_number(y) for y in ys], fontsize=7)
        ax.set_xticks(range(len(sizes)), [str(s) for s in sizes])
        ax.set_xlabel("batch size")
        ax.set_ylabel("images/s (higher is better)")
        ax.set_title(title, fontsize=10)
    axes[0][0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.15), ncol=1)
    fig.suptitle(f"pix2pixhd-deploy bench, {report.get('created', '')}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
