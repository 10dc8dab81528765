"""compare: the metrics on known cases, the verdicts where the tolerances put them, pairing, the CLI, upstream."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from pix2pixhd_deploy.compare.compare import compare_dirs
from pix2pixhd_deploy.compare.folders import output_stem
from pix2pixhd_deploy.compare.metrics import compare_arrays, preset_tolerance, psnr, ssim
from pix2pixhd_deploy.errors import UserError
from pix2pixhd_deploy.seed.postprocess import tensor2im


def raw_output(seed=0, h=32, w=64):
    return np.random.default_rng(seed).uniform(-0.95, 0.95, (3, h, w)).astype(np.float32)


def smooth_picture(h=64, w=128):
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([120 + 80 * np.sin(x / 9.0), 100 + 60 * np.cos(y / 7.0), 40 + (x + y) * 0.8], axis=-1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def write_bins(folder, arrays):
    folder.mkdir(parents=True, exist_ok=True)
    for stem, arr in arrays.items():
        arr.tofile(folder / f"{stem}_0.bin")
    return folder


def write_pictures(folder, pictures, suffix="_0generated.png", **save):
    folder.mkdir(parents=True, exist_ok=True)
    for stem, pic in pictures.items():
        Image.fromarray(pic).save(folder / f"{stem}{suffix}", **save)
    return folder


# ------------------------------------------------------------------------------------------- metrics

def test_identical_outputs_give_infinite_psnr_and_no_error():
    a = raw_output()
    result, diff = compare_arrays(a, a.copy(), "raw")
    assert result.max_abs == result.mean_abs == result.median_abs == 0.0
    assert math.isinf(result.psnr_db) and result.ssim == pytest.approx(1.0)
    assert result.differing_share == result.over_one_level_share == 0.0 and result.max_level_diff == 0
    assert not diff.any()


def test_gaussian_noise_gives_its_psnr():
    rng = np.random.default_rng(1)
    a = rng.uniform(-0.9, 0.9, (3, 256, 512))
    sigma = 0.01
    b = a + rng.normal(0, sigma, a.shape)
    # raw outputs: peak-to-peak 2.0, so PSNR = 10 log10(4 / sigma^2) = 46.02 dB
    assert psnr(a, b, 2.0) == pytest.approx(10 * math.log10(4 / sigma ** 2), abs=0.03)
    result, _ = compare_arrays(a.astype(np.float32), b.astype(np.float32), "raw")
    assert result.psnr_db == pytest.approx(46.02, abs=0.03)
    assert result.mean_abs == pytest.approx(sigma * math.sqrt(2 / math.pi), rel=0.01)  # E|N(0, s)| = s sqrt(2/pi)
    # levels: peak 255; sigma 5 levels -> 10 log10(255^2 / 25) = 34.15 dB
    levels = rng.uniform(40, 215, (3, 256, 512))
    assert psnr(levels, levels + rng.normal(0, 5, levels.shape), 255.0) == pytest.approx(34.15, abs=0.03)


def test_ssim_equals_scikit_image():
    """Values from scikit-image 0.26.0 ``structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=..., channel_axis=...)`` on these seeded arrays."""
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 255, (40, 70, 3))
    b = np.clip(a + rng.normal(0, 20, a.shape), 0, 255)
    assert ssim(a.transpose(2, 0, 1), b.transpose(2, 0, 1), 255) == pytest.approx(0.9658384362317823, abs=1e-12)
    y, x = np.mgrid[0:48, 0:96]
    c = np.stack([np.sin(x / 7.0) * 100 + 120, np.cos(y / 5.0) * 80 + 100, (x + y) * 1.0], 2)
    d = c + rng.normal(0, 5, c.shape)
    assert ssim(c.transpose(2, 0, 1), d.transpose(2, 0, 1), 255) == pytest.approx(0.8709631624136548, abs=1e-12)
    r = rng.uniform(-1, 1, (3, 32, 64))
    assert ssim(r, r * 0.9 + 0.05, 2.0) == pytest.approx(0.558430036385519, abs=1e-12)
    assert ssim(np.zeros((5, 5)), np.zeros((5, 5)), 1.0) is None  # smaller than the 11-pixel window


def test_ssim_against_scikit_image_when_installed():
    metrics = pytest.importorskip("skimage.metrics", reason="scikit-image is not installed (the test extra has it)")
    rng = np.random.default_rng(7)
    a = rng.uniform(0, 255, (3, 33, 47))
    b = np.clip(a + rng.normal(0, 12, a.shape), 0, 255)
    want = metrics.structural_similarity(a, b, data_range=255, gaussian_weights=True, sigma=1.5,
                                         use_sample_covariance=False, channel_axis=0)
    assert ssim(a, b, 255) == pytest.approx(want, abs=1e-12)


def test_one_pixel_change_and_where_the_verdict_flips(tmp_path):
    pic = smooth_picture()
    changed = pic.copy()
    changed[10, 20, 1] = min(255, int(changed[10, 20, 1]) + 2)
    result, diff = compare_arrays(pic, changed, "levels")
    assert result.max_abs == 2 and result.max_level_diff == 2
    assert result.over_one_level_share == result.differing_share == 1 / (64 * 128)
    assert diff[10, 20] == 2 and np.count_nonzero(diff) == 1

    write_pictures(tmp_path / "a", {"x": pic})
    write_pictures(tmp_path / "b", {"x": changed}, suffix="_synthesized_image.png")
    strict = compare_dirs(tmp_path / "a", tmp_path / "b", show_progress=False)
    assert strict.tolerance == preset_tolerance("fp32", "levels") and not strict.passed
    lines = "\n".join(strict.lines())
    assert "max_abs 2 > 1" in lines and "--atol 2 would pass" in lines
    assert "--max-diff-share 1.221e-04 would pass" in lines
    loose = compare_dirs(tmp_path / "a", tmp_path / "b", atol=2, max_diff_share=1e-3, show_progress=False)
    assert loose.passed
    # one level off is within the fp32 tolerance for pictures (truncation can move a value across a level)
    changed[10, 20, 1] = pic[10, 20, 1] + 1
    write_pictures(tmp_path / "b", {"x": changed}, suffix="_synthesized_image.png")
    assert compare_dirs(tmp_path / "a", tmp_path / "b", show_progress=False).passed


def test_raw_fp32_tolerance_flips_at_1e_4(tmp_path):
    a = raw_output(seed=2)
    write_bins(tmp_path / "a", {"s": a})
    for delta, passes in ((5e-5, True), (2e-4, False)):
        b = a.copy()
        b[0, 3, 4] += np.float32(delta)
        write_bins(tmp_path / f"b{delta}", {"s": b})
        result = compare_dirs(tmp_path / "a", tmp_path / f"b{delta}", show_progress=False)
        assert result.units == "raw" and result.tolerance.atol == 1e-4
        assert result.passed is passes
        if not passes:
            check = result.checks[0]
            assert check.figure == "max_abs" and check.would_pass == pytest.approx(2e-4, rel=1e-3)


def test_fp16_outputs_pass_fp16_and_fail_fp32(tmp_path):
    a = np.tanh(raw_output(seed=3, h=64, w=128) * 2)
    half = a.astype(np.float16).astype(np.float32)
    write_bins(tmp_path / "fp32", {"s": a})
    write_bins(tmp_path / "fp16", {"s": half})
    assert not compare_dirs(tmp_path / "fp16", tmp_path / "fp32", show_progress=False).passed
    fp16 = compare_dirs(tmp_path / "fp16", tmp_path / "fp32", preset="fp16", show_progress=False)
    assert fp16.passed and fp16.images[0].psnr_db > 60
    assert compare_dirs(tmp_path / "fp16", tmp_path / "fp32", preset="fp16", min_psnr=200,
                        show_progress=False).passed is False


def test_jpeg_is_judged_by_psnr_and_ssim(tmp_path):
    pic = smooth_picture()
    write_pictures(tmp_path / "png", {"x": pic})
    write_pictures(tmp_path / "jpg", {"x": pic}, suffix="_synthesized_image.jpg")  # Pillow's q75, as test.py
    result = compare_dirs(tmp_path / "png", tmp_path / "jpg", show_progress=False)
    assert result.tolerance.preset == "jpeg" and "JPEG" in result.preset_reason
    assert result.passed, result.lines()
    assert 30 < result.images[0].psnr_db < 60 and result.images[0].ssim > 0.9
    assert not compare_dirs(tmp_path / "png", tmp_path / "jpg", min_ssim=0.9999, show_progress=False).passed


# ------------------------------------------------------------------------------------------- pairing

@pytest.mark.parametrize("name, stem", [
    ("frankfurt_000000_000576_gtFine_labelIds_0.bin", "frankfurt_000000_000576_gtFine_labelIds"),
    ("frankfurt_000000_000576_gtFine_labelIds_0generated.png", "frankfurt_000000_000576_gtFine_labelIds"),
    ("frankfurt_000000_000576_gtFine_labelIds_synthesized_image.jpg", "frankfurt_000000_000576_gtFine_labelIds"),
    ("pure_infer_data_0.npy", "pure_infer_data"),
])
def test_output_names_reduce_to_the_label_stem(name, stem):
    assert output_stem(name) == stem


def test_raw_folder_against_pictures_is_compared_in_levels(tmp_path):
    arrays = {f"c_{i}_gtFine_labelIds": raw_output(seed=i, h=32, w=96) for i in range(3)}  # not 1:2: size from B
    write_bins(tmp_path / "bins", arrays)
    pics = {k: tensor2im(v) for k, v in arrays.items()}
    write_pictures(tmp_path / "images", pics, suffix="_synthesized_image.png")
    write_pictures(tmp_path / "images", pics, suffix="_input_label.png")  # upstream's other pictures: ignored
    result = compare_dirs(tmp_path / "bins", tmp_path / "images", show_progress=False)
    assert result.units == "levels" and result.passed and len(result.images) == 3
    assert [i.name for i in result.images] == sorted(arrays)
    assert all(i.max_abs == 0 and (i.height, i.width) == (32, 96) for i in result.images)


def test_unpaired_and_duplicate_files(tmp_path):
    write_bins(tmp_path / "a", {"x1": raw_output(1), "x2": raw_output(2), "x3": raw_output(3)})
    write_bins(tmp_path / "b", {"x1": raw_output(1), "x4": raw_output(4)})
    with pytest.raises(UserError, match=r"2 only in A \(x2_0.bin, x3_0.bin\); 1 only in B \(x4_0.bin\).*"
                                        r"--allow-missing"):
        compare_dirs(tmp_path / "a", tmp_path / "b", show_progress=False)
    result = compare_dirs(tmp_path / "a", tmp_path / "b", allow_missing=True, show_progress=False)
    assert result.passed and result.only_a == ["x2", "x3"] and result.only_b == ["x4"]
    write_pictures(tmp_path / "b", {"x1": tensor2im(raw_output(1))})
    with pytest.raises(UserError, match="same image 'x1'"):
        compare_dirs(tmp_path / "a", tmp_path / "b", show_progress=False)
    write_bins(tmp_path / "c", {"y": raw_output(1)})
    with pytest.raises(UserError, match="no image is in both folders"):
        compare_dirs(tmp_path / "a", tmp_path / "c", show_progress=False)
    write_bins(tmp_path / "d", {"x1": raw_output(1, h=16, w=32)})
    with pytest.raises(UserError, match="A is 64x32 but B is 32x16"):
        compare_dirs(tmp_path / "a", tmp_path / "d", allow_missing=True, show_progress=False)


def test_invalid_outputs_are_refused_not_passed(tmp_path):
    """A NaN would make every comparison false, and so pass every limit: it is an error instead."""
    good = raw_output(1)
    write_bins(tmp_path / "a", {"x": good})
    bad = good.copy()
    bad[0, 0, 0] = np.nan
    (tmp_path / "npy").mkdir()
    np.save(tmp_path / "npy" / "x_0.npy", bad)
    with pytest.raises(UserError, match="x_0.npy: the output holds 1 NaN"):
        compare_dirs(tmp_path / "a", tmp_path / "npy", show_progress=False)
    write_bins(tmp_path / "bin", {"x": bad})
    with pytest.raises(UserError, match="x_0.bin: the output holds 1 NaN"):
        compare_dirs(tmp_path / "a", tmp_path / "bin", show_progress=False)
    (tmp_path / "pic").mkdir()
    (tmp_path / "pic" / "x_0generated.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="x_0generated.png: not a picture"):
        compare_dirs(tmp_path / "a", tmp_path / "pic", show_progress=False)


# ----------------------------------------------------------------------------------------------- CLI

def test_cli_exit_status_json_and_report(tmp_path, scene_dataroot):
    a = raw_output(seed=5, h=64, w=128)
    b = a.copy()
    b[:, 5:9, 5:9] += 0.2
    names = [p.name.replace(".png", "") for p in sorted((scene_dataroot / "test_label").iterdir())]
    write_bins(tmp_path / "a", {names[0]: a})
    write_bins(tmp_path / "b", {names[0]: b})
    proc = run_cli(["pix2pixhd-deploy", "compare", tmp_path / "a", tmp_path / "b", "--json", tmp_path / "c.json",
                    "--report", tmp_path / "report", "--dataroot", scene_dataroot, "--allow-missing"], check=False)
    assert proc.returncode == 1, proc.stderr
    assert "verdict: FAIL" in proc.stdout and "preset fp32 (both folders hold raw float32 outputs)" in proc.stdout
    data = json.loads((tmp_path / "c.json").read_text())
    image = data["images"][0]
    assert data["passed"] is False and data["units"] == "raw" and data["tolerance"]["atol"] == 1e-4
    assert image["max_abs"] == pytest.approx(0.2, rel=1e-5)
    assert image["over_one_level_share"] == pytest.approx(16 / (64 * 128))
    assert {"psnr_db", "ssim", "mean_abs", "median_abs", "differing_share", "failures"} <= set(image)
    assert 0.2 <= data["checks"][0]["would_pass"] <= 0.2001
    html = (tmp_path / "report" / "index.html").read_text()
    assert "FAIL" in html and f"{names[0]}_label.png" in html
    assert len(list((tmp_path / "report" / "images").glob("*.png"))) == 4

    proc = run_cli(["pix2pixhd-deploy", "compare", tmp_path / "a", tmp_path / "b", "--atol", "0.25",
                    "--json", tmp_path / "ok.json"])
    assert "verdict: PASS" in proc.stdout and "overridden: --atol 0.25" in proc.stdout
    assert json.loads((tmp_path / "ok.json").read_text())["passed"] is True

    proc = run_cli(["pix2pixhd-deploy", "compare", tmp_path / "a", tmp_path / "missing"], check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    proc = run_cli(["pix2pixhd-deploy", "compare", tmp_path / "a"], check=False)
    assert proc.returncode == 2 and "compare needs two folders" in proc.stderr


def test_reference_upstream_matches_our_runtime(tmp_path, scene_dataroot, small_checkpoint):
    """Our file-driven chain (preprocess, infer with the torch runner) against NVIDIA's own code on the same data."""
    from conftest import import_upstream

    from pix2pixhd_deploy.runners import TorchRunner
    from pix2pixhd_deploy.seed.infer import run_inference
    from pix2pixhd_deploy.seed.preprocess import preprocess_dataset

    import_upstream("pix2pixhd.models.networks")  # skips when NVIDIA's code is not installed
    preprocess_dataset(scene_dataroot, tmp_path / "prep")
    with TorchRunner(small_checkpoint, device="cpu") as runner:
        run_inference(runner, inputs=str(tmp_path / "prep"), output=tmp_path / "result", output_dirname="bs1",
                      show_progress=False)
    proc = run_cli(["pix2pixhd-deploy", "compare", tmp_path / "result" / "bs1", tmp_path / "upstream",
                    "--reference", "upstream", "--checkpoint", small_checkpoint, "--dataroot", scene_dataroot,
                    "--json", tmp_path / "up.json"])
    assert "3 pictures made by NVIDIA's code" in proc.stdout and "verdict: PASS" in proc.stdout
    data = json.loads((tmp_path / "up.json").read_text())
    assert data["units"] == "levels" and data["images_compared"] == 3
    assert data["summary"]["max_abs"]["worst"] <= 1 and data["summary"]["over_one_level_share"]["worst"] == 0
    assert sorted(p.name for p in (tmp_path / "upstream").iterdir()) == [
        f"city_000000_{i:06d}_gtFine_labelIds_synthesized_image.png" for i in range(3)]

    proc = run_cli(["pix2pixhd-deploy", "compare", tmp_path / "result" / "bs1", "--reference", "upstream",
                    "--checkpoint", small_checkpoint], check=False)
    assert proc.returncode == 2 and "--reference upstream needs --checkpoint and --dataroot" in proc.stderr


def test_onnx_runtime_against_torch_passes_fp32(tmp_path, scene_dataroot, small_checkpoint):
    """Two runners' raw outputs, as a user makes them with infer, judged by the default fp32 preset."""
    pytest.importorskip("onnxruntime")
    from pix2pixhd_deploy.export import export_onnx
    from pix2pixhd_deploy.runners import make_runner
    from pix2pixhd_deploy.seed.infer import run_inference
    from pix2pixhd_deploy.seed.preprocess import preprocess_dataset

    preprocess_dataset(scene_dataroot, tmp_path / "prep")
    export_onnx(small_checkpoint, tmp_path / "g.onnx", height=64, width=128)
    for name, model in (("torch", small_checkpoint), ("onnx", tmp_path / "g.onnx")):
        with make_runner(model, device="cpu") as runner:
            run_inference(runner, inputs=str(tmp_path / "prep"), output=tmp_path / "result", output_dirname=name,
                          show_progress=False)
    result = compare_dirs(tmp_path / "result" / "onnx", tmp_path / "result" / "torch", show_progress=False)
    assert result.units == "raw" and result.tolerance.atol == 1e-4 and len(result.images) == 3
    assert result.passed, result.lines()
    assert result.summary()["max_abs"]["worst"] < 1e-4
