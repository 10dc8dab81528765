"""Open a model for label maps: the one place where the engine choice, the runner and the adapter are put
together, for ``run``, ``serve``, the Ray engines and the public Python API (:class:`Model`).

In:  a checkpoint (``latest_net_G.pth`` or its folder) or a model file (.onnx, .om), and how to run it
     (:class:`EngineSettings`: backend, device, precision, encoding, cache).
Out: an activated runner (:func:`open_runner`), or a :class:`Model`: label maps (arrays or files) in, RGB uint8
     pictures out, exactly as ``run`` computes them.
"""
from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..backends import BACKENDS as REGISTRY
from ..data.dataset import cityscapes_pairs, find_pairs, resolve_instances
from ..data.labelmaps import MapOptions, Pair, crop_to, fit_maps, load_maps, read_instance_ids, read_label_ids
from ..data.labels import LABEL_NC
from ..data.synthetic import make_scene
from ..errors import PathLike, UserError
from ..model import forms
from ..provenance import model_file
from . import backend_for, check_options, make_runner
from .adapter import make_adapter
from .choose import Choice, choose, graph_for_key

log = logging.getLogger(__name__)

MapInput = Union[np.ndarray, PathLike, None]


@dataclass
class EngineSettings:
    """How a model is run: what ``run``, ``serve`` and the API share (``run``'s own settings add to it)."""

    model: str
    backend: str
    device: Optional[str] = None
    fp16: bool = False
    save_raw: bool = False
    label_nc: int = LABEL_NC
    use_instance: bool = True
    streams: int = 1              # batches computed at once (each runtime then uses cores / streams threads)
    fast_convs: bool = False      # torch: fastconv's Winograd and row-sum convolutions
    checkpoint: Optional[str] = None    # the checkpoint a cached graph was built from (:mod:`choose`)
    cache_dir: Optional[str] = None     # --cache-dir (None: the default model cache)
    compiled_dir: Optional[str] = None  # where the runtime keeps its compiled form of the graph
    graph_key: Optional[Dict[str, object]] = None  # the cache key of that graph (a Ray node builds its own)
    bf16: bool = False            # torch in bfloat16 (--precision bf16; the norms and the last layer in fp32)
    profile: bool = False         # the runtime's per-layer counters where it has them (run --profile)

    @classmethod
    def from_choice(cls, choice: Choice, **fields):
        """The settings to run what :func:`choose.choose` picked (``fields``: the other settings)."""
        return cls(model=choice.model, backend=choice.backend, checkpoint=choice.checkpoint,
                   compiled_dir=choice.compiled_dir, graph_key=choice.cache["key"] if choice.cache else None,
                   **fields)

    def device_kind(self) -> str:
        """``cpu``, ``cuda``, ``npu``...: the kind of device the pictures are computed on (the backend's entry
        says what a bare device number means for it)."""
        return REGISTRY[self.backend].device_kind(self.device)


def runner_for_run(model: PathLike, *, backend: Optional[str] = None, device: Optional[str] = None,
                   fp16: bool = False, streams: int = 1, threads: Optional[int] = None, label_nc: int = LABEL_NC,
                   use_instance: bool = True, save_raw: bool = False, bf16: bool = False, profile: bool = False,
                   **options):
    """The runner ``run`` uses, with the CPU's cores shared among ``streams`` concurrent batches, or limited to
    ``threads`` (a Ray actor's CPUs). A torch checkpoint runs in the maps form with uint8 output (encoding and
    ``tensor2im`` on the device; float output with ``save_raw``), like the graphs export makes for ``run``.

    In-process, two single-threaded ONNX Runtime streams ran 8% faster than one two-threaded one on a 2-core CPU;
    end to end (benchmarks/run_vs_upstream.py) they did not help there, so the default is one stream.
    """
    name = backend_for(model, backend)
    if threads is None and streams > 1:
        threads = max(1, (os.cpu_count() or 1) // streams)
    takes = REGISTRY[name].options
    if "intra_op_threads" in takes and threads and not options.get("intra_op_threads"):
        options["intra_op_threads"] = threads
    if "compiled_dir" not in takes:
        options.pop("compiled_dir", None)
    if profile and "profile" in takes:  # elsewhere run --profile gives its timeline without layers
        options["profile"] = True
    if name == "torch":
        if threads:
            import torch

            torch.set_num_threads(threads)
        options.update(input_format=forms.MAPS, output_format=forms.FLOAT if save_raw else forms.UINT8,
                       label_nc=label_nc, use_instance=use_instance)
    if bf16:
        options["precision"] = "bf16"  # a torch option: another backend refuses it by name (--precision bf16)
    return make_runner(model, backend=name, device=device, fp16=fp16, **options)



def runner_for_settings(settings: "EngineSettings", *, threads: Optional[int] = None):
    """:func:`runner_for_run` for a run's settings (the local engine and each Ray actor build theirs here)."""
    return runner_for_run(settings.model, backend=settings.backend, device=settings.device, fp16=settings.fp16,
                          streams=settings.streams, threads=threads, label_nc=settings.label_nc,
                          use_instance=settings.use_instance, save_raw=settings.save_raw,
                          fast_convs=settings.fast_convs, compiled_dir=settings.compiled_dir, bf16=settings.bf16,
                          profile=settings.profile)



def open_runner(settings: "EngineSettings", choice=None, *, threads: Optional[int] = None):
    """The run's runner, activated. A graph from the model cache that does not load (damaged where its size did
    not show it) is rebuilt once, with one line saying so; ``settings`` then names the new graph."""
    runner = runner_for_settings(settings, threads=threads)
    try:
        return runner.activate()
    except UserError as exc:
        if choice is None or not choice.cache:
            raise
        new = graph_for_key(choice.checkpoint, choice.cache["key"], cache_dir=settings.cache_dir,
                            rebuild_reason=f"it did not load ({exc.problem})")
        settings.model, settings.compiled_dir = new.model, new.compiled_dir
        return runner_for_settings(settings, threads=threads).activate()


# ------------------------------------------------------------------------------------------------ the model

Size = Tuple[int, int]
CITYSCAPES_SIZE: Size = (1024, 2048)


@dataclass
class ModelOptions:
    """How a :class:`Model` is opened: the ``run`` flags that decide the engine, and the sizes to prepare."""

    model: str
    backend: Optional[str] = None
    device: Optional[str] = None
    fp16: bool = False
    sizes: Sequence[Size] = (CITYSCAPES_SIZE,)
    label_nc: int = LABEL_NC
    use_instance: bool = True
    cache_dir: Optional[str] = None
    threads: Optional[int] = None   # runtime threads (a Ray replica's CPUs); None: all cores
    fast_convs: bool = False
    bf16: bool = False
    #: a map of a size with no prepared graph gets its own graph from the model cache, built there the first time
    #: as ``run`` builds it (the API); False: torch runs it from the checkpoint (``serve`` never builds on a request)
    build_other_sizes: bool = False

    def check_sizes(self) -> None:
        """The sizes to prepare, each one the generator takes (told before anything loads)."""
        for h, w in self.sizes:
            if h <= 0 or w <= 0 or h % 32 or w % 32:
                raise UserError(f"the size {h},{w} (--size) is not one the generator takes",
                                fix="give HEIGHT,WIDTH, each a positive multiple of 32")


@dataclass
class _Loaded:
    runner: object
    engine: object
    backend: str
    reason: str
    checkpoint: Optional[str]  # the checkpoint a cached graph was made from (None: a --model file, or torch)


class Model:
    """A model opened for label maps, with ``run``'s engine choice and model cache: maps in, pictures out.

    Sizes. The fastest CPU path (a graph from the model cache) has one static size each, so for a checkpoint on a
    CPU each prepared size gets its cached graph (built once into the cache, as ``run`` builds it, and loaded here):
    a map of that size gives exactly ``run``'s picture for it. Any other size runs on torch from the same checkpoint
    (``run --backend torch``'s pixels), loaded on first use; graphs are never built for a size met later (a build
    takes minutes). On a GPU, with ``backend="torch"``, or with a model file, one runner serves every size the model
    takes (a static graph refuses other sizes with one clear error).

    ``serve`` computes its batches with :meth:`compute`; the Python API (:func:`pix2pixhd_deploy.load`) calls the
    model on one map (:meth:`__call__`) or streams a folder (:meth:`map_folder`).
    """

    def __init__(self, options: ModelOptions):
        self.options = options
        self.engines: Dict[Optional[Size], _Loaded] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, options: ModelOptions) -> "Model":
        """Choose and open the engine for each prepared size (building cached graphs as ``run`` does)."""
        options.check_sizes()
        model_file(options.model)  # a missing or wrong path is told now, not at the first map
        model = cls(options)
        try:
            for size in dict.fromkeys(tuple(s) for s in options.sizes):
                model._open(size)
                if None in model.engines:  # one runner takes every size: nothing more to prepare
                    break
        except BaseException:
            model.close()
            raise
        return model

    # ------------------------------------------------------------------ opening
    def _open(self, size: Size, backend: Optional[str] = None) -> _Loaded:
        o = self.options
        choice = choose(o.model, backend=backend or o.backend, device=o.device, fp16=o.fp16, label_nc=o.label_nc,
                        use_instance=o.use_instance, sizes={size}, cache_dir=o.cache_dir, fast_convs=o.fast_convs,
                        bf16=o.bf16)
        check_options(choice.backend, {"fast_convs": o.fast_convs})
        settings = EngineSettings.from_choice(choice, device=o.device, fp16=o.fp16, label_nc=o.label_nc,
                                              use_instance=o.use_instance, cache_dir=o.cache_dir,
                                              fast_convs=o.fast_convs, bf16=o.bf16)
        runner = open_runner(settings, choice, threads=o.threads)
        engine = make_adapter(runner, o.label_nc, o.use_instance, threads=o.threads)
        loaded = _Loaded(runner, engine, choice.backend, choice.reason, choice.checkpoint)
        fixed = choice.cache is not None or engine.size is not None
        self.engines[tuple(engine.size or size) if fixed else None] = loaded
        log.info("%s", choice.reason)
        return loaded

    def engine_for(self, size: Size) -> _Loaded:
        """The engine for maps of ``size`` (H, W as the network sees them), opened once on first use."""
        with self._lock:
            found = self.engines.get(size) or self.engines.get(None)
            if found is not None:
                return found
            if self.options.build_other_sizes or not self.engines:
                return self._open(size)
            first = next(iter(self.engines.values()))
            if first.checkpoint is not None:  # a graph cached from a checkpoint: torch takes the other sizes
                log.info("%dx%d has no prepared graph, so torch runs it from the checkpoint (loaded once; prepare "
                         "its graph at start-up with the size %d,%d)", size[1], size[0], *size)
                return self._open(size, backend="torch")
            return first  # a model file: its adapter names the sizes it takes

    # ------------------------------------------------------------------ the work
    def compute(self, labels: np.ndarray, insts: Optional[np.ndarray]) -> Tuple[np.ndarray, float, str]:
        """(pictures (N, H, W, 3) uint8, compute seconds, backend) for one batch of same-size fitted maps."""
        loaded = self.engine_for(tuple(labels.shape[1:3]))
        pictures, _ = loaded.engine(labels, insts if self.options.use_instance else None)
        return pictures, float(loaded.engine.inference_time), loaded.backend

    def map_options(self, instances: Optional[str] = None, fit: str = "resize", *,
                    has_instance: bool = True) -> MapOptions:
        """How maps are read for this model (:func:`map_options_for`)."""
        return map_options_for(self.options.label_nc, self.options.use_instance, instances, fit,
                               has_instance=has_instance)

    def __call__(self, label: MapInput, instance: MapInput = None, *, instances: Optional[str] = None,
                 fit: str = "resize") -> np.ndarray:
        """One picture, (H, W, 3) uint8 RGB, for a label map given as a file path or (H, W) ids, and its instance
        map (a path, (H, W) ids, or None: derived from the label map, or none for a model without them).
        ``fit="pad"`` keeps the map's own size; ``"resize"`` (upstream's) rounds it to a multiple of 32."""
        options = self.map_options(instances, fit, has_instance=instance is not None)
        maps = _read(label, instance, options)
        pictures, _, _ = self.compute(maps.label[None], None if maps.inst is None else maps.inst[None])
        return crop_to(pictures[0], maps.size) if fit == "pad" else pictures[0]

    def map_folder(self, folder: PathLike, *, instances: Optional[str] = None, fit: str = "resize"
                   ) -> Iterator[Tuple[str, np.ndarray]]:
        """(name, picture) for each label map of a Cityscapes split or a data root (``test_label/`` +
        ``test_inst/``), sorted as ``run`` sorts them; the next map is read while one is computed."""
        pairs = _pairs_in(folder, instances, self.options.use_instance)
        options = self.map_options(instances, fit, has_instance=all(p.instance is not None for p in pairs))
        ahead: "queue.Queue[Tuple[Pair, object]]" = queue.Queue(maxsize=2)
        stop = threading.Event()

        def read_all() -> None:
            for pair in pairs:
                if stop.is_set():
                    return
                try:
                    ahead.put((pair, load_maps(pair, options)))
                except Exception as exc:  # noqa: BLE001 - handed to the caller's thread, raised there
                    ahead.put((pair, exc))
                    return

        reader = threading.Thread(target=read_all, name="map-folder-read", daemon=True)
        reader.start()
        try:
            for _ in pairs:
                pair, maps = ahead.get()
                if isinstance(maps, Exception):
                    raise maps
                pictures, _, _ = self.compute(maps.label[None], None if maps.inst is None else maps.inst[None])
                yield pair.name, crop_to(pictures[0], maps.size) if fit == "pad" else pictures[0]
        finally:
            stop.set()
            while reader.is_alive():  # let a reader blocked on a full queue finish
                with contextlib.suppress(queue.Empty):
                    ahead.get_nowait()
                reader.join(0.05)

    def warm_up(self) -> Dict[Size, float]:
        """One street scene of each prepared size computed now, through :meth:`compute`: what a runtime does only
        on its first inference (its workspace allocated and first touched, kernels chosen, weights paged in) is
        paid here rather than by the first request. Returns the seconds each took."""
        sizes = self.prepared_sizes or [tuple(s) for s in self.options.sizes][:1]
        took: Dict[Size, float] = {}
        for h, w in sizes:
            label, inst = make_scene(h, w, seed=0)
            start = time.perf_counter()
            self.compute(label[None], inst[None].astype(np.int32) if self.options.use_instance else None)
            took[(h, w)] = time.perf_counter() - start
        return took

    def describe(self) -> Dict[str, object]:
        return {"engines": [{"size": list(k) if k else "any", "backend": v.backend, "reason": v.reason}
                            for k, v in self.engines.items()],
                "label_nc": self.options.label_nc, "use_instance": self.options.use_instance}

    @property
    def prepared_sizes(self) -> List[Size]:
        return [k for k in self.engines if k is not None]

    def close(self) -> None:
        for loaded in self.engines.values():
            try:
                loaded.runner.deactivate()
            except Exception:  # noqa: BLE001 - closing is best effort; the process ends either way
                log.debug("a runner did not close cleanly", exc_info=True)
        self.engines.clear()

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def map_options_for(label_nc: int, use_instance: bool, instances: Optional[str] = None, fit: Optional[str] = None,
                    *, has_instance: bool = True) -> MapOptions:
    """How a request's maps are read: ``instances`` defaults to the given instance map when there is one, else
    instances derived from the label map; a model without instance maps takes none, and a model with them refuses
    ``none`` (before a map of it could join a batch of maps that have them)."""
    if not use_instance:
        if instances not in (None, "none"):
            raise UserError(f"instances={instances} was asked for, and this model takes no instance maps",
                            fix="leave instances out (or pass instances=none)")
        instances = "none"
    elif instances == "none":
        raise UserError("instances=none was asked for, and this model takes instance maps",
                        fix="upload the instance map (-F instance=@map_instanceIds.png), or pass instances=labels "
                            "to derive it from the label map")
    return MapOptions(label_nc=label_nc, instances=instances or ("files" if has_instance else "labels"),
                      fit=fit or "resize")


def _read(label: MapInput, instance: MapInput, options: MapOptions):
    """A label map and its instance map, each a path or an array, read and fitted as ``run`` reads files."""
    if label is None:
        raise UserError("no label map was given", fix="pass a label map: a file path or (H, W) integer ids")
    if not isinstance(label, np.ndarray) and not isinstance(instance, np.ndarray):
        pair = Pair(key="", label=Path(label), instance=None if instance is None else Path(instance))
        return load_maps(pair, options)
    ids = label if isinstance(label, np.ndarray) else read_label_ids(label, label_nc=options.label_nc)
    inst = instance
    if instance is not None and not isinstance(instance, np.ndarray):
        inst = read_instance_ids(instance) if options.instances == "files" else None
    where = "label map" if isinstance(label, np.ndarray) else label
    return fit_maps(ids, inst if options.instances == "files" else None, options, path=where)


def _pairs_in(folder: PathLike, instances: Optional[str], use_instance: bool) -> List[Pair]:
    """The pairs of a data root (``test_label/``) or else a Cityscapes split, as ``run`` finds them."""
    folder = Path(folder)
    want = "none" if not use_instance else instances
    if (folder / "test_label").is_dir():
        return find_pairs(folder, instances=resolve_instances(folder, want))
    return cityscapes_pairs(folder, instances=want or "files")


def load(model: PathLike, *, size: Union[None, Size, Sequence[Size]] = None, backend: Optional[str] = None,
         device: Optional[str] = None, fp16: bool = False, fast_convs: bool = False, label_nc: int = LABEL_NC,
         use_instance: bool = True, cache_dir: Optional[PathLike] = None, threads: Optional[int] = None) -> Model:
    """Open ``model`` (a checkpoint, its folder, an .onnx or .om) with the same engine choice and model cache as
    ``run``: on a CPU, the CPU graph for each size of map it meets, built into the cache the first time (a minute or
    two at 2048x1024) and loaded from there after. ``size`` (H, W), or several: the sizes to open now rather than
    at their first map. Raises :class:`~pix2pixhd_deploy.errors.UserError` naming the file, the problem and the
    fix."""
    if size is None:
        sizes: List[Size] = []
    elif len(size) == 2 and all(isinstance(v, int) for v in size):
        sizes = [tuple(size)]  # type: ignore[list-item]
    else:
        sizes = [tuple(s) for s in size]  # type: ignore[union-attr]
    return Model.load(ModelOptions(model=str(model), backend=backend, device=device, fp16=fp16, sizes=sizes,
                                   label_nc=label_nc, use_instance=use_instance, fast_convs=fast_convs,
                                   cache_dir=None if cache_dir is None else str(cache_dir), threads=threads,
                                   build_other_sizes=True))
