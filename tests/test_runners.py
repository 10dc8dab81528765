"""One contract, every runner: torch (CPU, CUDA, fp16), ONNX Runtime (CPU, CUDA, TensorRT, CANN), ais_bench (real
and the documented-API fake). A runner whose package or device is missing is skipped with the reason.

Then the runner choice (suffix, ``--backend``, options), ONNX Runtime's provider handling, and ``infer`` with an
``.onnx`` on the seed's own ais_bench command line with only the program name changed.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
import torch
from conftest import SMALL_LOCAL, rng_input, run_cli

from pix2pixhd_deploy.errors import UserError
from pix2pixhd_deploy.runners import (
    BACKENDS,
    AisBenchRunner,
    OnnxRuntimeRunner,
    OpenVinoRunner,
    Runner,
    TensorSpec,
    TorchRunner,
    backend_for,
    make_runner,
)
from pix2pixhd_deploy.runners import onnxruntime_runner as ortr

H, W = 64, 128


def _installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _ort_providers():
    if not _installed("onnxruntime"):
        return []
    import onnxruntime

    return onnxruntime.get_available_providers()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """A small checkpoint, its ONNX export (dynamic batch) and the torch reference outputs for one batch of 2."""
    from pix2pixhd_deploy.model.network import random_generator, save_checkpoint

    root = tmp_path_factory.mktemp("runners")
    model = random_generator(SMALL_LOCAL, seed=9)
    ckpt = save_checkpoint(model, root / "latest_net_G.pth")
    x = rng_input((2, 36, H, W), seed=21)
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    art = {"root": root, "checkpoint": ckpt, "x": x, "ref": ref, "onnx": None}
    if _installed("onnx") and _installed("onnxruntime"):
        from pix2pixhd_deploy.export import export_onnx

        art["onnx"] = export_onnx(ckpt, root / "g.onnx", height=H, width=W).path
    return art


# ---------------------------------------------------------------------------------------------- the cases

@dataclass
class Case:
    id: str
    make: Callable[[dict, pytest.MonkeyPatch], Runner]
    skip: Callable[[], str]        # the reason to skip, or ""
    atol: float = 1e-4             # max abs error vs torch fp32 on the CPU ...
    min_psnr: float = 0.0          # ... or, for reduced-precision runtimes, a PSNR floor (dB, peak 2)


def _need_onnx(art):
    if art["onnx"] is None:
        pytest.skip("onnx/onnxruntime are not installed (pip install 'pix2pixhd-deploy[onnx]')")
    return art["onnx"]


def _ort_skip(provider: str, package: str) -> Callable[[], str]:
    def reason() -> str:
        if not _installed("onnxruntime"):
            return "onnxruntime is not installed (pip install onnxruntime)"
        if provider not in _ort_providers():
            return f"this onnxruntime has no {provider} (pip install {package}, on a machine with the device)"
        return ""
    return reason


def _cuda_skip() -> str:
    return "" if torch.cuda.is_available() else "torch sees no CUDA GPU"


def _ais_bench_skip() -> str:
    if not _installed("ais_bench"):
        return "ais_bench is not installed (built from https://github.com/Ascend/tools on a machine with CANN)"
    if not shutil.which("atc") or not os.environ.get("PIX2PIXHD_SOC_VERSION"):
        return "ais_bench is installed, but compiling a test OM needs atc on PATH and PIX2PIXHD_SOC_VERSION set"
    return ""


def _real_ais_bench(art, _mp) -> Runner:
    from pix2pixhd_deploy.export import atc_commands

    onnx_path = _need_onnx(art)
    cmd = atc_commands(onnx_path, input_name="input_concat", channels=36, height=H, width=W, batch=2,
                       soc_version=os.environ["PIX2PIXHD_SOC_VERSION"])[0]
    om = onnx_path.with_name(onnx_path.stem + "_bs2.om")
    if not om.exists():
        subprocess.run(cmd, shell=True, check=True, cwd=onnx_path.parent)
    return AisBenchRunner(om, device=os.environ.get("PIX2PIXHD_NPU", "0"))


def _fake_ais_bench(art, monkeypatch) -> Runner:
    from test_ais_bench_contract import install_fake, write_om

    install_fake(monkeypatch)
    return AisBenchRunner(write_om(art["root"] / "fake_bs2.om", art["checkpoint"], batch=2), device="0")


CASES = [
    Case("torch-cpu", lambda a, mp: TorchRunner(a["checkpoint"], device="cpu"), lambda: ""),
    Case("torch-cuda", lambda a, mp: TorchRunner(a["checkpoint"], device="cuda"), _cuda_skip, min_psnr=50.0),
    Case("torch-cuda-fp16", lambda a, mp: TorchRunner(a["checkpoint"], device="cuda", fp16=True), _cuda_skip,
         min_psnr=35.0),
    Case("onnxruntime-cpu", lambda a, mp: OnnxRuntimeRunner(_need_onnx(a), providers=["cpu"]),
         _ort_skip("CPUExecutionProvider", "onnxruntime")),
    Case("onnxruntime-cuda", lambda a, mp: OnnxRuntimeRunner(_need_onnx(a), providers=["cuda"], device="0"),
         _ort_skip("CUDAExecutionProvider", "onnxruntime-gpu"), min_psnr=50.0),
    Case("onnxruntime-tensorrt",
         lambda a, mp: OnnxRuntimeRunner(_need_onnx(a), providers=["tensorrt", "cuda"], device="0"),
         _ort_skip("TensorrtExecutionProvider", "onnxruntime-gpu"), min_psnr=50.0),
    Case("onnxruntime-cann",
         lambda a, mp: OnnxRuntimeRunner(_need_onnx(a), providers=["cann"], device="0",
                                         provider_options={"cann": {"precision_mode": "force_fp32"}}),
         _ort_skip("CANNExecutionProvider", "onnxruntime-cann"), min_psnr=40.0),
    Case("openvino-cpu", lambda a, mp: OpenVinoRunner(_need_onnx(a), device="cpu"),
         lambda: "" if _installed("openvino") and _installed("onnx") else
         "openvino is not installed (pip install openvino)"),
    Case("ais_bench", _real_ais_bench, _ais_bench_skip, min_psnr=35.0),  # ATC's default precision is fp16
    Case("ais_bench-fake", _fake_ais_bench, lambda: ""),
]


@pytest.fixture(params=CASES, ids=[c.id for c in CASES])
def case(request):
    reason = request.param.skip()
    if reason:
        pytest.skip(reason)
    return request.param


def _close_enough(case: Case, ref: np.ndarray, got: np.ndarray) -> None:
    from pix2pixhd_deploy.compare.metrics import psnr

    if case.min_psnr:
        assert psnr(ref, got, 2.0) >= case.min_psnr
    else:
        assert np.abs(ref - got).max() <= case.atol


def test_runner_contract(case, artifacts, monkeypatch):
    runner = case.make(artifacts, monkeypatch)
    x, ref = artifacts["x"], artifacts["ref"]
    assert not runner.is_active
    with pytest.raises(RuntimeError, match="before activate"):
        runner.infer(x)

    with runner as active:
        assert active is runner and runner.is_active
        spec = runner.input_spec()
        assert isinstance(spec, TensorSpec) and spec.channels == 36 and spec.name == "input_concat"
        assert spec.batch in (None, 2)
        assert spec.spatial in (None, (H, W))
        y = runner.infer(x)
        assert isinstance(y, np.ndarray) and y.dtype == np.float32 and y.shape == (2, 3, H, W)
        assert isinstance(runner.inference_time, float) and runner.inference_time > 0
        assert np.all(np.abs(y) <= 1.0)
        _close_enough(case, ref, y)
        if spec.batch is None:  # a dynamic batch takes any batch
            _close_enough(case, ref[1:], runner.infer(np.ascontiguousarray(x[1:])))
        with pytest.raises(ValueError, match="float32"):
            runner.infer(x.astype(np.float64))
        with pytest.raises(ValueError, match="4-d"):
            runner.infer(x[0])
        if spec.channels is not None:
            with pytest.raises(UserError, match="axis 1"):
                runner.infer(np.ascontiguousarray(x[:, :35]))
        assert isinstance(runner.describe(), str) and runner.describe().startswith(runner.name)
    assert not runner.is_active
    runner.deactivate()  # twice is harmless
    with pytest.raises(RuntimeError, match="before activate"):
        runner.infer(x)
    with runner:  # and it can be used again
        _close_enough(case, ref, runner.infer(x))


# ------------------------------------------------------------------------------------- choosing a runner

def test_backend_for(tmp_path):
    assert backend_for("m.pth") == "torch" and backend_for("M.ONNX") == "onnxruntime"
    assert backend_for("bs1.om") == "ais_bench" and backend_for(tmp_path) == "torch"
    assert backend_for("m.bin", "onnxruntime") == "onnxruntime"
    assert set(BACKENDS) == {"torch", "onnxruntime", "openvino", "ais_bench"}
    with pytest.raises(UserError, match="suffix"):
        backend_for("model.engine")
    with pytest.raises(UserError, match="unknown backend"):
        backend_for("m.onnx", "tensorflow")


def test_make_runner_options_go_to_their_backend(tmp_path):
    assert isinstance(make_runner("m.onnx", providers=["cpu"], intra_op_threads=1), OnnxRuntimeRunner)
    assert isinstance(make_runner("bs1.om", dym_batch=4), AisBenchRunner)
    assert make_runner("m.onnx", device="cuda:1").providers == ["cuda"]
    trt = make_runner("m.onnx", providers=["tensorrt", "cuda"], fp16=True)
    assert trt.provider_options["tensorrt"]["trt_fp16_enable"] == "True"
    with pytest.raises(UserError, match="--providers does not apply to the torch runner"):
        make_runner("m.pth", providers=["cuda"])
    with pytest.raises(UserError, match="--dymBatch does not apply to the onnxruntime runner"):
        make_runner("m.onnx", dym_batch=4)
    with pytest.raises(UserError, match="--fp16"):
        make_runner("m.onnx", fp16=True)
    with pytest.raises(UserError, match="--fp16"):
        make_runner("m.om", fp16=True)
    with pytest.raises(UserError, match="unknown ONNX Runtime provider"):
        make_runner("m.onnx", providers=["directml"])
    with pytest.raises(UserError, match="not in use"):
        make_runner("m.onnx", providers=["cpu"], provider_options={"cuda": {"device_id": 1}})


# ------------------------------------------------------------------------------------------ ONNX Runtime

pytestmark_ort = pytest.mark.skipif(not _installed("onnxruntime"), reason="onnxruntime is not installed")


@pytestmark_ort
@pytest.mark.parametrize("short, package", [("cuda", "onnxruntime-gpu"), ("tensorrt", "onnxruntime-gpu"),
                                            ("cann", "onnxruntime-cann")])
def test_missing_provider_names_the_package(artifacts, short, package):
    name = ortr.PROVIDERS[short][0]
    if name in _ort_providers():
        pytest.skip(f"{name} is available here")
    with pytest.raises(UserError, match=f"pip install {package}"):
        OnnxRuntimeRunner(_need_onnx(artifacts), providers=[short]).activate()


@pytestmark_ort
def test_providers_and_options_reach_the_session(monkeypatch, artifacts):
    """Provider names, options and the device number as ONNX Runtime receives them (a recording session)."""
    import onnxruntime

    seen = {}
    real = onnxruntime.InferenceSession

    def recording(path, sess_options=None, providers=None, provider_options=None):
        seen.update(providers=providers, provider_options=provider_options, threads=sess_options.intra_op_num_threads,
                    level=sess_options.graph_optimization_level)
        return real(path, sess_options=sess_options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(onnxruntime, "InferenceSession", recording)
    runner = OnnxRuntimeRunner(_need_onnx(artifacts), providers=["tensorrt", "cuda"], device="1", intra_op_threads=1,
                               provider_options={"tensorrt": {"trt_fp16_enable": True,
                                                              "trt_engine_cache_enable": "True"}})
    with pytest.raises(UserError, match="did not start TensorrtExecutionProvider"):
        runner.activate()  # the session fell back to the CPU: said, not hidden
    assert seen["providers"] == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert seen["provider_options"] == [{"trt_fp16_enable": "True", "trt_engine_cache_enable": "True",
                                         "device_id": "1"}, {"device_id": "1"}, {}]
    assert seen["threads"] == 1 and seen["level"] == onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL


@pytestmark_ort
def test_bad_onnx_files_are_user_errors(tmp_path):
    bad = tmp_path / "cut.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not a protobuf model")
    with pytest.raises(UserError, match="cut.onnx: ONNX Runtime cannot load this file"):
        OnnxRuntimeRunner(bad).activate()
    with pytest.raises(UserError, match="does not exist"):
        OnnxRuntimeRunner(tmp_path / "none.onnx").activate()


def test_parse_provider_option():
    assert ortr.parse_provider_option("cuda:device_id=1") == ("cuda", "device_id", "1")
    assert ortr.parse_provider_option("TensorRT:trt_engine_cache_path=/a:b=c") == (
        "tensorrt", "trt_engine_cache_path", "/a:b=c")
    for bad in ("cuda", "cuda:device_id", ":k=v"):
        with pytest.raises(UserError, match="PROVIDER:KEY=VALUE"):
            ortr.parse_provider_option(bad)


# ---------------------------------------------------------------- infer with an .onnx, the seed's command

def _seed_infer(model: str, bs: int, dirname: str):
    return ["pix2pixhd-deploy", "infer", f"--model={model}", "--input=./prep/", "--output=./result/",
            f"--output_dirname={dirname}", "--outfmt=BIN", f"--batchsize={bs}", "--device", "0"]


@pytestmark_ort
def test_seed_infer_command_with_onnx(artifacts, tmp_path):
    """bs1 and bs4 on a dynamic-batch graph, and a static batch-4 graph, over 5 inputs: the files ais_bench writes."""
    from pix2pixhd_deploy.export import export_onnx

    shutil.copy(_need_onnx(artifacts), tmp_path / "pix2pixhd.onnx")
    export_onnx(artifacts["checkpoint"], tmp_path / "pix2pixhd_bs4.onnx", dynamic_batch=False, batch=4, height=H,
                width=W)
    (tmp_path / "prep").mkdir()
    x = rng_input((5, 36, H, W), seed=31)
    names = [f"frankfurt_000000_{i:06d}_gtFine_labelIds" for i in (576, 1236, 3357, 11810, 12868)]
    for name, sample in zip(names, x):
        sample.tofile(tmp_path / "prep" / f"{name}.bin")
    with TorchRunner(artifacts["checkpoint"], device="cpu") as runner:
        want = runner.infer(x)

    for model, bs, dirname, runs in (("./pix2pixhd.onnx", 1, "bs1", 5), ("./pix2pixhd.onnx", 4, "bs4", 2),
                                      ("./pix2pixhd_bs4.onnx", 4, "static4", 2)):
        proc = run_cli(_seed_infer(model, bs, dirname), cwd=tmp_path)
        assert f"throughput 1000*batchsize.mean({bs})/NPU_compute_time.mean(" in proc.stdout
        out = tmp_path / "result" / dirname
        assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}_0.bin" for n in names)  # none lost or doubled
        for name, w in zip(names, want):
            got = np.fromfile(out / f"{name}_0.bin", np.float32)
            assert got.size * 4 == 3 * H * W * 4 == (out / f"{name}_0.bin").stat().st_size
            assert np.abs(got - w.ravel()).max() <= 1e-4
        summary = json.loads((tmp_path / "result" / f"{dirname}_summary.json").read_text())
        assert {"NPU_compute_time", "H2D_latency", "D2H_latency", "throughput", "npu_compute_time_list", "pid",
                "args", "filesinfo"} <= set(summary)
        assert summary["backend"] == "onnxruntime" and len(summary["npu_compute_time_list"]) == runs
        assert summary["throughput"] == pytest.approx(1000 * bs / np.mean(summary["npu_compute_time_list"]))
        assert [len(v["outfiles"]) for v in summary["filesinfo"].values()] == [1] * 5
        assert summary["args"][1:] == _seed_infer(model, bs, dirname)[1:]


@pytestmark_ort
def test_infer_missing_provider_is_one_line(artifacts, tmp_path):
    if "CUDAExecutionProvider" in _ort_providers():
        pytest.skip("CUDA is available here")
    proc = run_cli(["pix2pixhd-deploy", "infer", "--model", str(_need_onnx(artifacts)), "--output", str(tmp_path),
                    "--provider-option", "cuda:device_id=0"], check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "onnxruntime-gpu" in proc.stderr.strip().splitlines()[-1]


def test_out_of_gpu_memory_is_one_line_naming_the_batch_that_would_fit(small_checkpoint, monkeypatch):
    """torch's OutOfMemoryError (simulated: no GPU here) becomes a UserError naming the batch and a smaller one."""
    import torch

    from pix2pixhd_deploy.errors import UserError
    from pix2pixhd_deploy.runners import make_runner

    with make_runner(small_checkpoint, backend="torch", device="cpu", input_format="maps",
                     output_format="uint8") as runner:
        def full(*_):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

        monkeypatch.setattr(runner, "module", full)
        labels = np.zeros((4, 64, 128), np.uint8)
        with pytest.raises(UserError) as err:
            runner.infer({"label": labels, "inst": np.zeros((4, 64, 128), np.int32)})
    message = str(err.value)
    assert "ran out of memory for a batch of 4 map(s) of 128x64 in fp32" in message
    assert "--batch-size 2" in message and "\n" not in message
