"""``pix2pixhd-deploy run``: label maps in, photos out, streaming, with nothing in between on disk.

In:  PNG pairs (``DATAROOT/test_label`` + ``test_inst``, or a Cityscapes gtFine split) and a model (or what
     :mod:`choose` picked for a checkpoint).
Out: an output folder (:mod:`runfolder`): ``images/<name>_synthesized_image.png`` and ``<name>_input_label.png``,
     ``raw/<name>_0.bin`` with ``--save-raw``, ``manifest.json`` and ``index.html``.

This module holds the run's settings, the runner it uses and :func:`run`, which ties the pieces together: the
output folder (:mod:`runfolder`: lock, resume check, manifest), the adapter from maps to the runner's feeds
(:mod:`adapters`) and the streaming stages with bounded queues (:mod:`stream`: decode -> batch -> compute ->
write). Every file is written to a temporary name and renamed; a re-run skips images whose picture exists, so a
killed run resumes where it stopped.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .adapters import make_engine
from .dataset import Pair, cityscapes_pairs, find_pairs, resolve_instances
from .devices import parse_device
from .errors import Failures, PathLike, UserError
from .labelmaps import MapOptions, planned_size
from .labels import LABEL_NC
from .runfolder import RunFolder
from .runners.base import Runner
from .stream import Stream

log = logging.getLogger(__name__)


@dataclass
class RunSettings:
    """What defines a run's outputs; saved in the manifest and checked on resume."""

    model: str
    backend: str
    device: Optional[str] = None
    fp16: bool = False
    batch_size: int = 1
    image_format: str = "png"
    save_raw: bool = False
    label_nc: int = LABEL_NC
    use_instance: bool = True
    size_multiple: int = 32
    streams: int = 1              # batches computed at once (each runtime then uses cores / streams threads)
    fast_convs: bool = False      # torch: fastconv's Winograd and row-sum convolutions
    checkpoint: Optional[str] = None    # the checkpoint a cached graph was built from (:mod:`choose`)
    cache_dir: Optional[str] = None     # --cache-dir (None: the default model cache)
    compiled_dir: Optional[str] = None  # where the runtime keeps its compiled form of the graph
    graph_key: Optional[Dict[str, object]] = None  # the cache key of that graph (a Ray node builds its own)
    instances: str = "files"      # files | labels | none (labelmaps); "none" goes with use_instance=False
    fit: str = "resize"           # resize | pad (labelmaps)

    @classmethod
    def from_choice(cls, choice, **fields) -> "RunSettings":
        """The settings of a run of what :func:`choose.choose` picked (``fields``: the run's other settings)."""
        return cls(model=choice.model, backend=choice.backend, checkpoint=choice.checkpoint,
                   compiled_dir=choice.compiled_dir, graph_key=choice.cache["key"] if choice.cache else None,
                   **fields)

    def identity(self) -> Dict[str, object]:
        """The settings that change the pictures (a resume with different ones would mix outputs).

        Not in it: what only changes speed or which files are written (batch size, streams, workers, format,
        --save-raw). The model's own identity is :func:`model_identity`.
        """
        keys = ["backend", "fp16", "label_nc", "use_instance", "size_multiple"]
        # each only when not its default, so folders written before the option existed still resume
        if self.fast_convs:
            keys.append("fast_convs")
        if self.instances == "labels":  # "none" is use_instance=False, already there
            keys.append("instances")
        if self.fit != "resize":
            keys.append("fit")
        identity = {k: getattr(self, k) for k in keys}
        kind = self.device_kind()
        if kind != "cpu":  # a GPU rounds differently; only off the CPU, so older CPU folders still resume
            identity["device"] = kind
        return identity

    def map_options(self) -> MapOptions:
        """How this run reads its maps (:mod:`labelmaps`)."""
        return MapOptions(label_nc=self.label_nc, instances=self.instances if self.use_instance else "none",
                          fit=self.fit, base=self.size_multiple)

    def device_kind(self) -> str:
        """``cpu``, ``cuda``, ``npu``...: the kind of device the pictures are computed on."""
        if self.backend == "torch":
            from .runners.torch_runner import resolve_device

            return resolve_device(self.device).split(":")[0]
        kind = parse_device(self.device).kind
        if kind == "number":  # the runtime's accelerator N: an NPU for ais_bench (the cpu provider otherwise)
            return "npu" if self.backend == "ais_bench" else "cpu"
        return "cpu" if kind == "auto" else kind


@dataclass
class RunReport:
    output: Path
    done: int = 0
    skipped: int = 0
    failed: Failures = field(default_factory=lambda: Failures("image"))  #: the run folder's record
    seconds: float = 0.0
    compute_seconds: float = 0.0
    index: Optional[Path] = None

    @property
    def images_per_second(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        text = (f"run: {self.done} pictures in {self.seconds:.1f} s ({self.images_per_second:.3f} images/s, "
                f"compute {self.compute_seconds:.1f} s), {self.skipped} already done -> {self.output}")
        if self.index:
            text += f"\nopen {self.index}"
        return text


# ----------------------------------------------------------------------------------------------- runners

def runner_for_run(model: PathLike, *, backend: Optional[str] = None, device: Optional[str] = None,
                   fp16: bool = False, streams: int = 1, threads: Optional[int] = None, label_nc: int = LABEL_NC,
                   use_instance: bool = True, save_raw: bool = False, **options):
    """The runner ``run`` uses, with the CPU's cores shared among ``streams`` concurrent batches, or limited to
    ``threads`` (a Ray actor's CPUs). A torch checkpoint runs in the maps form with uint8 output (encoding and
    ``tensor2im`` on the device; float output with ``save_raw``), like the graphs export makes for ``run``.

    In-process, two single-threaded ONNX Runtime streams ran 8% faster than one two-threaded one on a 2-core CPU;
    end to end (benchmarks/run_vs_upstream.py) they did not help there, so the default is one stream.
    """
    from .runners import backend_for, make_runner

    name = backend_for(model, backend)
    if threads is None and streams > 1:
        threads = max(1, (os.cpu_count() or 1) // streams)
    if name in ("onnxruntime", "openvino") and threads and not options.get("intra_op_threads"):
        options["intra_op_threads"] = threads
    if name not in ("openvino", "onnxruntime"):
        options.pop("compiled_dir", None)
    if name == "torch":
        if threads:
            import torch

            torch.set_num_threads(threads)
        options.update(input_format="maps", output_format="float" if save_raw else "uint8", label_nc=label_nc,
                       use_instance=use_instance)
    return make_runner(model, backend=name, device=device, fp16=fp16, **options)


def runner_for_settings(settings: "RunSettings", *, threads: Optional[int] = None):
    """:func:`runner_for_run` for a run's settings (the local engine and each Ray actor build theirs here)."""
    return runner_for_run(settings.model, backend=settings.backend, device=settings.device, fp16=settings.fp16,
                          streams=settings.streams, threads=threads, label_nc=settings.label_nc,
                          use_instance=settings.use_instance, save_raw=settings.save_raw,
                          fast_convs=settings.fast_convs, compiled_dir=settings.compiled_dir)


def open_runner(settings: "RunSettings", choice=None, *, threads: Optional[int] = None):
    """The run's runner, activated. A graph from the model cache that does not load (damaged where its size did
    not show it) is rebuilt once, with one line saying so; ``settings`` then names the new graph."""
    runner = runner_for_settings(settings, threads=threads)
    try:
        return runner.activate()
    except UserError as exc:
        if choice is None or not choice.cache:
            raise
        from .choose import graph_for_key

        new = graph_for_key(choice.checkpoint, choice.cache["key"], cache_dir=settings.cache_dir,
                            rebuild_reason=f"it did not load ({exc.problem})")
        settings.model, settings.compiled_dir = new.model, new.compiled_dir
        return runner_for_settings(settings, threads=threads).activate()


def discover(dataroot: Optional[PathLike], cityscapes: Optional[PathLike], *, use_instance: bool = True,
             instances: Optional[str] = None, phase: str = "test") -> Tuple[List[Pair], str]:
    """The pairs to run and where their instance maps come from (``instances`` resolved: files, labels or none;
    None means ``files`` when the data has instance maps, else ``labels``)."""
    if (dataroot is None) == (cityscapes is None):
        raise UserError("give exactly one of --dataroot and --cityscapes",
                        fix="--dataroot DIR (with test_label/ and test_inst/) or --cityscapes gtFine/val")
    if not use_instance:
        instances = "none"
    if cityscapes is not None:
        instances = instances or "files"
        return cityscapes_pairs(cityscapes, instances=instances), instances
    instances = resolve_instances(dataroot, instances, phase=phase)
    return find_pairs(dataroot, phase=phase, instances=instances), instances


def run(pairs: Sequence[Pair], output: PathLike, runner, settings: RunSettings, *, keep_going: bool = False,
        workers: int = 2, show_progress: bool = True, write_index: bool = True,
        choice: Optional[Dict[str, object]] = None) -> RunReport:
    """Stream ``pairs`` through ``runner`` into ``output``; see the module docstring. ``runner``: a runner
    (activated here), or a function that returns one activated (:func:`open_runner`), called only when there is
    work. ``choice``: what :mod:`choose` decided, for the manifest."""
    with RunFolder(output, settings) as folder:
        report = RunReport(output=folder.out, failed=folder.failed)
        todo = folder.todo(pairs)
        report.skipped = len(pairs) - len(todo)
        start = time.perf_counter()
        if choice:
            folder.manifest["choice"] = choice
        if todo:
            if callable(runner) and not isinstance(runner, Runner):
                runner = runner()
            with runner:  # a model that does not load fails here, before anything is written
                engine = make_engine(runner, settings.label_nc, settings.use_instance,
                                     threads=getattr(runner, "intra_op_threads", None))
                first = planned_size(todo[0], settings.size_multiple, settings.fit)
                if min(first) > 0:  # a map too small gets its own error when it is read
                    engine.check_size(*first, path=todo[0].label)
                folder.manifest["runner"] = runner.describe()
                folder.manifest["model_form"] = engine.describe()
                folder.prepare(todo)
                try:
                    Stream(folder, engine, settings, report, keep_going=keep_going, workers=workers,
                           show_progress=show_progress).run(todo)
                finally:
                    report.seconds = time.perf_counter() - start
                    folder.save()
        folder.finish(pairs, report, write_index=write_index)
    return report
