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

import json
import logging
import time
from typing import Dict, List, Optional, Sequence, Tuple

from ..data.dataset import cityscapes_pairs, find_pairs, resolve_instances
from ..data.labelmaps import Pair, planned_size
from ..errors import PathLike, UserError
from ..fileio import atomic_write_text
from ..runners.adapter import make_adapter
from ..runners.base import Runner
from .folder import RunFolder
from .profile import summarise
from .settings import RunReport, RunSettings
from .stream import Stream

log = logging.getLogger(__name__)


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
                engine = make_adapter(runner, settings.label_nc, settings.use_instance,
                                     threads=getattr(runner, "intra_op_threads", None))
                first = planned_size(todo[0], settings.size_multiple, settings.fit)
                if min(first) > 0:  # a map too small gets its own error when it is read
                    engine.check_size(*first, path=todo[0].label)
                folder.manifest["runner"] = runner.describe()
                folder.manifest["model_form"] = engine.describe()
                folder.prepare(todo)
                stream = Stream(folder, engine, settings, report, keep_going=keep_going, workers=workers,
                                show_progress=show_progress)
                try:
                    stream.run(todo)
                finally:
                    report.seconds = time.perf_counter() - start
                    folder.save()
                if settings.profile:
                    report.profile = summarise(stream.recorded, report.seconds, runner.layer_profile())
                    atomic_write_text(folder.out / "profile.json", json.dumps(report.profile, indent=1))
        folder.finish(pairs, report, write_index=write_index)
    return report
