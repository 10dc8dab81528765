"""The public Python API (``pix2pixhd_deploy.__all__``): the README's example runs as written and gives ``run``'s
pictures; arrays and paths give the same picture; bad input raises one UserError naming the problem and the fix."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, SMALL_LOCAL, run_cli

CITY, SIZE = "frankfurt", (64, 128)


def readme_python() -> str:
    text = (REPO / "README.md").read_text()
    return text.split("## From Python", 1)[1].split("```python", 1)[1].split("```", 1)[0]


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory):
    """The README's paths, made real: a small checkpoint and 64x128 scenes, one named as the README names it."""
    from pix2pixhd_deploy.data.synthetic import write_cityscapes_split
    from pix2pixhd_deploy.model.network import random_generator, save_checkpoint

    root = tmp_path_factory.mktemp("user")
    save_checkpoint(random_generator(SMALL_LOCAL, seed=1),
                    root / "pix2pixHD" / "checkpoints" / "label2city_1024p" / "latest_net_G.pth")
    split = root / "datasets" / "gtFine" / "val"
    write_cityscapes_split(split, 2, height=SIZE[0], width=SIZE[1], city=CITY)
    for kind in ("labelIds", "instanceIds"):
        shutil.copy(split / CITY / f"{CITY}_000000_000001_gtFine_{kind}.png",
                    split / CITY / f"{CITY}_000000_000294_gtFine_{kind}.png")
    (root / "results").mkdir()
    env = {"XDG_CACHE_HOME": str(root / "cache")}
    run_cli(["pix2pixhd-deploy", "run", "--checkpoint", root / "pix2pixHD/checkpoints/label2city_1024p",
             "--cityscapes", split, "--output", root / "run"], env=env)
    return root, env


def run_picture(root, stem):
    return np.asarray(Image.open(root / "run" / "images" / f"{stem}_synthesized_image.png"))


def test_the_readme_example_gives_runs_pictures(user_folder):
    root, env = user_folder
    code = readme_python() + "\nnp = __import__('numpy')\nnp.save('single.npy', picture)\n"
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **env, "PYTHONPATH": str(REPO / "src")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = sorted(p.name for p in (root / "results").iterdir())
    assert written == sorted(p.name for p in (root / "run" / "images").glob("*_synthesized_image.png"))
    assert len(written) == 3
    for name in written:
        got = np.asarray(Image.open(root / "results" / name))
        want = np.asarray(Image.open(root / "run" / "images" / name))
        assert np.array_equal(got, want), name
    assert np.array_equal(np.load(root / "single.npy"), run_picture(root, f"{CITY}_000000_000294_gtFine_labelIds"))
    graphs = [p for p in (root / "cache" / "pix2pixhd-deploy" / "graphs").iterdir() if not p.name.startswith(".")]
    assert len(graphs) == 1, graphs  # run built the graph; the API found it in the same cache


def test_arrays_paths_and_bad_input(user_folder, monkeypatch):
    import pix2pixhd_deploy as p2p
    from pix2pixhd_deploy.data.labelmaps import read_instance_ids, read_label_ids

    root, env = user_folder
    monkeypatch.setenv("XDG_CACHE_HOME", env["XDG_CACHE_HOME"])
    assert set(p2p.__all__) >= {"load", "Model", "UserError"}
    label = root / "datasets/gtFine/val" / CITY / f"{CITY}_000000_000000_gtFine_labelIds.png"
    inst = label.with_name(label.name.replace("labelIds", "instanceIds"))
    want = run_picture(root, label.stem)
    with p2p.load(root / "pix2pixHD/checkpoints/label2city_1024p", size=SIZE) as model:
        assert np.array_equal(model(label, inst), want)
        assert np.array_equal(model(read_label_ids(label), read_instance_ids(inst)), want)
        derived = model(label)  # no instance map: derived from the labels, as run --instances labels
        assert derived.shape == (*SIZE, 3) and derived.dtype == np.uint8
        padded = model(read_label_ids(label)[:50, :100], fit="pad")
        assert padded.shape == (50, 100, 3)
        for bad, words in [(np.full(SIZE, 200, np.uint8), "outside 0..34"),
                           (np.zeros((2, 3, 4), np.uint8), "must be (H, W) integer ids"),
                           (root / "nothing.png", "does not exist")]:
            with pytest.raises(p2p.UserError, match=words.replace("(", r"\(").replace(")", r"\)")) as err:
                model(bad)
            assert "\n" not in str(err.value) and err.value.fix
        with pytest.raises(p2p.UserError, match="takes instance maps"):
            model(label, instances="none")
    with pytest.raises(p2p.UserError, match="does not exist"):
        p2p.load(root / "no_such_checkpoint")
