"""The demo (what ``make demo`` runs), through the command line."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from conftest import run_cli
from PIL import Image


def linked_files(index: Path):
    return [index.parent / m for m in re.findall(r'src="([^"]+)"', index.read_text())]


def assert_close_to_the_chain(stdout: str) -> None:
    """The default path (the CPU graph, another runtime) is within one level of the torch chain almost everywhere."""
    found = re.search(r"run vs the seed's chain \(torch\): largest difference (\d+) level\(s\), ([\d.]+)% of values "
                      r"identical", stdout)
    assert found, stdout
    assert int(found.group(1)) <= 1 and float(found.group(2)) >= 99.9
    assert "the fastest exact path here" in stdout


def test_demo_makes_its_own_data_and_model(tmp_path):
    out = tmp_path / "demo"
    proc = run_cli(["pix2pixhd-deploy", "demo", "--output", out, "--num-images", "2", "--size", "64,128"])
    assert "RANDOM weights" in proc.stdout and "index.html" in proc.stdout
    assert_close_to_the_chain(proc.stdout)
    index = out / "index.html"
    assert "RANDOM weights" in index.read_text()
    files = linked_files(index)
    assert len(files) == 4 and all(f.is_file() for f in files)
    label = np.asarray(Image.open(files[0]))
    picture = np.asarray(Image.open(files[1]))
    assert label.shape == picture.shape == (64, 128, 3)
    assert len(list((out / "pix2pixHD" / "datasets" / "cityscapes" / "test_inst").iterdir())) == 2
    # a second run reuses what is there and gives the same pictures
    before = picture.copy()
    run_cli(["pix2pixhd-deploy", "demo", "--output", out, "--num-images", "2", "--size", "64,128"])
    assert np.array_equal(np.asarray(Image.open(files[1])), before)


def test_demo_on_user_data_and_checkpoint(tmp_path, scene_dataroot, small_checkpoint):
    out = tmp_path / "demo"
    proc = run_cli(["pix2pixhd-deploy", "demo", "--output", out, "--dataroot", scene_dataroot,
                    "--checkpoint", small_checkpoint])
    assert "RANDOM" not in proc.stdout
    assert_close_to_the_chain(proc.stdout)
    assert len(list((out / "result" / "bs1generated").glob("*.png"))) == 3
    assert all(f.is_file() for f in linked_files(out / "index.html"))
    assert not (out / "pix2pixHD" / "checkpoints").exists()
