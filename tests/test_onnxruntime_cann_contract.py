"""ONNX Runtime's CANN provider through the runner contract, where ``onnxruntime-cann`` is not installed.

The stand-in is ONNX Runtime itself with the provider list it reports widened to ``CANNExecutionProvider``: the
session records the providers and options it was given (what the real provider would receive) and computes on
the CPU. The real provider runs in ``test_runners.py`` (case ``onnxruntime-cann``), skipped with its reason
where the package or an NPU is missing. Options follow onnxruntime.ai's CANN-ExecutionProvider page.
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import rng_input

from pix2pixhd_deploy.errors import UserError
from pix2pixhd_deploy.runners import OnnxRuntimeRunner, TorchRunner, make_runner

H, W = 64, 128


@pytest.fixture
def cann_onnxruntime(monkeypatch):
    import onnxruntime

    seen = {}
    real = onnxruntime.InferenceSession

    class CannSession(real):
        def __init__(self, source, sess_options=None, providers=None, provider_options=None):
            if providers and "CANNExecutionProvider" in providers:  # (export's own check runs on the CPU)
                seen["providers"], seen["options"] = list(providers), list(provider_options)
            super().__init__(source, sess_options=sess_options, providers=["CPUExecutionProvider"])

        def get_providers(self):
            return ["CANNExecutionProvider", "CPUExecutionProvider"]

    monkeypatch.setattr(onnxruntime, "InferenceSession", CannSession)
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CANNExecutionProvider", "CPUExecutionProvider"])
    return seen


@pytest.fixture
def graph(small_checkpoint, tmp_path):
    from pix2pixhd_deploy.export import export_onnx

    export_onnx(small_checkpoint, tmp_path / "g.onnx", height=H, width=W)
    return tmp_path / "g.onnx"


def test_cann_provider_gets_its_documented_options(cann_onnxruntime, graph, small_checkpoint):
    x = rng_input((1, 36, H, W), seed=1)
    runner = make_runner(graph, device="1", providers=["cann"],
                         provider_options={"cann": {"precision_mode": "force_fp32", "enable_cann_graph": "1"}})
    with runner:
        y = runner.infer(x)
        assert runner.describe() == "onnxruntime cann+cpu"
    assert cann_onnxruntime["providers"] == ["CANNExecutionProvider", "CPUExecutionProvider"]
    assert cann_onnxruntime["options"][0] == {"precision_mode": "force_fp32", "enable_cann_graph": "1",
                                              "device_id": "1"}  # --device fills device_id
    with TorchRunner(small_checkpoint, device="cpu") as ref:
        assert np.abs(y - ref.infer(x)).max() <= 1e-4


@pytest.mark.parametrize("options, message", [({"precision": "force_fp32"}, "cann:precision is not an option"),
                                              ({"precision_mode": "fp8"}, "cann:precision_mode=fp8 is not one of")])
def test_cann_options_are_checked_by_name_and_value(options, message, graph):
    with pytest.raises(UserError, match=message):
        OnnxRuntimeRunner(graph, providers=["cann"], provider_options={"cann": options})
