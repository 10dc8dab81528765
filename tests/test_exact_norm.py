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
from pix2pixhd_deploy.export.rewrites import RowMomentsInstanceNorm, drop_biases_before_norms, prepare_for_export
from pix2pixhd_deploy.model.network import random_generator

NORMS = [TwoStageInstanceNorm, RowMomentsInstanceNorm]


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 8, 64, 128)])
def test_two_stage_equals_instance_norm(shape, norm):
    torch.manual_seed(0)
    x = torch.randn(*shape) * 0.05 + 0.3
    exact = nn.InstanceNorm2d(shape[1]).double()(x.double())
    got = norm(nn.InstanceNorm2d(shape[1]))(x)
    assert float((got.double() - exact).abs().max()) < 2e-5
    with pytest.raises(ValueError):
        norm(nn.InstanceNorm2d(4, affine=True))


def test_onnx_runtime_gets_torch_accuracy_on_a_large_channel():
    """One norm over 1024x2048 values with a mean six times the spread, as after a convolution: the two-stage
    graph in ONNX Runtime stays within 1e-5 of float64, and closer than the InstanceNormalization op it replaces."""
    torch.manual_seed(0)
    x = (torch.randn(1, 2, 1024, 2048) * 0.05 + 0.3).numpy()
    exact = nn.InstanceNorm2d(2).double()(torch.from_numpy(x).double()).numpy()
    errors = {}
    for form in [None, *NORMS]:
        model = form(nn.InstanceNorm2d(2)) if form else nn.InstanceNorm2d(2)
        buffer = io.BytesIO()
        torch_onnx_export(model, torch.from_numpy(x), buffer, opset_version=11, input_names=["x"])
        ops = {n.op_type for n in onnx.load_from_string(buffer.getvalue()).graph.node}
        assert ("InstanceNormalization" in ops) == (form is None)
        errors[form] = float(np.abs(run_onnxruntime_cpu(buffer.getvalue(), "x", x) - exact).max())
    assert all(errors[form] < 1e-5 and errors[form] < errors[None] for form in NORMS), errors


@pytest.mark.parametrize("norm", NORMS)
def test_constant_channels_give_zeros_not_nan(norm):
    """A uniform map makes every stem channel one value; a row's sum of squares minus its sum times its mean can
    then round below zero, and a variance below -eps gave NaN (ONNX Runtime's ReLU passes NaN on: a blank picture).
    No ReLU here, so a NaN would show."""
    x = torch.linspace(1, 100, 64).view(1, 64, 1, 1).expand(1, 64, 32, 96).contiguous()
    model = norm(nn.InstanceNorm2d(64))
    got = model(x)
    buffer = io.BytesIO()
    torch_onnx_export(model, x, buffer, opset_version=17, input_names=["x"])
    ort = run_onnxruntime_cpu(buffer.getvalue(), "x", x.numpy())
    for out in (got.numpy(), ort):
        assert np.isfinite(out).all() and np.abs(out).max() < 0.05  # upstream's float32 norm: about 0 too


def test_row_moments_read_the_tensor_for_sums_only():
    """The CPU form's statistics are row sums and row sums of squares (ReduceL2), and its output is x * a + b:
    no tensor-sized centred copy (a Sub of the mean) nor squares (a Mul of the tensor by itself) in the graph."""
    buffer = io.BytesIO()
    torch_onnx_export(RowMomentsInstanceNorm(nn.InstanceNorm2d(4)), torch.randn(1, 4, 16, 32), buffer,
                      opset_version=17, input_names=["x"])
    graph = onnx.shape_inference.infer_shapes(onnx.load_from_string(buffer.getvalue())).graph
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*graph.value_info, *graph.input, *graph.output]}
    big = [n.op_type for n in graph.node if any(shapes.get(o) == [1, 4, 16, 32] for o in n.output)]
    assert sorted(big) == ["Mul", "Sub"]  # x * rstd and (x * rstd) - mean * rstd: the output pass
    assert [n.op_type for n in graph.node].count("ReduceL2") == 1
    sub = next(n for n in graph.node if n.op_type == "Sub" and shapes.get(n.output[0]) == [1, 4, 16, 32])
    assert shapes.get(sub.input[1]) == [1, 4, 1, 1]  # a per-channel constant, not a tensor


def test_biases_before_norms_are_dropped_and_change_nothing():
    g = random_generator(SMALL_LOCAL, seed=4).eval()
    with torch.no_grad():
        for m in g.modules():  # large biases, as a trained model may have: the norms remove them
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                m.bias.add_(3.0)
    x = torch.rand(1, 36, 64, 128)
    counts = {}
    cpu = prepare_for_export(g, fast_convs=True, exact_norm=True, counts=counts)
    convs = [m for m in cpu.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    norms = sum(isinstance(m, RowMomentsInstanceNorm) for m in cpu.modules())
    assert counts["biases_dropped"] == norms == counts["two_stage_norm"] > 0
    assert sum(m.bias is None for m in convs) == norms  # and no other: the output convolution keeps its bias
    with torch.no_grad():
        assert float((cpu(x) - g(x)).abs().max()) < 1e-4
    assert all(m.bias is not None for m in g.modules() if isinstance(m, nn.Conv2d))  # the model is not changed
    plain = prepare_for_export(g, exact_norm=True, counts=counts)
    assert counts["biases_dropped"] == 0 and not any(isinstance(m, RowMomentsInstanceNorm) for m in plain.modules())
    assert drop_biases_before_norms(nn.Sequential(nn.Conv2d(2, 2, 1), nn.ReLU(), nn.InstanceNorm2d(2))) == 0


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
    assert "fast convolutions" in out and "row-moment instance norms" in out and "max abs error" in out
    # the stems feed norms, which cancel their biases: the CPU graph's stems leave them out (and still verify)
    stems = np.load(tmp_path / "g.onnx.stems.npz")
    assert not stems["local_bias"].any() and not stems["global_bias"].any()
    run_cli(["pix2pixhd-deploy", "export", "--checkpoint", small_checkpoint, "--output", tmp_path / "p.onnx",
             "--height", "64", "--width", "128", "--input-format", "stems", "--static-batch", "1"])
    assert np.load(tmp_path / "p.onnx.stems.npz")["local_bias"].any()  # the two-stage graph keeps them
    proc = run_cli(["pix2pixhd-deploy", "export", "--checkpoint", small_checkpoint, "--output", tmp_path / "d.onnx",
                    "--dynamic-hw", "--exact-norm"], check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "--exact-norm" in proc.stderr
