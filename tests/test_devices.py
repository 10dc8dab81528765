"""devices.py: the one --device parser, and what each runner makes of each form."""
import pytest

from pix2pixhd_deploy.devices import Device, parse_device, parse_device_list
from pix2pixhd_deploy.errors import UserError


@pytest.mark.parametrize("text, kind, index", [
    (None, "auto", None), ("auto", "auto", None), ("cpu", "cpu", None), (" CPU ", "cpu", None),
    ("cuda", "cuda", None), ("cuda:1", "cuda", 1), ("0", "number", 0), ("3", "number", 3),
    ("npu:2", "npu", 2), ("ascend:2", "npu", 2), ("gpu.1", "gpu", 1), ("GPU", "gpu", None)])
def test_forms(text, kind, index):
    parsed = parse_device(text)
    assert (parsed.kind, parsed.index) == (kind, index)


@pytest.mark.parametrize("text", ["tpu", "cuda:x", "0,1", "-1", "cuda:1:2"])
def test_unknown_forms_are_user_errors(text):
    with pytest.raises(UserError, match="unknown device"):
        parse_device(text)


def test_lists_are_distinct_numbers():
    assert parse_device_list("0,1") == ["0", "1"]
    assert parse_device_list(None) == [None]
    assert parse_device_list("cuda:1") == ["cuda:1"]
    for bad in ("0,0", "0,cuda"):
        with pytest.raises(UserError, match="distinct device numbers"):
            parse_device_list(bad)
    with pytest.raises(UserError, match="unknown device"):
        parse_device_list("tpu")


def test_a_bare_number_is_the_runtimes_accelerator():
    """The one meaning of ``--device N`` as each runner applies it (no accelerator needed to check it)."""
    import torch

    from pix2pixhd_deploy.run.settings import RunSettings
    from pix2pixhd_deploy.runners.ais_bench_runner import _device_id
    from pix2pixhd_deploy.runners.onnxruntime_runner import OnnxRuntimeRunner
    from pix2pixhd_deploy.runners.openvino_runner import _ov_device
    from pix2pixhd_deploy.runners.torch_runner import resolve_device

    assert _device_id("2") == 2 and _device_id("npu:1") == 1 and _device_id(None) == 0
    with pytest.raises(UserError, match="NPU number"):
        _device_id("cuda:0")
    assert OnnxRuntimeRunner("m.onnx", device="1")._device_id() == 1
    assert OnnxRuntimeRunner("m.onnx", device="cuda")._device_id() is None
    assert OnnxRuntimeRunner("m.onnx", device="cpu")._device_id() is None
    assert _ov_device("0") == "CPU" and _ov_device("gpu.1") == "GPU.1" and _ov_device(None) == "CPU"
    assert resolve_device("1") == ("cuda:1" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(UserError, match="torch runner cannot run"):
        resolve_device("npu:0")
    kinds = {b: RunSettings(model="m", backend=b, device="0").device_kind() for b in ("ais_bench", "onnxruntime")}
    assert kinds == {"ais_bench": "npu", "onnxruntime": "cpu"}
    assert isinstance(parse_device(Device("cpu")), Device)
