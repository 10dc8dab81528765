"""fastconv: the Winograd and row-sum convolutions compute what nn.Conv2d computes, as closely as it does itself."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from conftest import SMALL_LOCAL, run_cli
from torch import nn

from pix2pixhd_deploy.errors import UserError
from pix2pixhd_deploy.export import export_onnx, run_onnxruntime_cpu, seeded_input
from pix2pixhd_deploy.export.rewrites import drop_biases_before_norms
from pix2pixhd_deploy.model import fastconv
from pix2pixhd_deploy.model.fastconv import RowSumConv, WinogradConv3x3, rewrite_for_cpu
from pix2pixhd_deploy.model.network import LABEL2CITY_1024P, GeneratorConfig, random_generator
from pix2pixhd_deploy.runners import TorchRunner


def _errors(conv: nn.Module, fast: nn.Module, x: torch.Tensor):
    """Max abs error of nn.Conv2d and of its fast form, both in float32, against nn.Conv2d in float64."""
    with torch.inference_mode():
        exact = copy.deepcopy(conv).double()(x.double())
        direct, got = conv(x), fast(x)
    assert got.shape == direct.shape
    return float((direct.double() - exact).abs().max()), float((got.double() - exact).abs().max())


@pytest.mark.parametrize("c,k,h,w,n,bias", [(8, 5, 6, 10, 1, True), (16, 16, 7, 9, 2, True),
                                            (4, 3, 3, 3, 3, False), (32, 8, 12, 5, 1, True)])
def test_winograd_equals_conv(c, k, h, w, n, bias):
    torch.manual_seed(c + h)
    conv = nn.Conv2d(c, k, 3, bias=bias)
    x = torch.randn(n, c, h, w)
    direct_err, fast_err = _errors(conv, WinogradConv3x3(conv), x)
    assert fast_err <= max(4 * direct_err, 2e-6)


@pytest.mark.parametrize("h,w,n", [(6, 6, 1), (7, 9, 2), (3, 3, 1), (34, 66, 1), (13, 5, 3)])
def test_winograd_4x4_is_exact_in_float64(h, w, n):
    """F(4x4, 3x3), tiles cut at every remainder: equal to the convolution up to float64 rounding."""
    torch.manual_seed(h * w)
    conv = nn.Conv2d(8, 5, 3).double()
    x = torch.randn(n, 8, h, w, dtype=torch.float64)
    with torch.inference_mode():
        assert float((WinogradConv3x3(conv, 4)(x) - conv(x)).abs().max()) < 1e-12


def test_winograd_4x4_error_in_float32_is_larger_as_measured():
    """The figure in the module docstring and benchmarks/winograd_tile.py: about 20x the direct error."""
    torch.manual_seed(0)
    conv = nn.Conv2d(1024, 1024, 3)
    direct_err, fast_err = _errors(conv, WinogradConv3x3(conv, 4), torch.randn(1, 1024, 34, 66))
    assert 5 * direct_err < fast_err < 1e-4


def test_winograd_1024_channels_is_as_close_as_direct():
    """The label2city residual-block shape (1024 channels, 32x64 plus the reflection pad)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(1024, 1024, 3)
    direct_err, fast_err = _errors(conv, WinogradConv3x3(conv), torch.randn(1, 1024, 34, 66))
    assert fast_err < 1e-5 and fast_err <= 3 * direct_err


@pytest.mark.parametrize("shape", [(3, 32, 7, 7), (1, 4, 5, 3), (2, 16, 3, 3)])
def test_rowsum_equals_conv(shape):
    k, c, kh, kw = shape
    torch.manual_seed(k)
    conv = nn.Conv2d(c, k, (kh, kw))
    direct_err, fast_err = _errors(conv, RowSumConv(conv), torch.randn(2, c, 20, 17))
    assert fast_err <= max(4 * direct_err, 2e-6)


def test_only_the_right_convolutions_are_candidates():
    assert fastconv.is_winograd_candidate(nn.Conv2d(1024, 1024, 3))
    assert not fastconv.is_winograd_candidate(nn.Conv2d(64, 64, 3))              # too few channels
    assert not fastconv.is_winograd_candidate(nn.Conv2d(1024, 1024, 3, stride=2))
    assert not fastconv.is_winograd_candidate(nn.Conv2d(1024, 1024, 3, padding=1))
    assert not fastconv.is_winograd_candidate(nn.Conv2d(1024, 1024, 3, groups=2))
    assert not fastconv.is_winograd_candidate(nn.ConvTranspose2d(1024, 1024, 3))
    assert fastconv.is_rowsum_candidate(nn.Conv2d(32, 3, 7))
    assert not fastconv.is_rowsum_candidate(nn.Conv2d(32, 16, 7))
    with pytest.raises(ValueError):
        WinogradConv3x3(nn.Conv2d(8, 8, 3, stride=2))


def test_label2city_rewritten_is_as_close_to_float64_as_the_original():
    """The real architecture (seeded weights): 18 Winograd blocks and the output convolution, at 64x128."""
    g = random_generator(LABEL2CITY_1024P, seed=0).eval()
    x = torch.from_numpy(seeded_input(36, 1, 64, 128))
    fast = copy.deepcopy(g)
    assert rewrite_for_cpu(fast) == {"winograd": 18, "rowsum": 1}
    assert sum(isinstance(m, WinogradConv3x3) for m in fast.modules()) == 18
    with torch.inference_mode():
        direct, got = g(x), fast(x)
        del fast
        exact = g.double()(x.double())
    direct_err = float((direct.double() - exact).abs().max())
    fast_err = float((got.double() - exact).abs().max())
    assert fast_err < 1e-4 and fast_err <= 3 * max(direct_err, 1e-6)


def strided_slices(path) -> list:
    """The graph's Slice nodes that step by more than 1 on some axis: a graph runtime keeps an index per value
    they take (OpenVINO: 1.6 GB first-touched at each load of label2city_1024p's F(4x4) graph when the Winograd
    tiles were sliced out tap by tap)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consts.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node if n.op_type == "Constant"})
    return [n.name for n in graph.node if n.op_type == "Slice" and len(n.input) > 4
            and np.any(np.abs(consts[n.input[4]]) != 1)]


@pytest.fixture
def small_winograd(monkeypatch):
    """SMALL_LOCAL's global blocks have 64 channels: let them count as large so its graph has Winograd layers."""
    monkeypatch.setattr(fastconv, "WINOGRAD_MIN_CHANNELS", 32)
    return random_generator(SMALL_LOCAL, seed=3).eval()


@pytest.mark.parametrize("opset", [11, 17])
def test_fast_graph_equals_the_plain_graph(small_winograd, tmp_path, opset):
    plain = export_onnx(small_winograd, tmp_path / "plain.onnx", opset=opset, height=64, width=128)
    fast = export_onnx(small_winograd, tmp_path / "fast.onnx", opset=opset, height=64, width=128, fast_convs=True)
    assert fast.verified and fast.fast_convs and fast.max_abs_error <= 1e-5
    assert fast.ops.get("MatMul", 0) >= 2 and "MatMul" not in plain.ops
    # one global block: its 2 convolutions become 2 input transforms (the row sums keep one Conv)
    assert fast.ops["Conv"] == plain.ops["Conv"]
    assert strided_slices(tmp_path / "fast.onnx") == []
    props = {p.key: p.value for p in __import__("onnx").load(str(tmp_path / "fast.onnx")).metadata_props}
    assert json.loads(props["pix2pixhd.export"])["fast_convs"] is True
    x = seeded_input(36, 2, 64, 128, seed=5)  # batch 2 through the dynamic batch axis
    a = run_onnxruntime_cpu((tmp_path / "plain.onnx").read_bytes(), "input_concat", x)
    b = run_onnxruntime_cpu((tmp_path / "fast.onnx").read_bytes(), "input_concat", x)
    assert np.abs(a - b).max() <= 1e-5


def test_f4x4_graph_holds_the_3x3_filters_and_a_runtime_transforms_them_each_inference(small_winograd, tmp_path):
    """F(4x4)'s graph stores 9 values per filter pair (16 for F(2x2)); its output equals the plain graph's within
    F(4x4)'s float error; and OpenVINO keeps the filter transform as an operation (a FullyConnected per Winograd
    layer) instead of folding it into a constant of 36 values per pair (2.7 GB in label2city_1024p)."""
    import onnx
    from onnx import numpy_helper

    export_onnx(small_winograd, tmp_path / "plain.onnx", height=64, width=128)
    export_onnx(small_winograd, tmp_path / "f2.onnx", height=64, width=128, fast_convs=True)
    f4 = export_onnx(small_winograd, tmp_path / "f4.onnx", height=64, width=128, fast_convs=True, winograd_tile=4)
    assert f4.verified and f4.max_abs_error <= 1e-4 and any("2 Winograd F(4x4, 3x3)" in n for n in f4.notes)

    def values(name):
        return sum(numpy_helper.to_array(t).size for t in onnx.load(str(tmp_path / name)).graph.initializer)

    pairs = 2 * 64 * 64  # the two 64-channel convolutions of SMALL_LOCAL's global block
    # the fast graphs also leave out the biases of the convolutions before norms (rewrites.drop_biases_before_norms)
    def biases(model):
        return sum(p.numel() for name, p in model.named_parameters() if name.endswith("bias"))

    without = copy.deepcopy(small_winograd)
    assert drop_biases_before_norms(without) > 0
    dropped = biases(small_winograd) - biases(without)
    assert values("f2.onnx") - values("plain.onnx") == pytest.approx((16 - 9) * pairs - dropped, rel=0.01)
    # (G x G), A and the input transform's kernel (36 of 6x6), shared by the layers
    assert values("f4.onnx") - values("plain.onnx") == 36 * 9 + 16 * 36 + 36 * 36 - dropped
    assert strided_slices(tmp_path / "f4.onnx") == []
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "f4.onnx")).metadata_props}
    assert json.loads(props["pix2pixhd.export"])["winograd_tile"] == 4
    x = seeded_input(36, 1, 64, 128, seed=5)
    a = run_onnxruntime_cpu((tmp_path / "plain.onnx").read_bytes(), "input_concat", x)
    b = run_onnxruntime_cpu((tmp_path / "f4.onnx").read_bytes(), "input_concat", x)
    assert np.abs(a - b).max() <= 1e-4
    ov = pytest.importorskip("openvino")
    compiled = ov.Core().compile_model(str(tmp_path / "f4.onnx"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    kinds = [op.get_rt_info()["layerType"].astype(str) for op in compiled.get_runtime_model().get_ordered_ops()]
    assert kinds.count("FullyConnected") + kinds.count("MatMul") >= 2 * 2 + 2  # 2 layers: filters, products, output
    assert np.abs(compiled({"input_concat": x})[0] - a).max() <= 1e-4


@pytest.mark.parametrize("tile", [2, 4])
def test_odd_tiling_through_onnx(monkeypatch, tmp_path, tile):
    """96x160 with 4 global downsamplings leaves 3x5 at the residual blocks: odd, so the last Winograd tiles are
    completed with zeros and cut off again (1056x2048 does the same to label2city_1024p: 66x128, 66 % 4 = 2)."""
    monkeypatch.setattr(fastconv, "WINOGRAD_MIN_CHANNELS", 64)
    config = GeneratorConfig(input_nc=36, output_nc=3, ngf=4, netG="local", n_downsample_global=4,
                             n_blocks_global=1, n_local_enhancers=1, n_blocks_local=1)
    g = random_generator(config, seed=6).eval()
    report = export_onnx(g, tmp_path / "odd.onnx", height=96, width=160, fast_convs=True, winograd_tile=tile)
    assert report.verified and report.max_abs_error <= (1e-5 if tile == 2 else 1e-4)
    assert any(f"2 Winograd F({tile}x{tile}, 3x3)" in n for n in report.notes)


def test_fast_stems_uint8_graph(small_winograd, tmp_path):
    report = export_onnx(small_winograd, tmp_path / "s.onnx", height=64, width=128, input_format="stems",
                         output_format="uint8", fast_convs=True)
    assert report.verified and report.max_abs_error <= 1


def test_impossible_fast_convs_exports_write_nothing(small_winograd, tmp_path):
    with pytest.raises(UserError, match="static height and width"):
        export_onnx(small_winograd, tmp_path / "x.onnx", height=64, width=128, dynamic_hw=True, fast_convs=True)
    with pytest.raises(UserError, match="fp32 CPU graphs"):
        export_onnx(small_winograd, tmp_path / "x.onnx", height=64, width=128, fp16=True, fast_convs=True)
    for tile in (2, 4):  # asked for by name without --fast-convs, even the default
        with pytest.raises(UserError, match="--winograd-tile applies to --fast-convs"):
            export_onnx(small_winograd, tmp_path / "x.onnx", height=64, width=128, winograd_tile=tile)
    with pytest.raises(UserError, match="--winograd-tile 3 is not built"):
        export_onnx(small_winograd, tmp_path / "x.onnx", height=64, width=128, fast_convs=True, winograd_tile=3)
    with pytest.raises(UserError, match="found nothing to rewrite"):  # padded convolutions only
        export_onnx(nn.Sequential(nn.Conv2d(36, 3, 3, padding=1)), tmp_path / "x.onnx", height=64, width=128,
                    fast_convs=True)
    assert not (tmp_path / "x.onnx").exists()


def test_torch_runner_leaves_the_callers_model_alone():
    g = random_generator(SMALL_LOCAL, seed=2).eval()
    x = torch.from_numpy(seeded_input(36, 1, 64, 128))
    with TorchRunner(model=g, config=SMALL_LOCAL, device="cpu", fast_convs=True) as runner:
        assert any(isinstance(m, RowSumConv) for m in runner.generator.modules())
        fast = runner.infer(x.numpy())
    assert not any(isinstance(m, (RowSumConv, WinogradConv3x3)) for m in g.modules())
    with torch.inference_mode():
        assert np.abs(g(x).numpy() - fast).max() <= 1e-5


def test_run_fast_convs_torch_and_its_errors(small_checkpoint, scene_dataroot, tmp_path):
    ckpt = small_checkpoint / "latest_net_G.pth"
    run_cli(["pix2pixhd-deploy", "run", "--dataroot", scene_dataroot, "--checkpoint", ckpt,
             "--output", tmp_path / "plain", "--backend", "torch"])
    run_cli(["pix2pixhd-deploy", "run", "--dataroot", scene_dataroot, "--checkpoint", ckpt,
             "--output", tmp_path / "fast", "--fast-convs"])
    manifest = json.loads((tmp_path / "fast" / "manifest.json").read_text())
    assert manifest["settings"]["fast_convs"] is True and manifest["identity"]["fast_convs"] is True
    from PIL import Image
    pictures = sorted((tmp_path / "plain" / "images").glob("*_synthesized_image.png"))
    assert len(pictures) == 3
    for p in pictures:
        a = np.asarray(Image.open(p), dtype=np.int16)
        b = np.asarray(Image.open(tmp_path / "fast" / "images" / p.name), dtype=np.int16)
        assert np.abs(a - b).max() <= 1
    # resuming the fast folder without the flag would mix outputs: refused
    proc = run_cli(["pix2pixhd-deploy", "run", "--dataroot", scene_dataroot, "--checkpoint", ckpt,
                    "--output", tmp_path / "fast", "--backend", "torch"], check=False)
    assert proc.returncode != 0 and "fast_convs: True -> None" in proc.stderr
    # an ONNX graph gets its fast convolutions at export
    export_onnx(ckpt, tmp_path / "g.onnx", height=64, width=128, verify=False)
    proc = run_cli(["pix2pixhd-deploy", "run", "--dataroot", scene_dataroot, "--model", tmp_path / "g.onnx",
                    "--output", tmp_path / "onnx", "--fast-convs"], check=False)
    assert proc.returncode != 0 and "export --fast-convs" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "onnx").exists()
