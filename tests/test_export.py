"""ONNX export: every graph proven against PyTorch (opsets, batch axes, sizes, the pool rewrite, fp16), the atc
commands, atomic writes, and the seed's ``pix2pixhd_pth2onnx.py`` command line."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import SMALL_LOCAL, rng_input, run_cli
from torch import nn

from pix2pixhd_deploy import export as ex
from pix2pixhd_deploy.compare.metrics import preset_tolerance, psnr
from pix2pixhd_deploy.errors import UserError
from pix2pixhd_deploy.model.network import LoadedGenerator, random_generator
from pix2pixhd_deploy.runners import OnnxRuntimeRunner

onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install 'pix2pixhd-deploy[onnx]')")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install onnxruntime)")

H, W = 64, 128


@pytest.fixture(scope="module")
def generator():
    return LoadedGenerator(random_generator(SMALL_LOCAL, seed=5), SMALL_LOCAL)


def torch_out(generator, x):
    with torch.inference_mode():
        return generator.model(torch.from_numpy(x)).numpy()


def ort_out(path, x):
    with OnnxRuntimeRunner(path) as runner:
        return runner.infer(x)


def small_export(generator, path, **kw):
    return ex.export_onnx(generator, path, height=kw.pop("height", H), width=kw.pop("width", W), **kw)


# ------------------------------------------------------------------------------------- ORT vs PyTorch

@pytest.mark.parametrize("opset", [11, 13, 17])
def test_opsets_match_pytorch(generator, tmp_path, opset):
    path = tmp_path / f"g{opset}.onnx"
    report = small_export(generator, path, opset=opset)
    assert report.verified and report.max_abs_error <= 1e-4
    model = onnx.load(str(path))
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {opset}
    assert [i.name for i in model.graph.input] == ["input_concat"]
    assert [o.name for o in model.graph.output] == ["fake_image"]
    x = rng_input((1, 36, H, W), seed=opset)  # another input than the export's own check
    assert np.abs(ort_out(path, x) - torch_out(generator, x)).max() <= 1e-4


def test_dynamic_batch_runs_1_and_3(generator, tmp_path):
    path = tmp_path / "dyn.onnx"
    report = small_export(generator, path)
    assert report.input_shape == (None, 36, H, W) and report.dynamic_batch
    dim = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param == "-1"  # the seed's symbolic name
    with OnnxRuntimeRunner(path) as runner:
        assert runner.input_spec().shape == (None, 36, H, W)
        for n in (1, 3):
            x = rng_input((n, 36, H, W), seed=n)
            assert np.abs(runner.infer(x) - torch_out(generator, x)).max() <= 1e-4


def test_static_batch(generator, tmp_path):
    path = tmp_path / "bs2.onnx"
    report = small_export(generator, path, dynamic_batch=False, batch=2)
    assert report.input_shape == (2, 36, H, W) and report.verify_shape == (2, 36, H, W)
    assert len(report.atc_commands) == 1 and '"input_concat:2,36,64,128"' in report.atc_commands[0]
    x = rng_input((2, 36, H, W), seed=7)
    with OnnxRuntimeRunner(path) as runner:
        assert runner.input_spec().batch == 2
        assert np.abs(runner.infer(x) - torch_out(generator, x)).max() <= 1e-4
        with pytest.raises(UserError, match="axis 0"):
            runner.infer(x[:1])


def test_dynamic_height_and_width(generator, tmp_path):
    path = tmp_path / "dynhw.onnx"
    report = small_export(generator, path, dynamic_hw=True)
    assert report.input_shape == (None, 36, None, None) and report.output_shape == (None, 3, None, None)
    for h, w in ((32, 64), (96, 160), (64, 128)):
        x = rng_input((1, 36, h, w), seed=h)
        assert np.abs(ort_out(path, x) - torch_out(generator, x)).max() <= 1e-4


def test_input_and_output_names(generator, tmp_path):
    path = tmp_path / "names.onnx"
    small_export(generator, path, input_name="label", output_name="image", opset=13)
    model = onnx.load(str(path))
    assert model.graph.input[0].name == "label" and model.graph.output[0].name == "image"
    with pytest.raises(UserError, match="two different"):
        small_export(generator, tmp_path / "x.onnx", input_name="a", output_name="a")


def test_reflection_pad_is_one_constant_pad(generator, tmp_path):
    path = tmp_path / "pad.onnx"
    report = small_export(generator, path)
    n_pads = sum(isinstance(m, nn.ReflectionPad2d) for m in generator.model.modules())
    assert report.ops["Pad"] == n_pads
    assert not {"Slice", "Transpose", "ConstantOfShape", "Cast"} & set(report.ops)


# ------------------------------------------------------------------------------------------ pool rewrite

@pytest.mark.parametrize("hw", [(64, 128), (7, 9), (1, 1), (2, 3), (33, 64)])
@pytest.mark.parametrize("static_hw", [True, False], ids=["static", "dynamic"])
def test_exact_avgpool_equals_torch(hw, static_hw):
    pool = nn.AvgPool2d(3, stride=2, padding=[1, 1], count_include_pad=False)
    exact = ex.ExactAvgPool2d(pool, 36, static_hw=static_hw)
    x = torch.from_numpy(rng_input((2, 36, *hw), seed=hw[0])) + torch.rand(2, 36, *hw)
    want, got = pool(x), exact(x)
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= 1e-6


@pytest.mark.parametrize("dynamic_hw", [False, True], ids=["static-hw", "dynamic-hw"])
def test_pool_rewrite_in_onnx_equals_original(generator, tmp_path, dynamic_hw):
    plain = tmp_path / "plain.onnx"
    rewritten = tmp_path / "rewritten.onnx"
    before = small_export(generator, plain, dynamic_hw=dynamic_hw)
    report = small_export(generator, rewritten, rewrite_avgpool=True, dynamic_hw=dynamic_hw)
    assert "AveragePool" not in report.ops and report.ops["Div"] == before.ops.get("Div", 0) + 1
    assert report.max_abs_error <= 1e-4 and not any("count_include_pad" in n for n in report.notes)
    x = rng_input((2, 36, H, W), seed=11)
    a, b = ort_out(plain, x), ort_out(rewritten, x)
    assert np.abs(a - b).max() <= 1e-5
    assert np.abs(b - torch_out(generator, x)).max() <= 1e-4


# --------------------------------------------------------------------------------------------------- fp16

def test_fp16_psnr_and_instance_norm_in_fp32(generator, tmp_path):
    path = tmp_path / "fp16.onnx"
    report = small_export(generator, path, fp16=True)
    assert report.fp16 and report.psnr_db >= 40.0
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    elem = onnx.TensorProto
    assert model.graph.input[0].type.tensor_type.elem_type == elem.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == elem.FLOAT
    types = {v.name: v.type.tensor_type.elem_type for v in list(model.graph.value_info) + list(model.graph.input)}
    inits = {i.name: i.data_type for i in model.graph.initializer}
    norms = [n for n in model.graph.node if n.op_type == "InstanceNormalization"]
    assert norms and all(types.get(n.input[0]) == elem.FLOAT for n in norms)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert all(inits.get(n.input[1]) == elem.FLOAT16 for n in convs)
    x = rng_input((1, 36, H, W), seed=13)
    fp32 = torch_out(generator, x)
    assert psnr(fp32, ort_out(path, x), 2.0) >= 40.0


def test_fp16_below_min_psnr_fails(generator, tmp_path):
    with pytest.raises(UserError, match="PSNR"):
        small_export(generator, tmp_path / "fp16.onnx", fp16=True, min_psnr=1000.0)
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------- failure, atomic writes

def test_failed_check_writes_nothing_and_keeps_the_old_file(generator, tmp_path):
    path = tmp_path / "g.onnx"
    path.write_bytes(b"previous export")
    with pytest.raises(UserError, match="max abs error .* > tolerance 0"):
        small_export(generator, path, tolerance=0.0)
    assert path.read_bytes() == b"previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["g.onnx"]  # no temporary left behind


def test_impossible_settings_are_user_errors(generator, tmp_path):
    with pytest.raises(UserError, match="opset 10"):
        small_export(generator, tmp_path / "a.onnx", opset=10)
    with pytest.raises(UserError, match="multiples of 8"):
        small_export(generator, tmp_path / "a.onnx", height=60)
    with pytest.raises(UserError, match="at least 1"):
        small_export(generator, tmp_path / "a.onnx", dynamic_batch=False, batch=0)
    assert not list(tmp_path.iterdir())


def test_the_check_uses_compares_tolerance_rule():
    """One rule: what the export accepts, compare accepts (its presets, at every size)."""
    fp32 = ex.ExportOptions()
    assert ex.check_tolerance(fp32, fused_norms=False)[:2] == (preset_tolerance("fp32", "raw"), "raw")
    assert preset_tolerance("fp32", "raw").atol == 1e-4
    assert ex.check_tolerance(ex.ExportOptions(exact_norm=False), fused_norms=True)[:2] == (
        preset_tolerance("fp32", "levels"), "levels")
    assert ex.check_tolerance(ex.ExportOptions(output_format="uint8"), fused_norms=False)[:2] == (
        preset_tolerance("fp32", "levels"), "levels")
    assert ex.check_tolerance(ex.ExportOptions(fp16=True), fused_norms=True)[:2] == (
        preset_tolerance("fp16", "raw"), "raw")
    assert ex.check_tolerance(ex.ExportOptions(tolerance=3e-4), fused_norms=True)[0].atol == 3e-4


def test_seeded_input_is_realistic():
    x = ex.seeded_input(36, 2, 64, 128, seed=1)
    assert x.dtype == np.float32 and x.shape == (2, 36, 64, 128)
    assert np.array_equal(x[:, :35].sum(axis=1), np.ones((2, 64, 128)))  # one label per pixel
    assert 0.01 < x[:, 35].mean() < 0.5 and set(np.unique(x)) == {0.0, 1.0}
    assert np.array_equal(x, ex.seeded_input(36, 2, 64, 128, seed=1))


# ------------------------------------------------------------------------------------------ atc commands

def test_atc_commands_match_the_seed():
    cmds = ex.atc_commands("pix2pixhd.onnx", input_name="input_concat", channels=36, height=1024, width=2048,
                           batch=None, soc_version="Ascend310P3")
    # the seed README's command, with the chip name filled in
    assert cmds[0] == ('atc --framework=5 --model=pix2pixhd.onnx --input_format=NCHW '
                       '--input_shape="input_concat:1,36,1024,2048" --output=pix2pixhd_bs1 --log=error '
                       '--soc_version=Ascend310P3')
    assert [c.split("--output=")[1].split()[0] for c in cmds] == ["pix2pixhd_bs1", "pix2pixhd_bs4",
                                                                  "pix2pixhd_bs8", "pix2pixhd_dynbs"]
    assert '"input_concat:-1,36,1024,2048"' in cmds[3] and cmds[3].endswith('--dynamic_batch_size="1,4,8"')
    static = ex.atc_commands("out/my model.onnx", input_name="x", channels=36, height=512, width=1024, batch=4,
                             soc_version="Ascend910B")
    assert static == ["atc --framework=5 --model='out/my model.onnx' --input_format=NCHW "
                      "--input_shape=\"x:4,36,512,1024\" --output='out/my model_bs4' --log=error "
                      "--soc_version=Ascend910B"]


# --------------------------------------------------------------------------------------- command line

def test_seed_pth2onnx_command_line(small_checkpoint, tmp_path):
    """The seed's command (``--load_pretrain DIR/ --output_file FILE``) plus a small static size for speed."""
    proc = run_cli(["pix2pixhd_pth2onnx.py", "--load_pretrain", f"{small_checkpoint}/", "--output_file",
                    "pix2pixhd.onnx", "--height", "64", "--width", "128", "--soc_version", "Ascend310P3",
                    "--report", "report.json"], cwd=tmp_path)
    assert (tmp_path / "pix2pixhd.onnx").is_file()
    assert "max abs error" in proc.stdout and "tolerance 0.0001" in proc.stdout
    assert ('atc --framework=5 --model=pix2pixhd.onnx --input_format=NCHW '
            '--input_shape="input_concat:1,36,64,128" --output=pix2pixhd_bs1 --log=error '
            '--soc_version=Ascend310P3') in proc.stdout
    assert "--dynamic_batch_size=" in proc.stdout and "--rewrite-avgpool" in proc.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["max_abs_error"] <= 1e-4 and report["opset"] == 11 and report["input_shape"][0] is None
    # the written graph against the checkpoint, recomputed here rather than taken from the report
    from pix2pixhd_deploy.model.network import load_generator

    loaded = load_generator(small_checkpoint)
    x = rng_input((2, 36, 64, 128), seed=11)
    want = torch_out(loaded, x)
    assert np.abs(ort_out(tmp_path / "pix2pixhd.onnx", x) - want).max() <= 1e-4

    proc = run_cli(["pix2pixhd-deploy", "export", "--load_pretrain", str(small_checkpoint / "latest_net_G.pth"),
                    "--output_file", "bs4.onnx", "--static-batch", "4", "--height", "64", "--width", "128",
                    "--rewrite-avgpool", "--fp16", "--opset", "13"], cwd=tmp_path)
    assert "PSNR" in proc.stdout and "--output=bs4_bs4" in proc.stdout
    assert "--dynamic_batch_size" not in proc.stdout
    x4 = rng_input((4, 36, 64, 128), seed=12)
    assert psnr(torch_out(loaded, x4), ort_out(tmp_path / "bs4.onnx", x4), 2.0) >= 40.0  # fp16: the flag's promise


@pytest.mark.parametrize("args, message", [
    (["--opset", "9"], "opset 9 is not supported"),
    (["--height", "100"], "multiples of 8"),
])
def test_export_command_errors_are_one_line(small_checkpoint, tmp_path, args, message):
    proc = run_cli(["pix2pixhd_pth2onnx.py", "--load_pretrain", str(small_checkpoint), "--output_file", "x.onnx",
                    "--height", "64", "--width", "128", *args], cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert message in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "x.onnx").exists()


def test_missing_checkpoint_folder_is_one_line(tmp_path):
    proc = run_cli(["pix2pixhd_pth2onnx.py", "--load_pretrain", "./nowhere/", "--output_file", "x.onnx"],
                   cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "latest_net_G.pth" in proc.stderr


@pytest.mark.slow
def test_full_size_label2city_export(tmp_path):
    """The real architecture at the seed's 1024x2048 with default settings: checked in ONNX Runtime at full size."""
    from pix2pixhd_deploy.model.network import LABEL2CITY_1024P, save_checkpoint

    save_checkpoint(random_generator(LABEL2CITY_1024P, seed=2), tmp_path / "ck" / "latest_net_G.pth")
    proc = run_cli(["pix2pixhd_pth2onnx.py", "--load_pretrain", "./ck/", "--output_file", "pix2pixhd.onnx",
                    "--report", "r.json"], cwd=tmp_path)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["verify_shape"] == [1, 36, 1024, 2048] and report["tolerance"] == 1e-4
    assert report["exact_norm"] and report["verify_input"].startswith("a street scene")
    assert report["max_abs_error"] <= 1e-4  # measured 3.05e-5; 6.44e-3 with --fused-norm (one-pass float32 sums)
    assert '--input_shape="input_concat:1,36,1024,2048"' in proc.stdout


def test_global_generator_exports(tmp_path):
    """netG=global (label2city_512p's layout) has no average pool: nothing to rewrite, nothing to warn about."""
    from pix2pixhd_deploy.model.network import GeneratorConfig

    cfg = GeneratorConfig(input_nc=36, ngf=8, netG="global", n_downsample_global=2, n_blocks_global=1,
                          n_local_enhancers=0, n_blocks_local=0)
    report = ex.export_onnx(LoadedGenerator(random_generator(cfg, seed=4), cfg), tmp_path / "g.onnx", height=32,
                            width=64, rewrite_avgpool=True, exact_norm=False)
    assert report.max_abs_error <= 1e-4 and "AveragePool" not in report.ops and "Div" not in report.ops
    assert not report.notes


# ------------------------------------------------------------------------------ precise norms by default

def test_default_is_precise_norms_fused_is_the_opt_out(generator, tmp_path):
    default = small_export(generator, tmp_path / "d.onnx")
    fused = small_export(generator, tmp_path / "f.onnx", exact_norm=False)
    assert default.exact_norm and "InstanceNormalization" not in default.ops and default.tolerance_units == "raw"
    assert not fused.exact_norm and fused.ops["InstanceNormalization"] == default.ops["ReduceSum"] // 4
    # the fused graph is held to compare's picture rule (ONNX Runtime's one-pass sums cost up to a level)
    assert fused.tolerance_units == "levels" and fused.tolerance == 1.0 and fused.max_level_diff <= 1
    assert default.verify_input == "a street scene (seed 0)" and default.max_abs_error <= 1e-4
    # where precise norms cannot go (dynamic H/W, fp16) the default quietly keeps the fused op
    assert "InstanceNormalization" in small_export(generator, tmp_path / "h.onnx", dynamic_hw=True).ops


def test_check_on_a_real_map_pair(generator, tmp_path):
    from pix2pixhd_deploy.data.synthetic import make_scene
    from pix2pixhd_deploy.fileio import atomic_save_image

    label, inst = make_scene(H, W, seed=9)
    atomic_save_image(tmp_path / "l.png", label)
    atomic_save_image(tmp_path / "i.png", inst)
    report = small_export(generator, tmp_path / "g.onnx", check_map=tmp_path / "l.png", check_inst=tmp_path / "i.png")
    assert report.verify_input == "the map l.png" and report.max_abs_error <= 1e-4
    with pytest.raises(UserError, match="the check map is 128x64, but the graph is checked at 256x128"):
        small_export(generator, tmp_path / "big.onnx", height=128, width=256, check_map=tmp_path / "l.png")
    with pytest.raises(UserError, match="--check-inst needs --check-map"):
        ex.ExportOptions(check_inst=tmp_path / "i.png")
    assert not (tmp_path / "big.onnx").exists()


def test_export_command_fused_norm_check_map_and_cann_warning(small_checkpoint, tmp_path):
    from pix2pixhd_deploy.data.synthetic import make_scene
    from pix2pixhd_deploy.fileio import atomic_save_image

    label, inst = make_scene(H, W, seed=3)
    atomic_save_image(tmp_path / "l.png", label)
    atomic_save_image(tmp_path / "i.png", inst)
    proc = run_cli(["pix2pixhd_pth2onnx.py", "--load_pretrain", small_checkpoint, "--output_file", "g.onnx",
                    "--height", "64", "--width", "128", "--fused-norm", "--opset", "14", "--check-map", "l.png",
                    "--check-inst", "i.png"], cwd=tmp_path)
    assert "InstanceNormalization" in proc.stdout and "on the map l.png" in proc.stdout
    assert "within one level" in proc.stdout
    assert "CANN 7" in proc.stderr and "CANN 7" in proc.stdout  # a warning, and a note in the report
    proc = run_cli(["pix2pixhd_pth2onnx.py", "--load_pretrain", small_checkpoint, "--output_file", "x.onnx",
                    "--exact-norm", "--fused-norm"], cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "not allowed with" in proc.stderr
