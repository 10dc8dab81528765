"""The seed's guide, command by command, as subprocesses exactly as its README writes them (paths in temp dirs).

Only the ais_bench line changes its program name (``python3 -m ais_bench`` -> ``pix2pixhd-deploy infer``) and its
model (the .pth instead of an .om).
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import run_cli

from pix2pixhd_deploy.data.dataset import find_pairs
from pix2pixhd_deploy.data.synthetic import write_cityscapes_split
from pix2pixhd_deploy.model.encoding import encode_pair
from pix2pixhd_deploy.model.network import load_generator
from pix2pixhd_deploy.seed.postprocess import tensor2im

DEALS = ["datasets_deal.py", "./pix2pixHD/datasets/cityscapes/test_inst", "./pix2pixHD/datasets/cityscapes/test_label",
         "./datasets/gtFine/val"]
PREP = ["pix2pixhd_preprocess.py", "./pix2pixHD/datasets/cityscapes", "./prep_datasets"]
CKPT = "./pix2pixHD/checkpoints/label2city_1024p/latest_net_G.pth"


def infer_cmd(bs):
    return ["pix2pixhd-deploy", "infer", f"--model={CKPT}", "--input=./prep_datasets/", "--output=./result/",
            f"--output_dirname=bs{bs}", "--outfmt=BIN", f"--batchsize={bs}", "--device", "0"]


@pytest.fixture
def workdir(tmp_path, small_checkpoint):
    write_cityscapes_split(tmp_path / "datasets" / "gtFine" / "val", 5, height=64, width=128, city="bonn")
    ckpt = tmp_path / "pix2pixHD" / "checkpoints" / "label2city_1024p"
    ckpt.mkdir(parents=True)
    shutil.copy(small_checkpoint / "latest_net_G.pth", ckpt)
    return tmp_path


def test_seed_guide_batch_1_and_4(workdir):
    run_cli(DEALS, cwd=workdir)
    run_cli(PREP, cwd=workdir)
    bins = sorted((workdir / "prep_datasets").glob("*.bin"))  # and pix2pixhd_sizes.json, which ais_bench skips
    assert len(bins) == 5 and all(b.stat().st_size == 36 * 64 * 128 * 4 for b in bins)
    assert (workdir / "prep_datasets" / "pix2pixhd_sizes.json").is_file()
    (workdir / "result").mkdir()
    outputs = {}
    for bs in (1, 4):
        proc = run_cli(infer_cmd(bs), cwd=workdir)
        assert "throughput 1000*batchsize.mean" in proc.stdout
        out = workdir / "result" / f"bs{bs}"
        names = sorted(p.name for p in out.iterdir())
        assert names == sorted(b.name.replace(".bin", "_0.bin") for b in bins)  # 5 outputs, none lost or doubled
        assert all((out / n).stat().st_size == 3 * 64 * 128 * 4 for n in names)
        summary = json.loads((workdir / "result" / f"bs{bs}_summary.json").read_text())
        assert {"NPU_compute_time", "throughput", "npu_compute_time_list", "filesinfo", "args", "pid"} <= set(summary)
        assert len(summary["npu_compute_time_list"]) == (5 if bs == 1 else 2)
        assert summary["throughput"] == pytest.approx(
            1000 * bs / np.mean(summary["npu_compute_time_list"]), rel=1e-9)
        assert len(summary["filesinfo"]) == 5
        outputs[bs] = {n: np.fromfile(out / n, np.float32) for n in names}
    for name, y in outputs[1].items():  # batching changes nothing (instance norm is per sample)
        assert np.abs(y - outputs[4][name]).max() <= 1e-5

    run_cli(["pix2pixhd_postprocess.py", "./result/bs1", "./result/bs1generated"], cwd=workdir)
    pictures = sorted((workdir / "result" / "bs1generated").iterdir())
    assert [p.name for p in pictures] == sorted(b.name.replace(".bin", "_0generated.png") for b in bins)

    # the chain equals a direct in-process forward of the encoded input
    model = load_generator(workdir / CKPT).model
    pair = find_pairs(workdir / "pix2pixHD" / "datasets" / "cityscapes")[2]
    with torch.inference_mode():
        direct = model(torch.from_numpy(encode_pair(pair))[None])[0].numpy()
    got = outputs[1][f"{pair.name}_0.bin"].reshape(3, 64, 128)
    assert np.array_equal(got, direct)
    from PIL import Image
    assert np.array_equal(np.asarray(Image.open(workdir / "result" / "bs1generated" / f"{pair.name}_0generated.png")),
                          tensor2im(direct))


def test_pure_inference_and_pydeploy_subcommands(workdir):
    run_cli(["pix2pixhd-deploy", "convert", "ds/test_inst", "ds/test_label", "datasets/gtFine/val", "--link"],
            cwd=workdir)
    run_cli(["pix2pixhd-deploy", "preprocess", "ds", "prep"], cwd=workdir)
    proc = run_cli(["pix2pixhd-deploy", "infer", "--model", CKPT, "--output", "res", "--output_dirname", "pure",
                    "--loop", "3", "--dymHW", "64,128", "--warmup_count", "0"], cwd=workdir)
    assert "throughput" in proc.stdout
    summary = json.loads((workdir / "res" / "pure_summary.json").read_text())
    assert len(summary["npu_compute_time_list"]) == 3
    assert (workdir / "res" / "pure" / "pure_infer_data_0.bin").stat().st_size == 3 * 64 * 128 * 4


@pytest.mark.slow
def test_full_size_chain_equals_nvidia(tmp_path, street_maps, upstream_networks):
    """One street scene at 2048x1024 (generated in every clone; a real sample where present) through the seed's
    scripts with the real architecture, against NVIDIA's code."""
    from test_network import upstream_generator

    from pix2pixhd_deploy.model.network import LABEL2CITY_1024P

    city = tmp_path / "datasets" / "gtFine" / "val" / "frankfurt"
    city.mkdir(parents=True)
    label = sorted((street_maps / "test_label").glob("*_gtFine_labelIds.png"))[-1]
    stem = label.name.replace("_gtFine_labelIds.png", "")
    shutil.copy(label, city / f"frankfurt_000001_{stem[-6:]}_gtFine_labelIds.png")
    shutil.copy(street_maps / "test_inst" / f"{stem}_gtFine_instanceIds.png",
                city / f"frankfurt_000001_{stem[-6:]}_gtFine_instanceIds.png")
    stem = f"frankfurt_000001_{stem[-6:]}"
    ref = upstream_generator(upstream_networks, LABEL2CITY_1024P, seed=11)
    ckpt = tmp_path / "pix2pixHD" / "checkpoints" / "label2city_1024p"
    ckpt.mkdir(parents=True)
    torch.save(ref.state_dict(), ckpt / "latest_net_G.pth")
    run_cli(DEALS, cwd=tmp_path)
    run_cli(PREP, cwd=tmp_path)
    run_cli(infer_cmd(1) + ["--warmup_count", "0"], cwd=tmp_path)
    got = np.fromfile(tmp_path / "result" / "bs1" / f"{stem}_gtFine_labelIds_0.bin", np.float32)
    assert got.size == 3 * 1024 * 2048
    x = np.fromfile(tmp_path / "prep_datasets" / f"{stem}_gtFine_labelIds.bin", np.float32).reshape(1, 36, 1024, 2048)
    with torch.inference_mode():
        want = ref(torch.from_numpy(x)).numpy().ravel()
    assert np.abs(got - want).max() <= 1e-5
