"""ais_bench runner: an ATC-compiled ``.om`` on an Ascend NPU through ``ais_bench.infer.interface.InferSession``.

Any OM that ``pix2pixhd-deploy export`` makes runs here through the feed-dict contract: one float input
(``input_concat``), the ``label``/``inst`` integer maps, or the two stems; a float (N, 3, H, W) or uint8
(N, H, W, 3) output. Inputs, dtypes and shapes are read from the OM (``get_inputs()``/``get_outputs()``).

Three lines of ais_bench are in use and differ (ASCEND.md §2.6; the sources each was read from are named in
``tests/fake_ascend/*/ais_bench/infer/interface.py`` and docs/ascend.md). This runner works with all of them by
asking the installed one what it has, never by version number:

* per-execution NPU times: ``summary()``, else the 2023 ``sumary()``; reset after each read so the list (which
  aclruntime copies on every read) stays short;
* a dynamic-batch OM (``atc --dynamic_batch_size``): the batch comes from the feeds. Its gears are found once
  (``set_dynamic_batchsize`` on each candidate, the tool's log silenced) and a batch that is not one is refused
  with one line listing them. Builds whose ``infer`` has the ``dymbatch`` mode get ``mode='dymbatch'`` (their
  default static mode resets the batch); the 2023 build, which ignores modes, gets ``set_dynamic_batchsize(n)``;
* release: ``free_resource()`` on deactivate where it exists (2023: dropping the session unloads it); a static,
  process-wide ``InferSession.finalize()`` is called once, at interpreter exit, never per session (after it no
  session can be made in that process);
* threads: builds with ``summary`` (late 2023 on) set the ACL context in every call, so the calling thread is
  used (with ``set_context()`` where it exists). The 2023 build sets it only where the session was made, so the
  runner then makes, runs and frees the session on one thread of its own and hands every call to it;
* model paths: a symlink or a group-/other-writable OM is refused in one line before the tool sees it (the current
  tool refuses both with a ``ValueError``); where the installed tool checks paths, its suffix and character rules
  are checked first too.

``inference_time`` is the NPU execute time from the tool's own list, the figure ais_bench's throughput uses.
``ais_bench`` and ``aclruntime`` are not on PyPI (ASCEND.md §2.1); without them the runner says so in one line.
"""
from __future__ import annotations

import atexit
import contextlib
import inspect
import logging
import os
import re
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from ..devices import parse_device
from ..errors import PathLike, UserError
from .base import Runner, TensorSpec, format_shape, graph_input_format

log = logging.getLogger(__name__)

INSTALL_FIX = ("install aclruntime and ais_bench from Ascend's tools repository (https://github.com/Ascend/tools, "
               "ais-bench_workload/tool/ais_bench) on a machine with CANN: pip3 install -v "
               "'git+https://github.com/Ascend/tools.git#egg=aclruntime&subdirectory=ais-bench_workload/tool/"
               "ais_bench/backend' and the same with '#egg=ais_bench&subdirectory=ais-bench_workload/tool/ais_bench'")
#: the extra input ATC adds to a dynamic-batch OM; aclruntime leaves it out of get_inputs() and fills it itself
DYNAMIC_BATCH_INPUT = "ascend_mbatch_shape_data"
#: the current tool's path rule (path_security_check.PATH_WHITE_LIST_REGEX)
_PATH_CHARS = re.compile(r"[^_A-Za-z0-9/.-]")
_ACL_DTYPES = ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float16", "float32",
               "float64", "bool")


def _device_id(device: Optional[str]) -> int:
    """The NPU number of ``--device`` (:mod:`devices`): ``N``, ``npu:N``, ``ascend:N``; auto -> 0."""
    parsed = parse_device(device)
    if parsed.kind not in ("auto", "number", "npu"):
        raise UserError(f"the ais_bench runner takes an NPU number as --device, not {device!r}",
                        fix="pass --device 0 (see npu-smi info for the numbers)")
    return parsed.index or 0


def _dtype_name(datatype) -> str:
    """aclruntime's ``dtype`` enum (``dtype.float32``; older notes show strings) as a numpy dtype name."""
    name = getattr(datatype, "name", None) or str(datatype).rsplit(".", 1)[-1]
    name = name.lower().replace("dt_", "").replace("acl_", "")
    name = {"float": "float32", "half": "float16", "double": "float64"}.get(name, name)
    if name not in _ACL_DTYPES:
        raise UserError(f"the OM has a tensor of type {datatype!r}, which this runner does not know",
                        fix="compile the ONNX from pix2pixhd-deploy export")
    return name


def check_model_path(path: Path, *, tool_checks_paths: bool) -> None:
    """One line for an OM path the current ais_bench refuses (path_security_check.check_path_legality)."""
    if path.is_symlink():
        raise UserError("the OM is a symbolic link; ais_bench refuses links to models", path=path,
                        fix=f"pass the file itself: {os.path.realpath(path)}")
    if not path.is_file():
        raise UserError("the OM model does not exist", path=path,
                        fix="compile one with the atc commands that pix2pixhd-deploy export prints")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UserError(f"the OM is writable by its group or by others (mode {mode:o}); ais_bench refuses such a "
                        "model, since another user could replace it", path=path, fix=f"chmod go-w {path}")
    if tool_checks_paths:
        if path.suffix != ".om":
            raise UserError("the installed ais_bench takes only files ending in .om", path=path,
                            fix="rename it to end in .om")
        bad = sorted(set(_PATH_CHARS.findall(str(path.absolute()))))
        if bad:
            raise UserError(f"the installed ais_bench refuses paths with the characters {''.join(bad)!r}", path=path,
                            fix="move or rename it so the full path holds only A-Z a-z 0-9 _ - / .")


class _ProcessFinalizer:
    """Calls a static, process-wide ``InferSession.finalize()`` once, at interpreter exit (as benchmark_process.py
    does at the end of its main): finalising earlier would break every later session of the process."""

    def __init__(self) -> None:
        self.pending: List[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._registered = False

    def add(self, cls) -> None:
        if not isinstance(inspect.getattr_static(cls, "finalize", None), staticmethod):
            return  # the 2023 build: an instance method that unloads that session; ACL ends with the process
        with self._lock:
            if cls.finalize in self.pending:
                return
            self.pending.append(cls.finalize)
            if not self._registered:
                atexit.register(self.run)
                self._registered = True

    def run(self) -> None:
        with self._lock:
            pending, self.pending = self.pending, []
        for finalize in pending:
            try:
                finalize()
            except Exception as exc:  # noqa: BLE001  at exit, a teardown failure is only worth a log line
                log.warning("ais_bench finalize at exit failed: %s", exc)


FINALIZER = _ProcessFinalizer()


@contextlib.contextmanager
def _quiet_fds():
    """Silence the C++ log lines (printf to fds 1 and 2) while gears are probed; each miss logs two lines."""
    saved = []
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        for fd in (1, 2):
            saved.append((fd, os.dup(fd)))
            os.dup2(devnull, fd)
        os.close(devnull)
    except OSError:
        pass
    try:
        yield
    finally:
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)


class AisBenchRunner(Runner):
    """Runs an ``.om`` with ais_bench's ``InferSession`` on one NPU.

    ``dym_batch``: for a dynamic-batch OM, the gear to run at (ais_bench's ``--dymBatch``): the runner then declares
    that static batch, and callers split and pad to it. Without it the OM takes any of its gears.
    """

    name = "ais_bench"

    @classmethod
    def from_options(cls, model: PathLike, *, device: Optional[str] = None, fp16: bool = False,
                     height: Optional[int] = None, width: Optional[int] = None, **options) -> "AisBenchRunner":
        """The runner for :func:`~.make_runner`'s options (ATC fixed the OM's precision)."""
        if fp16:
            raise UserError("--fp16 does not apply to an OM: ATC fixed its precision (--precision_mode, by default "
                            "force_fp16)", fix="drop --fp16")
        return cls(model, device=device, dym_batch=options.get("dym_batch"))

    def __init__(self, model: PathLike, *, device: Optional[str] = None, dym_batch: Optional[int] = None):
        super().__init__()
        self.model = Path(model)
        self.device = device
        self.dym_batch = dym_batch
        self.session = None
        self.gears: Optional[List[int]] = None
        self.thread_bound = False
        self._worker: Optional[ThreadPoolExecutor] = None
        self._lock = threading.Lock()  # one call at a time: the session's mode and its exec-time list are shared
        self._set_batch: Optional[int] = None

    # ------------------------------------------------------------------ contract
    def activate_impl(self) -> None:
        interface = self._import_interface()
        cls = interface.InferSession
        check_model_path(self.model, tool_checks_paths=hasattr(interface, "check_model_path_legality"))
        device_id = _device_id(self.device)
        # the late-2023 builds (summary, SetContext in every call) take calls from any thread; the 2023 one does not
        self.thread_bound = not hasattr(cls, "summary")
        if self.thread_bound:
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ais_bench")
        try:
            self._call(self._open, cls, device_id)
        except BaseException:
            self._stop_worker()
            raise
        FINALIZER.add(cls)
        log.info("ais_bench: %s on NPU %d: %s -> %s%s", self.model, device_id,
                 ", ".join(s.describe() for s in self._inputs), self._output.describe(),
                 f", gears {self.gears}" if self.gears else "")

    def deactivate_impl(self) -> None:
        try:
            if self.session is not None:
                self._call(self._close)
        finally:
            self._stop_worker()

    def input_specs_impl(self) -> List[TensorSpec]:
        return self._inputs

    def output_spec_impl(self) -> TensorSpec:
        return self._output

    def infer_impl(self, feeds: Dict[str, np.ndarray]) -> np.ndarray:
        arrays = [feeds[s.name] for s in self._inputs]
        batch = arrays[0].shape[0]
        if self.gears and batch not in self.gears:
            raise UserError(f"the OM runs batches of {', '.join(map(str, self.gears))} (its --dynamic_batch_size "
                            f"gears), not {batch}", path=self.model,
                            fix=f"use a batch size from {self.gears}, or compile the OM with that gear")
        out, ms = self._call(self._run, arrays, batch)
        if ms is not None:
            self._compute_time = ms / 1000.0
        return self._output_array(out, batch)

    def describe(self) -> str:
        gear = f", dymBatch {self.dym_batch}" if self.dym_batch else (f", gears {self.gears}" if self.gears else "")
        return f"ais_bench on NPU {self.device if self.device is not None else 0}{gear}"

    def stem_weights(self):
        """A stems OM's stem weights: ``X.om.stems.npz`` beside it, else the ``.onnx.stems.npz`` export wrote
        beside the graph the OM was compiled from (``g_bs4.om`` / ``g_dynbs.om`` from ``g.onnx``, atc's names)."""
        from ..model.stems import StemWeights, sidecar_path

        own = sidecar_path(self.model)
        graph = self.model.with_name(re.sub(r"_(bs\d+|dynbs)$", "", self.model.stem) + ".onnx")
        for candidate in (own, sidecar_path(graph)):
            if candidate.is_file():
                return StemWeights.load(candidate)
        raise UserError(f"a stems OM needs the stem weights export wrote beside its graph, and neither {own.name} "
                        f"nor {sidecar_path(graph).name} is here", path=self.model,
                        fix=f"copy the graph's .onnx.stems.npz beside the OM as {own.name}")

    # ------------------------------------------------------------------ on the session's thread
    def _open(self, cls, device_id: int) -> None:
        try:
            session = cls(device_id, str(self.model))
        except (RuntimeError, ValueError, TypeError, OSError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:240]
            raise UserError(f"ais_bench could not load the OM on NPU {device_id} ({first})", path=self.model,
                            fix="check `npu-smi info` for the device, source /usr/local/Ascend/ascend-toolkit/"
                                "set_env.sh, and that the OM was built for this chip (--soc_version)") from exc
        self.session = session
        try:
            self._describe_io(session)
        except BaseException:
            self._close()
            raise

    def _describe_io(self, session) -> None:
        descs = [d for d in session.get_inputs() if d.name != DYNAMIC_BATCH_INPUT]
        outputs = session.get_outputs()
        if not descs or not outputs:
            raise UserError(f"the OM has {len(descs)} inputs and {len(outputs)} outputs", path=self.model,
                            fix="compile the ONNX from pix2pixhd-deploy export")
        dynamic = [d for d in descs if any(int(x) < 0 for x in d.shape)]
        if any(int(x) < 0 for d in dynamic for x in list(d.shape)[1:]):
            raise UserError("the OM has a dynamic image size; this runner takes OMs with a fixed height and width",
                            path=self.model, fix="compile it with a fixed --input_shape (height and width)")
        batch = self._batch_setting(session, descs) if dynamic else int(descs[0].shape[0])
        self._inputs = [TensorSpec(d.name, (batch, *(int(x) for x in list(d.shape)[1:])), _dtype_name(d.datatype))
                        for d in descs]
        out = outputs[0]
        self._output = TensorSpec(out.name, (batch, *(int(x) for x in list(out.shape)[1:])),
                                  _dtype_name(out.datatype))
        graph_input_format(self._inputs)  # one clear error for an OM of no known form
        if self._output.dtype not in ("float32", "float16", "uint8") or len(self._output.shape) != 4:
            raise UserError(f"the OM's output {self._output.describe()} is neither float (N, 3, H, W) nor uint8 "
                            "(N, H, W, 3)", path=self.model, fix="compile the ONNX from pix2pixhd-deploy export")

    def _batch_setting(self, session, descs) -> Optional[int]:
        """The declared batch of a dynamic-batch OM: --dymBatch when given (checked), else None (any gear)."""
        self.gears = self._probe_gears(session, descs)
        if self.dym_batch is None:
            return None
        if self.dym_batch not in self.gears:
            raise UserError(f"--dymBatch {self.dym_batch} is not a gear of the OM (it has "
                            f"{', '.join(map(str, self.gears))})", path=self.model,
                            fix="pass one of them, or compile the OM with that gear (atc --dynamic_batch_size)")
        return int(self.dym_batch)

    def _probe_gears(self, session, descs) -> List[int]:
        """The OM's gears: the tool has no call that lists them (its CheckDynamicBatchSize only logs them)."""
        largest = int(session.get_max_dym_batchsize()) if hasattr(session, "get_max_dym_batchsize") else 0
        if largest <= 0:  # the 2023 build: a dynamic input's size is that of the largest gear
            d = descs[0]
            per_sample = int(np.prod([int(x) for x in list(d.shape)[1:]])) * np.dtype(_dtype_name(d.datatype)).itemsize
            largest = int(d.size) // max(per_sample, 1)
        gears = []
        with _quiet_fds():
            for n in range(1, min(largest, 2048) + 1):
                try:
                    session.set_dynamic_batchsize(n)
                except (RuntimeError, ValueError):
                    continue
                gears.append(n)
        if not gears:
            raise UserError("the OM has a dynamic batch axis but takes none of the batch sizes 1.."
                            f"{largest}", path=self.model, fix="compile it with atc --dynamic_batch_size")
        self._set_batch = gears[-1]
        return gears

    def _run(self, arrays: List[np.ndarray], batch: int):
        session = self.session
        if not self.thread_bound and hasattr(session, "set_context"):
            session.set_context()  # this thread's device and ACL context (the current build)
        if self.gears and self.thread_bound:  # the 2023 build ignores infer's mode: set the gear itself
            if self._set_batch != batch:
                session.set_dynamic_batchsize(batch)
                self._set_batch = batch
            outputs = session.infer(arrays)
        elif self.gears:
            outputs = session.infer(arrays, mode="dymbatch")
        else:
            outputs = session.infer(arrays)
        return outputs[0], self._last_exec_ms(session)

    @staticmethod
    def _last_exec_ms(session) -> Optional[float]:
        summary = getattr(session, "summary", None) or getattr(session, "sumary", None)
        if summary is None:
            return None
        times = list(summary().exec_time_list)
        reset = getattr(session, "reset_summaryinfo", None) or getattr(session, "reset_sumaryinfo", None)
        if reset is not None:
            reset()
        return float(times[-1]) if times else None

    def _close(self) -> None:
        session, self.session = self.session, None
        if session is not None and hasattr(session, "free_resource"):
            session.free_resource()
        del session  # the 2023 build unloads the model in the session's destructor (on this thread)

    # ------------------------------------------------------------------ helpers
    def _call(self, fn, *args):
        """``fn(*args)`` on the session's own thread when the build needs one, else here."""
        if self._worker is None:
            with self._lock:
                return fn(*args)
        return self._worker.submit(fn, *args).result()

    def _stop_worker(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.shutdown(wait=True)

    def _import_interface(self):
        try:
            from ais_bench.infer import interface
        except ImportError as exc:
            raise UserError(f"ais_bench is not installed ({exc.name or exc}), and running an OM needs it",
                            path=self.model, fix=INSTALL_FIX) from exc
        return interface

    def _output_array(self, out, batch: int) -> np.ndarray:
        """The output in the declared shape; a buffer sized for the largest gear is cut to the batch."""
        arr = np.asarray(out)
        rest = self._output.shape[1:]
        per_sample = int(np.prod(rest))
        if arr.size == batch * per_sample:
            return arr.reshape(batch, *rest)
        if arr.size > batch * per_sample and arr.size % per_sample == 0:
            return arr.reshape(-1)[: batch * per_sample].reshape(batch, *rest)
        raise UserError(f"the OM returned {arr.size} values for a batch of {batch}, which is not "
                        f"{format_shape((batch, *rest))}", path=self.model,
                        fix="compile the ONNX from pix2pixhd-deploy export without changing its output")


def finalize_at_exit() -> None:
    """Run the pending process-wide finalize now (what the interpreter does at exit); for tests and embedders."""
    FINALIZER.run()


__all__ = ["AisBenchRunner", "check_model_path", "finalize_at_exit", "DYNAMIC_BATCH_INPUT", "INSTALL_FIX"]
