"""export --exact-norm: instance norms as two-stage sums keep the runtimes as close to float64 as torch is."""
from __future__ import annotations

import io
import json

import numpy as np
import onnx
import pytest
import torch
from conftest import SMALL_LOCAL, run_cli
from torch import nn

from pix2pixhd_deploy.errors import UserError
from pix2pixhd_deploy.export import TwoStageInstanceNorm, export_onnx, run_onnxruntime_cpu, torch_onnx_export
from pix2pixhd_deploy.model.network import random_generator


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 8, 64, 128)])
def test_two_stage_equals_instance_norm(shape):
    torch.manual_seed(0)
    x = torch.randn(*shape) * 0.05 + 0.3
    exact = nn.InstanceNorm2d(shape[1]).double()(x.double())
    got = TwoStageInstanceNorm(nn.InstanceNorm2d(shape[1]))(x)
    assert float((got.double() - exact).abs().max()) < 2e-5
    with pytest.raises(ValueError):
        TwoStageInstanceNorm(nn.InstanceNorm2d(4, affine=True))


def test_onnx_runtime_gets_torch_accuracy_on_a_large_channel():
    """One norm over 1024x2048 values with a mean six times the spread, as after a convolution: the two-stage
    graph in ONNX Runtime stays within 1e-5 of float64, and closer than the InstanceNormalization op it replaces."""
    torch.manual_seed(0)
    x = (torch.randn(1, 2, 1024, 2048) * 0.05 + 0.3).numpy()
    exact = nn.InstanceNorm2d(2).double()(torch.from_numpy(x).double()).numpy()
    errors = {}
    for exact_norm in (False, True):
        model = TwoStageInstanceNorm(nn.InstanceNorm2d(2)) if exact_norm else nn.InstanceNorm2d(2)
        buffer = io.BytesIO()
        torch_onnx_export(model, torch.from_numpy(x), buffer, opset_version=11, input_names=["x"])
        ops = {n.op_type for n in onnx.load_from_string(buffer.getvalue()).graph.node}
        assert ("InstanceNormalization" in ops) != exact_norm
        errors[exact_norm] = float(np.abs(run_onnxruntime_cpu(buffer.getvalue(), "x", x) - exact).max())
    assert errors[True] < 1e-5 and errors[True] < errors[False]


def test_export_exact_norm_graph(tmp_path):
    g = random_generator(SMALL_LOCAL, seed=4).eval()
    plain = export_onnx(g, tmp_path / "plain.onnx", height=64, width=128, exact_norm=False)
    report = export_onnx(g, tmp_path / "exact.onnx", height=64, width=128, exact_norm=True)
    assert report.verified and report.exact_norm and report.max_abs_error <= 1e-5
    assert "InstanceNormalization" not in report.ops
    assert report.ops["ReduceSum"] == 4 * plain.ops["InstanceNormalization"]  # two sums for the mean, two for the var
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "exact.onnx")).metadata_props}
    assert json.loads(props["pix2pixhd.export"])["exact_norm"] is True
    assert "two-stage instance norms" in report.lines()[0]
    with pytest.raises(UserError, match="--exact-norm needs a static"):
        export_onnx(g, tmp_path / "dyn.onnx", height=64, width=128, dynamic_hw=True, exact_norm=True)
    with pytest.raises(UserError, match="fp32 CPU graphs"):  # fp16 keeps its norms in float32 on purpose
        export_onnx(g, tmp_path / "dyn.onnx", height=64, width=128, fp16=True, exact_norm=True)
    with pytest.raises(UserError, match="found nothing to rewrite"):
        export_onnx(nn.Sequential(nn.Conv2d(36, 3, 3, padding=1)), tmp_path / "dyn.onnx", height=64, width=128,
                    exact_norm=True)
    assert not (tmp_path / "dyn.onnx").exists()


def test_export_command_with_both_cpu_flags(small_checkpoint, tmp_path):
    out = run_cli(["pix2pixhd-deploy", "export", "--checkpoint", small_checkpoint, "--output", tmp_path / "g.onnx",
                   "--height", "64", "--width", "128", "--input-format", "stems", "--output-format", "uint8",
                   "--fast-convs", "--exact-norm", "--static-batch", "1"]).stdout
    assert "fast convolutions" in out and "two-stage instance norms" in out and "max abs error" in out
    proc = run_cli(["pix2pixhd-deploy", "export", "--checkpoint", small_checkpoint, "--output", tmp_path / "d.onnx",
                    "--dynamic-hw", "--exact-norm"], check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "--exact-norm" in proc.stderr
