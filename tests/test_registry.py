"""The backend registry (``backends.py``) is the one place a backend is described: one runner module and one entry
make a new backend that the factory builds, the suffix picks, the option check knows, provenance records, bench
notes and the resume identity places on its device."""
from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from pix2pixhd_deploy import backends
from pix2pixhd_deploy.errors import UserError
from pix2pixhd_deploy.runners.base import Runner, TensorSpec


class EchoRunner(Runner):
    """A runner of the smallest kind: returns its input's first three channels times ``gain``."""

    name = "echo"

    def __init__(self, model, *, gain: float = 1.0):
        super().__init__()
        self.model, self.gain = model, gain

    @classmethod
    def from_options(cls, model, *, device=None, fp16=False, height=None, width=None, **options):
        return cls(model, **options)

    def activate_impl(self):
        pass

    def input_specs_impl(self):
        return [TensorSpec("input_concat", (None, 36, None, None), "float32")]

    def output_spec_impl(self):
        return TensorSpec("fake_image", (None, 3, None, None), "float32")

    def infer_impl(self, feeds):
        return feeds["input_concat"][:, :3] * self.gain

    def deactivate_impl(self):
        pass


@pytest.fixture
def echo(monkeypatch):
    module = types.ModuleType("pix2pixhd_deploy.runners.echo_runner")
    module.EchoRunner = EchoRunner
    monkeypatch.setitem(sys.modules, module.__name__, module)
    entry = backends.Backend("echo", "Echo", "echo_runner:EchoRunner", (".echo",), "numpy", ("numpy",),
                             "pip install numpy", {"gain": "--gain"}, timing="the echo's own clock",
                             number_device="cuda")
    monkeypatch.setitem(backends.BACKENDS, "echo", entry)
    return entry


def test_one_module_and_one_entry_make_a_backend(echo, tmp_path):
    from pix2pixhd_deploy.provenance import versions
    from pix2pixhd_deploy.run.settings import RunSettings
    from pix2pixhd_deploy.runners import backend_for, check_options, make_runner

    model = tmp_path / "m.echo"
    assert backend_for(model) == "echo"  # the suffix picks it
    runner = make_runner(model, gain=2.0)
    assert isinstance(runner, EchoRunner) and runner.gain == 2.0
    with runner:
        x = np.ones((1, 36, 4, 8), np.float32)
        assert np.array_equal(runner.infer({"input_concat": x}), 2 * x[:, :3])
    with pytest.raises(UserError, match="--providers does not apply to the echo runner"):
        check_options("echo", {"providers": ["cpu"]})
    with pytest.raises(UserError, match="--gain does not apply to the torch runner"):
        check_options("torch", {"gain": 3.0})
    assert RunSettings(model=str(model), backend="echo", device="0").device_kind() == "cuda"
    assert RunSettings(model=str(model), backend="echo", device="0").identity()["device"] == "cuda"
    assert versions()["echo"] == np.__version__
    assert backends.backend("echo").timing == "the echo's own clock"


def test_the_entries_say_what_the_code_did_before():
    """The four real backends' facts, as the six places that held them said them."""
    assert backends.NAMES == ("torch", "onnxruntime", "openvino", "ais_bench")
    assert backends.SUFFIXES == {".pth": "torch", ".pt": "torch", ".onnx": "onnxruntime", ".om": "ais_bench"}
    assert backends.GRAPH_RUNTIMES == ("openvino", "onnxruntime")
    kinds = {name: entry.device_kind("0") for name, entry in backends.BACKENDS.items() if name != "torch"}
    assert kinds == {"onnxruntime": "cpu", "openvino": "cpu", "ais_bench": "npu"}
    for entry in backends.BACKENDS.values():
        cls = entry.runner_class()
        assert cls.name == entry.name and hasattr(cls, "from_options"), entry.name
        assert entry.timing and entry.install
