"""The demo (what ``make demo`` runs), through the command line."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from conftest import run_cli
from PIL import Image


def linked_files(index: Path):
    return [index.parent / m for m in re.findall(r'src="([^"]+)"', index.read_text())]


def assert_close_to_the_chain(stdout: str, out: Path) -> None:
    """The default path (the CPU graph, another runtime) is within one level of the torch chain almost everywhere:
    recomputed from the pictures both wrote, and the figure the demo prints is that one."""
    chain = {p.name[: -len("_0generated.png")]: np.asarray(Image.open(p)).astype(int)
             for p in sorted((out / "result" / "bs1generated").glob("*_0generated.png"))}
    run = {p.name[: -len("_synthesized_image.png")]: np.asarray(Image.open(p)).astype(int)
           for p in sorted((out / "run" / "images").glob("*_synthesized_image.png"))}
    assert chain and chain.keys() == run.keys()
    diffs = [np.abs(run[k] - chain[k]) for k in chain]
    largest = max(int(d.max()) for d in diffs)
    identical = 100.0 * sum(int((d == 0).sum()) for d in diffs) / sum(d.size for d in diffs)
    assert largest <= 1 and identical >= 99.9
    found = re.search(r"run vs the seed's chain \(torch\): largest difference (\d+) level\(s\), ([\d.]+)% of values "
                      r"identical", stdout)
    assert found, stdout
    assert int(found.group(1)) == largest and abs(float(found.group(2)) - identical) < 0.01
    assert "the fastest exact path here" in stdout


def test_demo_makes_its_own_data_and_model(tmp_path):
    out = tmp_path / "demo"
    proc = run_cli(["pix2pixhd-deploy", "demo", "--output", out, "--num-images", "2", "--size", "64,128"])
    assert "RANDOM weights" in proc.stdout and "index.html" in proc.stdout
    assert_close_to_the_chain(proc.stdout, out)
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
    assert_close_to_the_chain(proc.stdout, out)
    assert len(list((out / "result" / "bs1generated").glob("*.png"))) == 3
    assert all(f.is_file() for f in linked_files(out / "index.html"))
    assert not (out / "pix2pixHD" / "checkpoints").exists()
