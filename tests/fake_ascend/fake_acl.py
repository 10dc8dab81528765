"""A simulated Ascend device for the ais_bench fakes: what ``aclruntime`` (ais_bench's C++ backend) does, in Python.

Each line of ais_bench (``t2023``, ``ait``, ``current`` beside this file) has its own ``ais_bench.infer.interface``
that mirrors that line's Python code and drives :class:`InferenceSession` here, the way the real one drives
``aclruntime.InferenceSession``. The behaviour follows the C++ sources read for this (cited per item below):

* Ascend/tools @ 9d6da90fd0d3e5d232676c7a4527f7d92ac70e5c (2023-06), ``ais-bench_workload/tool/ais_bench/backend/``
  ``base/module/ModelInfer/ModelInferenceProcessor.cpp`` and ``model_process.cpp``:
  - the dynamic-batch input ``ascend_mbatch_shape_data`` is left out of ``get_inputs()`` (``GetModelDescInfo`` skips
    ``dynamicIndex_``);
  - a dynamic-batch input's ``size``/``realsize`` is that of the largest gear until ``set_dynamic_batchsize(n)``
    sets ``realsize = size * n / maxbatch``; ``set_staticbatch()`` resets the mode but not ``realsize``;
  - ``set_dynamic_batchsize`` checks the gear (``CheckDynamicBatchSize``) and raises ``RuntimeError``; the gear list
    is only logged, never in the exception;
  - every input's byte size must equal its ``realsize`` (``CheckInVectorAndFillBaseTensor``);
  - each execution appends its time in ms to ``sumary().exec_time_list``;
  - a gear the OM lacks logs ``the dymBatch parameter is not correct`` and then the gears (``model_process.cpp``
    ``CheckDynamicBatchSize`` and ``GetDymBatchInfo``, two ``ERROR_LOG`` lines), a static OM logs ``the
    dynamic_batch_size parameter is not specified for model conversion``. The C++ writes them to the process's
    stdout, file descriptor 1, not through Python's ``sys.stdout`` (the later aclruntime's ``Log.h`` logs through
    spdlog's stdout sink, and its unit test reads that line from the captured stdout; [inf] the 2023 build's
    ``Log.h`` was not read). The fake writes those lines with ``os.write(1, ...)``, so only a redirection of fd 1
    itself silences them;
  - output memory is allocated once per execution at ``aclmdlGetOutputSizeByIndex`` (``CreateOutMemoryData``),
    which for a dynamic-batch OM is the size of the largest gear, and the output tensor is handed back with that
    whole length (``AddOutTensors``: ``GetOutTensorLen`` is the data buffer's size). [inf] how numpy sees it:
    :data:`DYNAMIC_BATCH_OUTPUTS` (default ``"largest_gear"``: shape ``(largest gear, ...)``; ``"flat"``: the 1-D
    whole buffer, the ``AddOutTensors`` fallback when the current shape is unknown; ``"batch"``: exactly the
    batch's samples). Past the batch's samples the buffer holds whatever the device memory held: here, bytes
    from a seeded random generator (NaN, inf and huge values among them, for floats).
* ``backend/python/src/PyInferenceSession/PyInferenceSession.cpp`` (same commit, and ``mjlovesz/sync-ait``
  ``ait/components/benchmark/backend/python/src/PyInferenceSession/PyInferenceSession.cpp``): ``Finalize`` unloads
  the model and then calls ``TensorContext::Finalize``; ``mjlovesz/sync-ait``
  ``ait/components/benchmark/backend/base/module/Tensor/TensorContext/TensorContext.cpp``: ``TensorContext`` is a
  process singleton that initialises ACL once in its constructor, so after ``Finalize`` (``DestroyDevices``) no
  later session in the process can work.
* ``ascend_context_per_call``: the 2023-06 build sets the ACL context only in ``Init``/``Destroy``/``Finalize``, so
  a call from another thread finds no context; later builds set it on every call (ASCEND.md §2.6).

What the sources do not say is marked [inf]: a dynamic-batch OM run in static mode (batch input never set) is an
execution error here; real ACL would read whatever the batch input holds.

The "OM" is a JSON file written by ``fake_atc.py`` from an ``atc`` command line: the ONNX graph it names is run by
ONNX Runtime on the CPU at the shapes the command fixed.
"""
from __future__ import annotations

import enum
import json
import os
import threading
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

DYNAMIC_BATCH_INPUT = "ascend_mbatch_shape_data"
DEVICE_COUNT = 2
#: how a dynamic-batch OM's outputs come back: "largest_gear" (the whole buffer, as the largest gear's batch),
#: "flat" (the whole buffer, 1-D) or "batch" (only the batch's samples); tests switch it with monkeypatch
DYNAMIC_BATCH_OUTPUTS = "largest_gear"


def tool_log(*lines: str) -> None:
    """What aclruntime's ``ERROR_LOG`` does: write to fd 1 from C++, past Python's ``sys.stdout``."""
    for line in lines:
        os.write(1, f"[ERROR] {line}\n".encode())


class dtype(enum.Enum):  # noqa: N801  aclruntime's pybind enum is named ``dtype`` (PyTensor.cpp)
    int8 = 2
    uint8 = 4
    int16 = 6
    int32 = 3
    int64 = 9
    float16 = 1
    float32 = 0
    float64 = 11


class Acl:
    """Process-wide ACL state: initialised once, finalised at most once (TensorContext.cpp)."""

    def __init__(self) -> None:
        self.initialised = False
        self.finalized = False
        self.loaded: Dict[int, str] = {}   # model id -> path
        self.contexts = threading.local()  # .device: this thread's current context (ACL's are per thread)
        self.next_id = 1
        self.finalize_calls = 0

    def init(self) -> None:
        if self.finalized:  # TensorContext is a singleton: ACL is never initialised again in this process
            raise RuntimeError("[ERROR] TensorContext::SetContext failed: ACL was finalized in this process "
                               "(aclrtSetDevice 100000)")
        self.initialised = True

    def set_context(self, device_id: int) -> None:
        self.init()
        if not 0 <= device_id < DEVICE_COUNT:
            raise RuntimeError(f"[ERROR] aclrtSetDevice failed: device {device_id} not found (ret=107001)")
        self.contexts.device = device_id

    def require_context(self, device_id: int) -> None:
        if self.finalized:
            raise RuntimeError("[ERROR] acl execute failed: ACL was finalized in this process")
        if getattr(self.contexts, "device", None) != device_id:
            raise RuntimeError("[ERROR] aclrtMemcpy failed ret=107002: the context is empty (no ACL context set "
                               "in this thread)")

    def finalize(self) -> None:
        self.finalize_calls += 1
        self.finalized = True
        self.loaded.clear()
        self.contexts = threading.local()


ACL = Acl()


def reset() -> None:
    """A fresh process, for the next test."""
    global ACL
    ACL.__init__()


class TensorDesc:
    """aclruntime's ``tensor_desc``: name, datatype (enum), format, shape (-1: dynamic), size, realsize (bytes)."""

    def __init__(self, name: str, datatype: dtype, shape: List[int], size: int, fmt: int) -> None:
        self.name, self.datatype, self.format, self.shape = name, datatype, fmt, list(shape)
        self.size = self.realsize = size


class Sumary:
    def __init__(self) -> None:
        self.exec_time_list: List[float] = []


_NP = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8,
       "tensor(int32)": np.int32, "tensor(int64)": np.int64}


class InferenceSession:
    """``aclruntime.InferenceSession(model_path, device_id, options)`` over a fake OM."""

    context_per_call = True  # set per line by its interface module

    def __init__(self, model_path: str, device_id: int, options=None) -> None:
        ACL.set_context(device_id)
        self.device_id = device_id
        om = json.loads(Path(model_path).read_text())
        import onnxruntime

        self._ort = onnxruntime.InferenceSession(om["onnx"], providers=["CPUExecutionProvider"])
        self.gears: Optional[List[int]] = om.get("dynamic_batch")
        shapes = {i["name"]: i["shape"] for i in om["inputs"]}
        self._in = []
        for node in self._ort.get_inputs():
            shape = shapes[node.name]
            np_type = _NP[node.type]
            n = max(self.gears) if self.gears else 1
            count = int(np.prod([n if d < 0 else d for d in shape]))
            self._in.append(TensorDesc(node.name, dtype[np.dtype(np_type).name], shape,
                                       count * np.dtype(np_type).itemsize, 0 if om["input_format"] == "NCHW" else 2))
        self._out = self._describe_outputs()
        self.dynamic_type = "static"
        self.batch: Optional[int] = None
        self.summary_info = Sumary()
        self.model_id = ACL.next_id
        ACL.next_id += 1
        ACL.loaded[self.model_id] = model_path
        self.freed = False

    def _describe_outputs(self) -> List[TensorDesc]:
        n = max(self.gears) if self.gears else 1
        feeds = {d.name: np.zeros([n if s < 0 else s for s in d.shape], np.dtype(d.datatype.name))
                 for d in self._in}
        outs = self._ort.run(None, feeds)
        descs = []
        for node, y in zip(self._ort.get_outputs(), outs):
            shape = list(y.shape)
            if self.gears:
                shape[0] = -1  # [inf] aclmdlGetOutputDims of a dynamic-batch OM
            descs.append(TensorDesc(node.name, dtype[y.dtype.name], shape, y.nbytes, 2))
        return descs

    # ---------------------------------------------------------------- description
    def get_inputs(self) -> List[TensorDesc]:
        return self._in

    def get_outputs(self) -> List[TensorDesc]:
        return self._out

    def options(self):
        return None

    # ---------------------------------------------------------------- modes
    def set_staticbatch(self) -> None:
        self.dynamic_type = "static"

    def set_dynamic_batchsize(self, n: int) -> None:
        if not self.gears:
            tool_log("the dynamic_batch_size parameter is not specified for model conversion")
            raise RuntimeError("[ERROR] the dynamic_batch_size parameter is not specified for model conversion")
        if n not in self.gears:  # CheckDynamicBatchSize, then GetDymBatchInfo: two log lines, the gears only there
            gears = "".join(f"[{g}]" for g in self.gears)
            tool_log("the dymBatch parameter is not correct",
                     f"model has dynamic batch size:{{{gears}}}, please set correct dynamic batch size")
            raise RuntimeError("acl execute failed")
        for d in self._in:
            if -1 in d.shape:
                d.realsize = d.size * n // max(self.gears)
        self.dynamic_type, self.batch = "batch", n

    def get_max_dym_batchsize(self) -> int:
        return max(self.gears) if self.gears else 0

    # ---------------------------------------------------------------- run
    def run(self, output_names: List[str], feeds: List[np.ndarray]) -> List[np.ndarray]:
        self._check_callable()
        if len(feeds) != len(self._in):
            raise RuntimeError("[WARN] intensors in:%d need:%d not match" % (len(feeds), len(self._in)))
        for d, x in zip(self._in, feeds):
            if x.nbytes != d.realsize:
                raise RuntimeError(f"[ERROR] Check i name:{d.name} in size:{x.nbytes} needsize:{d.realsize} not "
                                   "match")
        if self.gears and self.dynamic_type != "batch":
            raise RuntimeError("[ERROR] acl execute failed: the dynamic batch input was never set")  # [inf]
        n = self.batch if self.gears else None
        arrays = {}
        for d, x in zip(self._in, feeds):
            shape = [n if s < 0 else s for s in d.shape]
            arrays[d.name] = np.frombuffer(x.tobytes(), np.dtype(d.datatype.name)).reshape(shape)
        outs = self._ort.run(output_names, arrays)
        self.summary_info.exec_time_list.append(7.5 + len(self.summary_info.exec_time_list))
        if self.gears and DYNAMIC_BATCH_OUTPUTS != "batch":
            outs = [self._whole_buffer(y) for y in outs]
        return outs

    def _whole_buffer(self, y: np.ndarray) -> np.ndarray:
        """``y`` (the batch's samples) at the start of a buffer sized for the largest gear, the rest stale."""
        largest = max(self.gears)
        rng = np.random.default_rng([self.model_id, len(self.summary_info.exec_time_list)])
        nbytes = largest * (y.nbytes // y.shape[0])
        buffer = rng.integers(0, 256, size=nbytes, dtype=np.uint8).view(y.dtype)
        buffer[: y.size] = y.reshape(-1)
        if DYNAMIC_BATCH_OUTPUTS == "flat":
            return buffer
        return buffer.reshape(largest, *y.shape[1:])

    def sumary(self) -> Sumary:
        copy = Sumary()  # pybind's def_readwrite on a vector hands back a copy
        copy.exec_time_list = list(self.summary_info.exec_time_list)
        return copy

    def reset_sumaryinfo(self) -> None:
        self.summary_info = Sumary()

    # ---------------------------------------------------------------- life cycle
    def set_context(self) -> None:
        ACL.set_context(self.device_id)

    def free_resource(self) -> None:
        self.freed = True
        ACL.loaded.pop(self.model_id, None)

    def finalize_session(self) -> None:
        """The 2023-06 instance ``finalize``: unload, then ACL's process-wide teardown."""
        ACL.set_context(self.device_id)
        self.free_resource()
        ACL.finalize()

    def _check_callable(self) -> None:
        if self.freed:
            raise RuntimeError("[ERROR] the session's resources were freed")
        if self.context_per_call:
            ACL.set_context(self.device_id)  # SetContext in every call (2023-09 and later)
        ACL.require_context(self.device_id)

    def __del__(self) -> None:  # ~PyInferenceSession -> Destroy: unloads the model
        try:
            ACL.loaded.pop(self.model_id, None)
        except Exception:  # noqa: BLE001  interpreter shutdown
            pass
