"""``pix2pixhd-deploy run --engine ray``: the streaming run spread over a Ray cluster, with the local engine's outputs.

In:  the pairs, :class:`~pix2pixhd_deploy.run.local.RunSettings` and output folder of :func:`pipeline.run`, plus the
     cluster (``address``) and the size and resources of the pool of model actors.
Out: the same files as the local engine (``OUTPUT/images/<name>_synthesized_image.png`` and ``<name>_input_label.png``,
     optional ``raw/<name>_0.bin``, ``manifest.json``, ``index.html``); the manifest's per-image entries also name
     the worker (``host:pid``) that made each picture, and the report adds images/s per worker.

How the work is spread, after Ray Data's offline batch inference pattern:

1. the pairs still to do (complete outputs are skipped first, as the local engine does) become a Ray Dataset of
   file paths, one block per forward pass of ``batch_size`` consecutive pairs, as the local engine groups them
   (the grouping can change a pixel by a level, so it is not left to Ray);
2. :func:`decode_row` reads each PNG pair with the local engine's reader, :func:`stream.decode_pair` (any kind of
   label map, instance maps from files or derived, fitted to the generator's size), as CPU tasks on any node;
3. :class:`GeneratorStage`, a pool of ``num_workers`` actors (``ActorPoolStrategy``), builds the runner once per actor
   with :func:`runners.make_runner` (on the actor's GPU when it is given one), turns each batch of maps into uint8
   pictures with :func:`adapters.make_adapter` -- the same code as the local engine, so the same pixels -- and
   writes them with the same atomic writes and names; it returns one small record per image, never the pictures;
4. the driver streams the records into ``manifest.json``, holding the output folder's lock all along.

A worker that dies is restarted and its unfinished batch retried by Ray, a bounded number of times
(:data:`MAX_RESTARTS` per actor, :data:`MAX_TASK_RETRIES` per batch; Ray Data's own default is forever, which turns a
crash that repeats -- SIGILL, a segfault, out of memory -- into a hang); past that the run ends with one line naming
the unfinished inputs and the worker's last error. A retry rewrites a picture under the same name with the same
bytes, through a temporary file and a rename, so no image is lost, none is duplicated and none is left half-written;
the driver counts a picture once, from the one record of the task that finished. It waits for every model actor to
stop before it removes the temporary files dead workers left or releases the folder's lock, so no actor still
writes into a folder another run may take. The manifest grows by appended journal lines (:class:`RunFolder`), not
by rewriting it, and ``--keep-going`` records an input that fails to decode or to compute, as the local engine does.

Every node must see the inputs, the model and the output folder at the same paths (a shared filesystem); the
driver resolves them to absolute paths before it hands them out. The package itself must be installed on every
node, in the same Python environment.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from ..data.labelmaps import MapOptions, Pair
from ..errors import PathLike, UserError
from ..fileio import ensure_output_dir, progress
from ..ray_auth import check_ray_version, prepare_local_auth
from ..runners.adapter import make_adapter
from ..runners.open import runner_for_settings
from .folder import RunFolder, crop_back, write_outputs
from .settings import RunReport, RunSettings
from .stream import decode_pair

log = logging.getLogger(__name__)

#: restarts of one model actor, and retries of one batch, before the run gives up (a crash that repeats is a bug or
#: a machine that cannot run the model, not bad luck)
MAX_RESTARTS = 2
MAX_TASK_RETRIES = 2

INSTALL_HINT = "pip install 'pix2pixhd-deploy[ray]' (or pip install 'ray[data]>=2.52') on every node"


def import_ray():
    """Ray, or a :class:`UserError` that says what to install (Ray Data missing, or a Ray without authentication)."""
    try:
        import ray
        import ray.data  # noqa: F401  (the extra is ray[data]: a bare ``ray`` lacks pyarrow/pandas)
    except ImportError as exc:
        raise UserError(f"--engine ray needs Ray Data, which is not installed ({exc})",
                        fix=INSTALL_HINT + ", or use the local engine (--engine local)") from exc
    check_ray_version(ray.__version__, INSTALL_HINT)
    return ray


def start_local_cluster(**options):
    """Ray, connected to a new cluster of this machine alone, authenticated (:func:`prepare_local_auth`).
    ``address="local"``: without it Ray would join the last ``ray start`` cluster of the machine, which
    ``--address auto`` asks for."""
    prepare_local_auth(None)
    ray = import_ray()
    ray.init(address="local", **options)
    return ray


# --------------------------------------------------------------------------------------------- the stages

def _error_fields(exc: Optional[UserError]) -> Dict[str, str]:
    if exc is None:
        return {"error": "", "error_path": "", "error_fix": ""}
    return {"error": exc.problem, "error_path": exc.path or "", "error_fix": exc.fix or ""}


def decode_row(row: Dict[str, object], *, options: MapOptions) -> Dict[str, object]:
    """One pair's paths -> its uint8 label map, int32 instance map and the map's own size (a CPU task). A bad input
    becomes an error row, so that ``--keep-going`` can go on and the driver can name the file."""
    pair = Pair(str(row["key"]), Path(str(row["label"])), Path(str(row["instance"])) if row["instance"] else None)
    item = decode_pair(0, pair, options)
    # Arrow columns want a value in every row: an error row (or one without instances) carries 1x1 placeholders
    return {"name": row["name"], "label": item.label if item.label is not None else np.zeros((1, 1), np.uint8),
            "instance": item.inst if item.inst is not None else np.zeros((1, 1), np.int32),
            "size": np.array(item.size or (0, 0), np.int64), "decode_s": item.seconds, **_error_fields(item.error)}


class GeneratorStage:
    """One actor of the pool: loads the model once, then maps batches of decoded maps to pictures on disk.

    ``__call__`` takes a numpy batch of :func:`decode_row` rows and returns one record per row: the name, the
    worker, the times (as the local engine's manifest entries) or the error. Subclasses may override
    :meth:`write` (the fault test does).
    """

    def __init__(self, output: str, model: str, settings: Dict[str, object], threads: int = 1):
        self.out = Path(output)
        self.settings = RunSettings(**settings)
        s = self.settings
        # the CPUs Ray gave this actor, whether or not torch was imported before
        if s.graph_key and not Path(model).is_file():  # a node without the driver's cache builds its own once
            from ..runners.choose import graph_for_key

            chosen = graph_for_key(s.checkpoint, s.graph_key, cache_dir=s.cache_dir)
            model, s.compiled_dir = chosen.model, chosen.compiled_dir
        self.runner = runner_for_settings(dataclasses.replace(s, model=model), threads=threads)
        self.runner.activate()
        self.engine = make_adapter(self.runner, s.label_nc, s.use_instance, threads=threads)
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.runner_text = self.runner.describe()

    def write(self, name: str, picture: np.ndarray, label: np.ndarray, raw: Optional[np.ndarray]) -> None:
        """The local engine's files and order: raw, coloured label, then the picture that marks it complete."""
        write_outputs(self.out, name, self.settings, picture, label, raw)

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, list]:
        s = self.settings
        names = [str(n) for n in batch["name"]]
        records: List[Dict[str, object]] = []
        good = []
        for i, name in enumerate(names):
            if batch["error"][i]:
                records.append(self._record(name, error=(batch["error"][i], batch["error_path"][i],
                                                          batch["error_fix"][i])))
            else:
                good.append(i)
        # consecutive images of one size form a forward pass, as in the local engine
        groups: List[List[int]] = []
        for i in good:
            if groups and batch["label"][i].shape == batch["label"][groups[-1][0]].shape:
                groups[-1].append(i)
            else:
                groups.append([i])
        for group in groups:
            labels = np.stack([batch["label"][i] for i in group])
            insts = np.stack([batch["instance"][i] for i in group]) if s.use_instance else None
            t0 = time.time()
            start = time.perf_counter()
            try:
                pictures, raw = self.engine(labels, insts, s.save_raw)
            except UserError as exc:
                records.extend(self._record(names[i], error=(exc.problem, exc.path or "", exc.fix or ""))
                               for i in group)
                continue
            compute = time.perf_counter() - start
            for j, i in enumerate(group):
                w = time.perf_counter()
                size = tuple(int(v) for v in batch["size"][i])
                self.write(names[i], *crop_back(s, size, pictures[j], labels[j], raw[j] if raw is not None else None))
                records.append(self._record(
                    names[i], decode_s=float(batch["decode_s"][i]), compute_s=compute / len(group),
                    write_s=time.perf_counter() - w, batch=len(group), height=int(labels.shape[1]),
                    width=int(labels.shape[2]), t_start=t0, t_end=time.time()))
        return {k: [r[k] for r in records] for k in _RECORD_FIELDS}

    def _record(self, name: str, *, error=("", "", ""), decode_s=0.0, compute_s=0.0, write_s=0.0, batch=0,
                height=0, width=0, t_start=0.0, t_end=0.0) -> Dict[str, object]:
        return {"name": name, "worker": self.worker, "runner": self.runner_text, "decode_s": decode_s,
                "compute_s": compute_s, "write_s": write_s, "batch": batch, "height": height, "width": width,
                "t_start": t_start, "t_end": t_end, "error": str(error[0]), "error_path": str(error[1]),
                "error_fix": str(error[2])}


_RECORD_FIELDS = ("name", "worker", "runner", "decode_s", "compute_s", "write_s", "batch", "height", "width",
                  "t_start", "t_end", "error", "error_path", "error_fix")


# ------------------------------------------------------------------------------------------------ report

@dataclass
class WorkerStats:
    images: int = 0
    compute_seconds: float = 0.0
    first_start: float = math.inf
    last_end: float = 0.0

    @property
    def images_per_second(self) -> float:
        """Pictures over the span from its first batch to its last write (model loading excluded)."""
        span = self.last_end - self.first_start
        return self.images / span if span > 0 else 0.0


@dataclass
class RayRunReport(RunReport):
    address: str = ""
    num_workers: int = 0
    workers: Dict[str, WorkerStats] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [super().summary()]
        if self.workers:  # restarted workers count as their own
            lines.append(f"ray: {len(self.workers)} model worker(s) of a pool of {self.num_workers} on "
                         f"{self.address or 'a local cluster'}")
        for name, w in sorted(self.workers.items()):
            lines.append(f"  {name}: {w.images} pictures, {w.images_per_second:.3f} images/s while busy, "
                         f"compute {w.compute_seconds:.1f} s")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------------- run

def _user_error_in(exc: BaseException) -> Optional[UserError]:
    """The UserError a worker raised, from the exception Ray re-raises in the driver."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, UserError):
            return UserError(exc.problem, path=exc.path, fix=exc.fix)
        cause = getattr(exc, "cause", None)
        exc = cause if isinstance(cause, BaseException) else (exc.__cause__ or exc.__context__)
    return None


def _batches_as_blocks(ray, items: List[Dict[str, str]], batch: int):
    """A Dataset with one block per forward pass: ``batch`` consecutive pairs, as the local engine groups them.

    The grouping decides the pixels (torch on a CPU can differ by a level between a batch of 1 and of 2), so it is
    fixed here, and the model stage takes each block as it is (``batch_size=None``: no re-bundling by Ray)."""
    import pyarrow as pa

    chunks = [items[i:i + batch] for i in range(0, len(items), batch)]
    return ray.data.from_arrow([pa.Table.from_pylist(chunk) for chunk in chunks])


def _check_resources(ray, num_workers: int, cpus_per_worker: float, gpus_per_worker: float, *,
                     local: bool = False) -> None:
    """Warn (an autoscaler may still add nodes) when the pool cannot start on the cluster as it is; refuse when
    ``local`` (a cluster this process started, which never grows) cannot run it: the model actors would hold every
    CPU and the decoding tasks would wait for ever."""
    have = ray.cluster_resources()
    cpus, gpus = have.get("CPU", 0.0), have.get("GPU", 0.0)
    if gpus_per_worker and gpus < gpus_per_worker * num_workers:
        if local:
            raise UserError(f"this machine has {gpus:g} GPU(s) for Ray, but {num_workers} worker(s) x "
                            f"{gpus_per_worker:g} GPU(s) were asked for",
                            fix="lower --num-workers or --gpus-per-worker, or drop --gpus-per-worker to run on CPUs")
        log.warning("the Ray cluster has %g GPU(s) but %d worker(s) x %g GPU(s) were asked for; the run waits for "
                    "GPU nodes (drop --gpus-per-worker to run on CPUs)", gpus, num_workers, gpus_per_worker)
    if cpus < cpus_per_worker * num_workers + 1:
        if local:
            most = max(0, int((cpus - 1) // max(cpus_per_worker, 1e-9)))
            raise UserError(f"this machine has {cpus:g} CPU(s) for Ray: {num_workers} worker(s) x "
                            f"{cpus_per_worker:g} CPU(s) leave none for decoding the maps, so the run would wait "
                            "for ever",
                            fix=f"pass --num-workers {most} or fewer" if most else
                                "lower --cpus-per-worker (e.g. 0.5), or run without --engine ray")
        log.warning("the Ray cluster has %g CPU(s): %d worker(s) x %g CPU(s) leave less than one for decoding, so "
                    "the run may wait; lower --num-workers or --cpus-per-worker", cpus, num_workers,
                    cpus_per_worker)


def run_ray(pairs: Sequence[Pair], output: PathLike, settings: RunSettings, *, address: Optional[str] = None,
            num_workers: int = 1, gpus_per_worker: float = 0.0, cpus_per_worker: float = 1.0,
            keep_going: bool = False, show_progress: bool = True, write_index: bool = True,
            stage_cls: type = GeneratorStage) -> RayRunReport:
    """Run ``pairs`` through ``settings.model`` on a Ray cluster into ``output``; see the module docstring.

    ``address`` (None means default): Ray's ``ray.init(address=...)``: ``auto`` or ``HOST:PORT`` joins a running
    cluster, None uses ``RAY_ADDRESS`` or starts a local one; a connection this process already has is used as
    it is. ``stage_cls``: the actor class, :class:`GeneratorStage` or a subclass of it.
    """
    prepare_local_auth(address)  # before Ray is imported, which reads the mode
    ray = import_ray()
    if num_workers < 1:
        raise UserError(f"--num-workers must be at least 1 (got {num_workers})", fix="pass --num-workers 1 or more")
    if "://" in os.fspath(output):
        raise UserError("the output is a URL; run writes to a folder, with an atomic rename per file", path=output,
                        fix="mount the bucket on every node (s3fs, gcsfuse, a CSI volume in KubeRay) and pass the "
                            "mounted folder")
    report = RayRunReport(output=ensure_output_dir(output).resolve(),
                          address=address or os.environ.get("RAY_ADDRESS", ""), num_workers=num_workers)
    engine = {"name": "ray", "address": report.address, "num_workers": num_workers,
              "gpus_per_worker": gpus_per_worker, "cpus_per_worker": cpus_per_worker}
    with RunFolder(report.output, settings, engine=engine) as folder:
        report.failed = folder.failed
        todo = folder.todo(pairs)
        report.skipped = len(pairs) - len(todo)
        start = time.perf_counter()
        if todo:
            folder.prepare(todo)
            try:
                _execute(ray, todo, folder.out, settings, report, folder, address=address,
                         num_workers=num_workers, gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker,
                         keep_going=keep_going, show_progress=show_progress, stage_cls=stage_cls)
            finally:
                report.seconds = time.perf_counter() - start
                folder.save()
                folder.clean()  # what dead workers left; _execute returns once every actor has stopped
        folder.finish(pairs, report, write_index=write_index)
    return report


def _execute(ray, todo: List[Pair], out: Path, settings: RunSettings, report: RayRunReport, folder: RunFolder, *,
             address: Optional[str], num_workers: int, gpus_per_worker: float, cpus_per_worker: float,
             keep_going: bool, show_progress: bool, stage_cls: type) -> None:
    started_here = not ray.is_initialized()
    local = started_here and not (address or os.environ.get("RAY_ADDRESS"))
    if local:
        ray.init(address="local", log_to_driver=False, include_dashboard=False)  # authenticated: prepare_local_auth
    elif started_here:
        ray.init(address=address, log_to_driver=False)
    try:
        if not report.address:
            report.address = ray.get_runtime_context().gcs_address
            folder.manifest["engine"]["address"] = report.address
        _check_resources(ray, num_workers, cpus_per_worker, gpus_per_worker, local=local)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # one bar, ours, counting finished pictures
        batch = max(1, settings.batch_size)
        items = [{"key": p.key, "name": p.name, "label": str(Path(p.label).resolve()),
                  "instance": str(Path(p.instance).resolve()) if p.instance is not None and settings.use_instance
                  else ""} for p in todo]
        ds = _batches_as_blocks(ray, items, batch)
        ds = ds.map(decode_row, fn_kwargs={"options": settings.map_options()}, num_cpus=1)
        stage_settings = dataclasses.asdict(settings)
        with warnings.catch_warnings():
            # Ray 2.60 calls any extra keyword "deprecated" but has no named parameter for restarts yet, and its own
            # actor pool reads them from there (actor_pool_map_operator: "map_batches(..., max_restarts=0)")
            warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
            ds = ds.map_batches(
                stage_cls, batch_size=None, batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=num_workers),
                fn_constructor_kwargs={"output": str(out), "model": str(Path(settings.model).resolve()),
                                       "settings": stage_settings, "threads": max(1, int(cpus_per_worker))},
                num_cpus=cpus_per_worker, num_gpus=gpus_per_worker or None,
                max_restarts=MAX_RESTARTS, max_task_retries=MAX_TASK_RETRIES)
        rows = ds.iter_rows()
        try:
            _collect(rows, len(todo), report, folder, keep_going, show_progress)
        finally:
            _stop_actors(ray, rows)
    except Exception as exc:
        if isinstance(exc, UserError):
            raise
        user = _user_error_in(exc)
        if user is not None:
            raise user from exc
        if _is_actor_death(exc):
            raise _workers_died_error(exc, todo, folder) from exc
        raise
    finally:
        if started_here:
            ray.shutdown()


def _is_actor_death(exc: BaseException) -> bool:
    """Whether Ray gave up on a model actor (it died more often than MAX_RESTARTS / MAX_TASK_RETRIES allow)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if type(exc).__name__ in ("RayActorError", "ActorDiedError", "ActorUnavailableError", "WorkerCrashedError",
                                  "OutOfMemoryError"):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _workers_died_error(exc: BaseException, todo: Sequence[Pair], folder: RunFolder) -> UserError:
    """One line for a crash that repeated: the inputs not finished (the culprit is among the first of them) and
    the worker's last words."""
    unfinished = [p.name for p in todo if p.name not in folder.images and p.name not in folder.failed]
    shown = ", ".join(unfinished[:3]) + (f" and {len(unfinished) - 3} more" if len(unfinished) > 3 else "")
    last = " ".join(str(exc).split())
    last = last[last.find("The actor died"):] if "The actor died" in last else last
    return UserError(f"a model worker died {MAX_RESTARTS + 1} times, on a batch among {shown or 'the last inputs'} "
                     f"(last error: {last[:300]})", path=folder.out,
                     fix="run those inputs with --engine local to see the error; finished pictures are kept")


def _stop_actors(ray, rows, timeout: float = 60.0) -> None:
    """Stop the dataset (Ray Data kills its actor pool) and wait until no model actor of this job is alive, so that
    none still writes when the driver cleans the folder and releases its lock."""
    close = getattr(rows, "close", None) or getattr(getattr(rows, "_iterator", None), "close", None)
    if close is not None:
        with contextlib.suppress(Exception):
            close()
    deadline = time.monotonic() + timeout
    while True:
        alive = _alive_model_actors(ray)
        if not alive:
            return
        if time.monotonic() > deadline:
            log.warning("%d model actor(s) of this run are still alive %.0f s after the dataset stopped; check the "
                        "cluster (ray list actors) before another run uses this folder", len(alive), timeout)
            return
        time.sleep(0.2)


def _alive_model_actors(ray) -> List[object]:
    """The ids of this job's Ray Data map workers that are not dead (empty when Ray cannot say)."""
    try:
        from ray._private import state

        job = ray.get_runtime_context().get_job_id()
        table = state.actors() or {}
    except Exception:  # a private API: if it moves, do not hang on it
        return []
    return [actor_id for actor_id, info in table.items() if info.get("JobID") == job
            and info.get("State") != "DEAD" and "MapWorker" in str(info.get("ActorClassName", ""))]


def _collect(rows: Iterable[Dict[str, object]], total: int, report: RayRunReport, folder: RunFolder,
             keep_going: bool, show_progress: bool) -> None:
    bar = progress(range(total), desc="run", unit="img") if show_progress else None
    seen = set()
    try:
        for row in rows:
            name = str(row["name"])
            if name in seen:  # cannot happen with Ray's retries (one record per finished task); never count twice
                log.warning("%s: a second record for this picture, ignored", name)
                continue
            seen.add(name)
            if row["error"]:
                exc = UserError(str(row["error"]), path=str(row["error_path"]) or None,
                                fix=str(row["error_fix"]) or None)
                if not keep_going:
                    raise exc
                folder.failed.add(exc, name)
                continue
            worker = str(row["worker"])
            folder.record(name, {"decode_s": round(float(row["decode_s"]), 4),
                                 "compute_s": round(float(row["compute_s"]), 4),
                                 "write_s": round(float(row["write_s"]), 4), "batch": int(row["batch"]),
                                 "height": int(row["height"]), "width": int(row["width"]), "worker": worker})
            folder.manifest.setdefault("runner", str(row["runner"]))
            stats = report.workers.setdefault(worker, WorkerStats())
            stats.images += 1
            stats.compute_seconds += float(row["compute_s"])
            stats.first_start = min(stats.first_start, float(row["t_start"]))
            stats.last_end = max(stats.last_end, float(row["t_end"]))
            report.compute_seconds += float(row["compute_s"])
            report.done += 1
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
