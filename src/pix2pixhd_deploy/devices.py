"""``--device``: one parser for every command and runner, and one meaning for each form.

========================  ==========================================================================================
form                      meaning
========================  ==========================================================================================
omitted, ``auto``         the runtime's default: torch takes CUDA GPU 0 when it sees one, else the CPU; ONNX Runtime
                          and OpenVINO the CPU; ais_bench NPU 0
``cpu``                   the CPU
``cuda``, ``cuda:N``      NVIDIA GPU N (0 when left out)
``npu``, ``npu:N``        Ascend NPU N (``ascend:N`` too)
``gpu``, ``gpu.N``        OpenVINO's (Intel) GPU N
``N`` (a bare number)     ais_bench's ``--device 0``: accelerator N of the runtime chosen: CUDA GPU N for torch and
                          ONNX Runtime's cuda/tensorrt providers, NPU N for ais_bench and the cann provider. Where the
                          runtime computes on the CPU (torch on a machine without a CUDA GPU, ONNX Runtime's cpu
                          provider, OpenVINO) the number is ignored and the CPU runs the model (logged by torch).
``N,M,...``               ``infer`` only: one process per device (ais_bench's layout)
========================  ==========================================================================================

Every runner and command turns the text into a :class:`Device` with :func:`parse_device`; the runners then only
decide what a kind means for them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional

from .errors import UserError

#: what --device takes, in words (help texts and error fixes)
DEVICE_FORMS = "cpu, cuda[:N], npu[:N], gpu[.N] (OpenVINO) or a bare number N (the runtime's accelerator N)"

_KINDS = {"auto": "auto", "cpu": "cpu", "cuda": "cuda", "npu": "npu", "ascend": "npu", "gpu": "gpu"}
_FORM = re.compile(r"^(?:(?P<number>\d+)|(?P<kind>[a-z]+)(?:[:.](?P<index>\d+))?)$")


@dataclass(frozen=True)
class Device:
    """A parsed ``--device``: ``kind`` is ``auto``, ``cpu``, ``cuda``, ``npu``, ``gpu`` or ``number`` (a bare number:
    the runtime's accelerator ``index``); ``index`` is None where the text gave none."""

    kind: str
    index: Optional[int] = None


def parse_device(text: Optional[str]) -> Device:
    """The one parser of a device string (see the module docstring); a UserError names a form it does not know."""
    if isinstance(text, Device):
        return text
    clean = "auto" if text is None else str(text).strip().lower()
    found = _FORM.match(clean or "auto")
    if found is None or (found["kind"] and found["kind"] not in _KINDS):
        raise UserError(f"unknown device {text!r}", fix=f"use {DEVICE_FORMS}")
    if found["number"] is not None:
        return Device("number", int(found["number"]))
    index = found["index"]
    return Device(_KINDS[found["kind"]], None if index is None else int(index))


def parse_device_list(text: Optional[str]) -> List[Optional[str]]:
    """``infer --device``: one device (any form), or a comma-separated list of distinct device numbers (ais_bench
    starts one process per device)."""
    if text is None or "," not in str(text):
        if text is not None:
            parse_device(text)  # an unknown form is told before any work
        return [text]
    devices = [d.strip() for d in str(text).split(",") if d.strip()]
    if len(set(devices)) != len(devices) or not all(d.isdigit() for d in devices):
        raise UserError(f"--device {text!r}: a list must be distinct device numbers", fix="pass e.g. --device 0,1")
    return devices
