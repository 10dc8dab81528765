"""The ais_bench runner against a fake ``ais_bench.infer.interface.InferSession`` that follows the documented API.

ais_bench needs an Ascend NPU and CANN, so CI cannot run it. This is a contract test: the fake implements exactly
what ASCEND.md §2.5 documents (the constructor, ``get_inputs``/``get_outputs`` descriptors, ``infer(feeds)`` that
returns numpy arrays, ``set_dynamic_batchsize``, ``sumary().exec_time_list`` in ms, ``finalize``) and refuses
anything else, the way aclruntime refuses a feed of the wrong byte size. The "OM" it loads is a JSON file naming a
small checkpoint and the compiled input shape; it runs that generator with torch, so outputs can be compared.

If the real ais_bench changes its API, this is the file to update; the runner must keep passing it.
"""
from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import rng_input, run_cli
from pix2pixhd_deploy.errors import UserError
from pix2pixhd_deploy.runners import AisBenchRunner, TorchRunner, make_runner

H, W = 64, 128
DYNAMIC_BATCH_INPUT = "ascend_mbatch_shape_data"


class TensorDesc:
    """aclruntime's tensor_desc: name, datatype, format, shape, size, realsize (bytes)."""

    def __init__(self, name, shape, itemsize=4):
        self.name, self.datatype, self.format = name, "dtype.float32", 0
        self.shape = list(shape)
        self.size = self.realsize = int(np.prod([max(d, 1) for d in shape])) * itemsize


class Summary:
    def __init__(self):
        self.exec_time_list = []


class FakeInferSession:
    """``InferSession(device_id, model_path, acl_json_path=None, debug=False, loop=1)`` over a JSON "OM"."""

    instances = []
    device_count = 2

    def __init__(self, device_id: int, model_path: str, acl_json_path: str = None, debug: bool = False,
                 loop: int = 1):
        if not isinstance(device_id, int) or not 0 <= device_id < self.device_count:
            raise RuntimeError(f"aclrtSetDevice failed: device {device_id} not found")
        om = json.loads(Path(model_path).read_text())
        from pix2pixhd_deploy.network import load_generator

        self.model = load_generator(om["checkpoint"]).model
        self.om = om
        self.batch = om["batch"]               # -1: compiled with --dynamic_batch_size=om["gears"]
        self.dynamic_batch = None
        self.loop = loop
        self.summary = Summary()
        self.calls = []
        self.finalized = False
        FakeInferSession.instances.append(self)

    # --- model description
    def get_inputs(self):
        data = TensorDesc(self.om["input_name"], [self.batch, 36, self.om["height"], self.om["width"]])
        if self.batch == -1:  # ATC adds an input that carries the batch size (ASCEND.md §3)
            return [data, TensorDesc(DYNAMIC_BATCH_INPUT, [1], itemsize=8)]
        return [data]

    def get_outputs(self):
        return [TensorDesc("fake_image", [self.batch, 3, self.om["height"], self.om["width"]])]

    # --- settings
    def set_dynamic_batchsize(self, n: int):
        if self.batch != -1:
            raise RuntimeError("aclmdlSetDynamicBatchSize failed: the model has no dynamic batch")
        if n not in self.om["gears"]:
            raise RuntimeError(f"aclmdlSetDynamicBatchSize failed: {n} is not a gear of {self.om['gears']}")
        self.dynamic_batch = n

    def set_staticbatch(self):
        self.dynamic_batch = None

    def sumary(self):
        return self.summary

    def reset_sumaryinfo(self):
        self.summary = Summary()

    def finalize(self):
        self.finalized = True

    # --- inference
    def infer(self, feeds, mode="static", custom_sizes=100000):
        if self.finalized:
            raise RuntimeError("session finalized")
        if mode != "static":
            raise ValueError(f"mode {mode!r} is for dynamic-shape models")
        if not isinstance(feeds, list) or len(feeds) != 1:
            raise RuntimeError(f"the model has 1 input, got {type(feeds).__name__} of {len(feeds)}")
        x = feeds[0]
        if not isinstance(x, np.ndarray) or x.dtype != np.float32 or not x.flags.c_contiguous:
            raise RuntimeError("feeds must be C-contiguous float32 numpy arrays here")
        if self.batch == -1 and self.dynamic_batch is None:
            raise RuntimeError("dynamic batch model: call set_dynamic_batchsize first")
        batch = self.dynamic_batch or self.batch
        per_sample = 36 * self.om["height"] * self.om["width"] * 4
        if x.nbytes != batch * per_sample:  # aclruntime compares byte sizes, not shapes
            raise RuntimeError(f"input size {x.nbytes} != model input size {batch * per_sample}")
        self.calls.append(x.copy())
        with torch.inference_mode():
            y = self.model(torch.from_numpy(x.reshape(batch, 36, self.om["height"], self.om["width"]))).numpy()
        if self.batch == -1 and self.om.get("max_gear_output"):  # output buffers sized for the largest gear
            pad = np.zeros((max(self.om["gears"]) - batch, *y.shape[1:]), np.float32)
            y = np.concatenate([y, pad])
        self.summary.exec_time_list.append(7.5 + len(self.calls))  # ms, recognisable values
        return [y]


def install_fake(monkeypatch):
    """Put the fake package in ``sys.modules`` as ``ais_bench.infer.interface``."""
    FakeInferSession.instances = []
    pkg, infer, interface = (types.ModuleType(n) for n in ("ais_bench", "ais_bench.infer",
                                                           "ais_bench.infer.interface"))
    interface.InferSession = FakeInferSession
    pkg.infer, infer.interface = infer, interface
    for name, mod in (("ais_bench", pkg), ("ais_bench.infer", infer), ("ais_bench.infer.interface", interface)):
        monkeypatch.setitem(sys.modules, name, mod)


def write_om(path: Path, checkpoint: Path, batch: int, gears=(1, 4, 8), **extra) -> Path:
    path.write_text(json.dumps({"checkpoint": str(checkpoint), "batch": batch, "gears": list(gears),
                                "input_name": "input_concat", "height": H, "width": W, **extra}))
    return path


@pytest.fixture
def fake_ais_bench(monkeypatch):
    install_fake(monkeypatch)
    return FakeInferSession


def torch_outputs(checkpoint, x):
    with TorchRunner(checkpoint, device="cpu") as runner:
        return runner.infer(x)


# ------------------------------------------------------------------------------------------------- tests

def test_static_batch_om(fake_ais_bench, small_checkpoint, tmp_path):
    om = write_om(tmp_path / "pix2pixhd_bs4.om", small_checkpoint, batch=4)
    x = rng_input((4, 36, H, W), seed=2)
    with make_runner(om, device="1") as runner:
        assert isinstance(runner, AisBenchRunner)
        assert runner.input_spec().shape == (4, 36, H, W)
        y = runner.infer(x)
        session = fake_ais_bench.instances[-1]
        assert runner.inference_time == pytest.approx(session.summary.exec_time_list[-1] / 1000)
        with pytest.raises(UserError, match="axis 0"):
            runner.infer(x[:3])
    assert session.finalized
    assert y.shape == (4, 3, H, W) and y.dtype == np.float32
    assert np.abs(y - torch_outputs(small_checkpoint, x)).max() <= 1e-5


@pytest.mark.parametrize("max_gear_output", [False, True], ids=["exact-output", "max-gear-output"])
def test_dynamic_batch_om_with_dymbatch(fake_ais_bench, small_checkpoint, tmp_path, max_gear_output):
    om = write_om(tmp_path / "pix2pixhd_dynbs.om", small_checkpoint, batch=-1, max_gear_output=max_gear_output)
    x = rng_input((4, 36, H, W), seed=3)
    with make_runner(om, device="0", dym_batch=4) as runner:
        assert runner.input_spec().shape == (4, 36, H, W)
        y = runner.infer(x)
    assert fake_ais_bench.instances[-1].dynamic_batch == 4
    assert np.abs(y - torch_outputs(small_checkpoint, x)).max() <= 1e-5


def test_dynamic_batch_om_needs_dymbatch(fake_ais_bench, small_checkpoint, tmp_path):
    om = write_om(tmp_path / "dyn.om", small_checkpoint, batch=-1)
    with pytest.raises(UserError, match="--dymBatch"):
        make_runner(om).activate()
    with pytest.raises(UserError, match="gears"):
        make_runner(om, dym_batch=3).activate()  # not one of 1, 4, 8


def test_dymbatch_on_a_static_om_is_refused(fake_ais_bench, small_checkpoint, tmp_path):
    om = write_om(tmp_path / "bs1.om", small_checkpoint, batch=1)
    with pytest.raises(UserError, match="static batch of 1"):
        make_runner(om, dym_batch=4).activate()


def test_missing_device_and_bad_device_are_user_errors(fake_ais_bench, small_checkpoint, tmp_path):
    om = write_om(tmp_path / "bs1.om", small_checkpoint, batch=1)
    with pytest.raises(UserError, match="NPU 7"):
        make_runner(om, device="7").activate()
    with pytest.raises(UserError, match="NPU number"):
        make_runner(om, device="cuda").activate()
    with pytest.raises(UserError, match="does not exist"):
        make_runner(tmp_path / "missing.om").activate()


def test_seed_command_line_static_bs4_with_a_short_last_batch(fake_ais_bench, small_checkpoint, tmp_path,
                                                             monkeypatch, capsys):
    """The seed's ais_bench line with the program renamed: 5 inputs on a bs4 OM -> 2 runs, 5 outputs."""
    from pix2pixhd_deploy.cli import main

    om = write_om(tmp_path / "pix2pixhd_bs4.om", small_checkpoint, batch=4)
    prep = tmp_path / "prep_datasets"
    prep.mkdir()
    x = rng_input((5, 36, H, W), seed=4)
    names = [f"city_{i}_gtFine_labelIds" for i in (1, 2, 3, 10, 20)]  # natural order differs from sorted
    for name, sample in zip(names, x):
        sample.tofile(prep / f"{name}.bin")
    monkeypatch.chdir(tmp_path)
    rc = main(["infer", f"--model={om.name}", "--input=./prep_datasets/", "--output=./result/",
               "--output_dirname=bs4", "--outfmt=BIN", "--batchsize=4", "--device", "0"])
    assert rc == 0
    stdout = capsys.readouterr().out
    session = fake_ais_bench.instances[-1]
    assert len(session.calls) == 3  # 1 warm-up + 2 batches
    assert np.array_equal(session.calls[2][1:], np.repeat(x[4:5], 3, axis=0))  # padded with the batch's first file
    out = tmp_path / "result" / "bs4"
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}_0.bin" for n in names)
    want = torch_outputs(small_checkpoint, x)
    for name, w in zip(names, want):
        got = np.fromfile(out / f"{name}_0.bin", np.float32)
        assert got.size == 3 * H * W
        assert np.abs(got - w.ravel()).max() <= 1e-5
    summary = json.loads((tmp_path / "result" / "bs4_summary.json").read_text())
    assert summary["npu_compute_time_list"] == pytest.approx(session.summary.exec_time_list[1:])
    assert summary["throughput"] == pytest.approx(1000 * 4 / np.mean(session.summary.exec_time_list[1:]))
    assert [v["infiles"][0].split("/")[-1] for v in summary["filesinfo"].values()] == [f"{n}.bin" for n in names]
    assert f"throughput 1000*batchsize.mean(4)/NPU_compute_time.mean(" in stdout


def test_seed_command_line_dynamic_om(fake_ais_bench, small_checkpoint, tmp_path, monkeypatch):
    from pix2pixhd_deploy.cli import main

    om = write_om(tmp_path / "pix2pixhd_dynbs.om", small_checkpoint, batch=-1)
    prep = tmp_path / "prep"
    prep.mkdir()
    for i, sample in enumerate(rng_input((3, 36, H, W), seed=5)):
        sample.tofile(prep / f"s{i}.bin")
    monkeypatch.chdir(tmp_path)
    assert main(["infer", f"--model={om.name}", "--input=prep", "--output=res", "--output_dirname=d",
                 "--dymBatch", "4", "--device", "0"]) == 0
    assert sorted(p.name for p in (tmp_path / "res" / "d").iterdir()) == ["s0_0.bin", "s1_0.bin", "s2_0.bin"]
    assert all(c.shape[0] == 4 for c in fake_ais_bench.instances[-1].calls)


def test_not_installed_is_one_line(tmp_path):
    """Without ais_bench (as here): one line naming where to get it, exit 2, no traceback."""
    if _installed("ais_bench"):
        pytest.skip("ais_bench is installed here")
    om = tmp_path / "pix2pixhd_bs1.om"
    om.write_bytes(b"not really an om")
    proc = run_cli(["pix2pixhd-deploy", "infer", f"--model={om}", "--output", str(tmp_path / "r"),
                    "--device", "0"], check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "ais_bench is not installed" in lines[0] and "Ascend/tools" in lines[0]
    assert str(om) in lines[0] and not (tmp_path / "r").exists()


def _installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
