"""run --checkpoint's default: the fastest exact path for the machine (a CPU graph built once into the model cache
and run with OpenVINO or ONNX Runtime), what it says and records, and the cache's failure cases."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

pytestmark = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None,
                                reason="ONNX Runtime is not installed (pip install onnxruntime)")
RUNTIME = "openvino" if importlib.util.find_spec("openvino") else "onnxruntime"


def pictures(folder):
    return {p.name: np.asarray(Image.open(p)) for p in sorted((folder / "images").glob("*_synthesized_image.png"))}


def run(data, checkpoint, out, cache, *extra, check=True):
    return run_cli(["pix2pixhd-deploy", "run", "--dataroot", data, "--checkpoint", checkpoint, "--output", out,
                    "--device", "cpu", "--cache-dir", cache, *extra], check=check)


def test_default_run_builds_the_cpu_graph_once_and_matches_torch(tmp_path, scene_dataroot, small_checkpoint):
    cache = tmp_path / "cache"
    first = run(scene_dataroot, small_checkpoint, tmp_path / "a", cache)
    name = {"openvino": "OpenVINO", "onnxruntime": "ONNX Runtime"}[RUNTIME]
    assert f"{name} " in first.stderr and "built in" in first.stderr and "fastest exact path" in first.stderr
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["choice"]["backend"] == RUNTIME and manifest["settings"]["backend"] == RUNTIME
    assert manifest["choice"]["cache"]["key"]["height"] == 64 and manifest["model_form"].startswith("stems form")
    # the checkpoint's hash, not the graph's, says which weights made the pictures
    assert manifest["identity"]["checkpoint_sha256"] == manifest["choice"]["cache"]["key"]["checkpoint_sha256"]
    second = run(scene_dataroot, small_checkpoint, tmp_path / "b", cache)
    assert "from the model cache" in second.stderr and "building" not in second.stderr
    run(scene_dataroot, small_checkpoint, tmp_path / "torch", cache, "--backend", "torch")
    got, want = pictures(tmp_path / "b"), pictures(tmp_path / "torch")
    assert len(got) == 3 and got.keys() == want.keys()
    for k in got:
        diff = np.abs(got[k].astype(int) - want[k])
        assert diff.max() <= 1 and np.mean(diff > 0) <= 1e-3, k
    assert pictures(tmp_path / "a").keys() == got.keys()
    listing = run_cli(["pix2pixhd-deploy", "cache", "list", "--cache-dir", cache]).stdout
    assert f"{RUNTIME} 128x64 uint8" in listing and "cache: 1 graphs" in listing
    cleared = run_cli(["pix2pixhd-deploy", "cache", "clear", "--cache-dir", cache]).stdout
    assert "freed" in cleared and not list((cache / "graphs").iterdir())


def test_graphs_of_another_version_are_named_and_pruned(tmp_path, scene_dataroot, small_checkpoint):
    """After an upgrade the cache still holds the graphs the old version built (about 1.4 GB each at 2048x1024),
    which the new one never uses: the build says so in one line, `cache list` marks them and `cache prune` removes
    them and nothing else."""
    from pix2pixhd_deploy.cache import key_digest

    cache = tmp_path / "cache"
    run(scene_dataroot, small_checkpoint, tmp_path / "a", cache)
    old = _entry(cache)  # made "by an older version": another recipe, and so another key and folder
    entry = json.loads((old / "entry.json").read_text())
    entry["key"]["recipe"] = "cpu-v0: an older recipe"
    (old / "entry.json").write_text(json.dumps(entry))
    old = old.rename(old.parent / key_digest(entry["key"]))
    proc = run(scene_dataroot, small_checkpoint, tmp_path / "b", cache)
    assert "built in" in proc.stderr
    hint = [line for line in proc.stderr.splitlines() if "made by another version" in line]
    assert len(hint) == 1 and "1 graph (" in hint[0] and "cache prune" in hint[0], proc.stderr
    listing = run_cli(["pix2pixhd-deploy", "cache", "list", "--cache-dir", cache]).stdout
    assert "cache: 2 graphs" in listing and "of them stale" in listing
    (stale,) = [line for line in listing.splitlines() if "(stale:" in line]
    assert str(old) in stale and "made with another recipe" in stale
    # what a killed build left, and an entry without its entry.json: never used either
    leftovers = [cache / "graphs" / f".tmp-{'0' * 24}.x1", cache / "graphs" / ("f" * 24)]
    for folder in leftovers:
        folder.mkdir()
        (folder / "model.onnx").write_bytes(b"\0" * 1000)
    pruned = run_cli(["pix2pixhd-deploy", "cache", "prune", "--cache-dir", cache]).stdout
    assert "freed" in pruned and not old.exists() and not any(f.exists() for f in leftovers)
    assert _entry(cache).is_dir()
    again = run(scene_dataroot, small_checkpoint, tmp_path / "c", cache)
    assert "from the model cache" in again.stderr and "made by another version" not in again.stderr
    assert "stale" not in run_cli(["pix2pixhd-deploy", "cache", "list", "--cache-dir", cache]).stdout


def test_the_stale_graphs_line_never_fails_a_run(tmp_path, monkeypatch, caplog):
    """It is advice: an entry pruned or rebuilt by another process while it looks must not fail the run."""
    from pix2pixhd_deploy import cache as cache_module
    from pix2pixhd_deploy.runners import choose

    def vanished(root):
        raise FileNotFoundError(2, "No such file or directory", str(root / "graphs" / "x" / "model.onnx"))

    monkeypatch.setattr(cache_module, "list_entries", vanished)
    choose._stale_note(tmp_path)  # no exception
    assert "could not look for stale graphs" in caplog.text or not caplog.records


def _entry(cache):
    (folder,) = [p for p in (cache / "graphs").iterdir() if not p.name.startswith(".tmp-")]
    return folder


@pytest.mark.parametrize("damage", ["cut short", "foreign", "incomplete", "garbage of the same size"])
def test_a_damaged_cache_entry_is_rebuilt_with_one_line(tmp_path, scene_dataroot, small_checkpoint, damage):
    cache = tmp_path / "cache"
    run(scene_dataroot, small_checkpoint, tmp_path / "a", cache)
    folder = _entry(cache)
    graph = folder / "model.onnx"
    if damage == "cut short":
        graph.write_bytes(graph.read_bytes()[:1000])
    elif damage == "foreign":
        entry = json.loads((folder / "entry.json").read_text())
        entry["key"]["checkpoint_sha256"] = "0" * 64
        (folder / "entry.json").write_text(json.dumps(entry))
    elif damage == "incomplete":
        (folder / "entry.json").unlink()
    else:
        graph.write_bytes(b"\0" * graph.stat().st_size)
        for sub in (folder / "compiled").glob("*"):
            sub.unlink()
    proc = run(scene_dataroot, small_checkpoint, tmp_path / "b", cache)
    notes = [line for line in proc.stderr.splitlines() if "is rebuilt" in line]
    assert len(notes) == 1, proc.stderr
    assert pictures(tmp_path / "b").keys() == pictures(tmp_path / "a").keys()
    assert all(np.array_equal(a, b) for a, b in zip(pictures(tmp_path / "a").values(),
                                                    pictures(tmp_path / "b").values()))


def test_cache_folders_that_cannot_be_used(tmp_path, scene_dataroot, small_checkpoint):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    proc = run(scene_dataroot, small_checkpoint, tmp_path / "a", blocker / "cache", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "the model cache folder cannot be used" in proc.stderr and "--cache-dir" in proc.stderr
    assert not (tmp_path / "a").exists()
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)  # others could plant a graph: refused
    proc = run(scene_dataroot, small_checkpoint, tmp_path / "a", shared, check=False)
    assert proc.returncode == 2 and "others can write to it" in proc.stderr
    # the default folder unusable: a private temporary one for this run, said in one line
    temp = tmp_path / "temp"  # the private folder is made here, and removed when the run ends
    temp.mkdir()
    env = dict(os.environ, XDG_CACHE_HOME=str(blocker), TMPDIR=str(temp))
    proc = run_cli(["pix2pixhd-deploy", "run", "--dataroot", scene_dataroot, "--checkpoint", small_checkpoint,
                    "--output", tmp_path / "b", "--device", "cpu"], env=env)
    assert "cannot be used" in proc.stderr and "for this run only" in proc.stderr
    assert str(temp) in proc.stderr and list(temp.iterdir()) == []
    assert len(pictures(tmp_path / "b")) == 3


def test_two_processes_fill_one_cache_at_once(tmp_path, scene_dataroot, small_checkpoint):
    cache = tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, "-m", "pix2pixhd_deploy", "run", "--dataroot", str(scene_dataroot),
                               "--checkpoint", str(small_checkpoint), "--output", str(tmp_path / f"o{i}"),
                               "--device", "cpu", "--cache-dir", str(cache)], stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    assert sum("built in" in e for e in errs) == 1 and sum("from the model cache" in e for e in errs) == 1
    assert len([p for p in (cache / "graphs").iterdir()]) == 1
    a, b = pictures(tmp_path / "o0"), pictures(tmp_path / "o1")
    assert len(a) == 3 and all(np.array_equal(a[k], b[k]) for k in a)


def test_torch_is_chosen_where_it_is_the_right_path(tmp_path, scene_dataroot, small_checkpoint):
    from pix2pixhd_deploy.data.synthetic import make_scene
    from pix2pixhd_deploy.fileio import atomic_save_image

    cache = tmp_path / "cache"
    proc = run(scene_dataroot, small_checkpoint, tmp_path / "fast", cache, "--fast-convs")
    assert "torch runs the checkpoint: --fast-convs is a torch option" in proc.stderr
    label, inst = make_scene(96, 128, seed=5)  # a second size
    atomic_save_image(scene_dataroot / "test_label" / "zz_000000_000000_gtFine_labelIds.png", label)
    atomic_save_image(scene_dataroot / "test_inst" / "zz_000000_000000_gtFine_instanceIds.png", inst)
    proc = run(scene_dataroot, small_checkpoint, tmp_path / "mixed", cache)
    assert "the maps come in 2 sizes" in proc.stderr and len(pictures(tmp_path / "mixed")) == 4
    proc = run(scene_dataroot, small_checkpoint, tmp_path / "x", cache, "--backend", "onnxruntime", "--fp16",
               check=False)
    assert proc.returncode == 2 and "--fp16 is a torch option" in proc.stderr
    assert not (cache / "graphs").exists() or not list((cache / "graphs").iterdir())


def test_save_raw_builds_a_float_graph(tmp_path, scene_dataroot, small_checkpoint):
    cache = tmp_path / "cache"
    run(scene_dataroot, small_checkpoint, tmp_path / "raw", cache, "--save-raw", "--backend", "onnxruntime")
    manifest = json.loads((tmp_path / "raw" / "manifest.json").read_text())
    assert manifest["choice"]["cache"]["key"]["output_format"] == "float"
    assert len(list((tmp_path / "raw" / "raw").glob("*_0.bin"))) == 3


def test_a_checkpoint_rewritten_in_place_with_its_mtime_kept_gets_a_new_graph(tmp_path, scene_dataroot,
                                                                             small_checkpoint):
    """Other weights written into the same file (same path, size and inode) with the old mtime put back, as
    ``cp -p`` or ``touch -r`` would: the cache must hash the file again, build a new entry and run the new weights."""
    from conftest import SMALL_LOCAL

    from pix2pixhd_deploy.model.network import random_generator, save_checkpoint

    cache, path = tmp_path / "cache", small_checkpoint / "latest_net_G.pth"
    run(scene_dataroot, small_checkpoint, tmp_path / "a", cache)
    other = save_checkpoint(random_generator(SMALL_LOCAL, seed=2), tmp_path / "other" / "latest_net_G.pth")
    before = path.stat()
    assert other.stat().st_size == before.st_size  # same architecture, same layout: same size
    with open(path, "r+b") as f:  # in place: the inode stays
        f.write(other.read_bytes())
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    proc = run(scene_dataroot, small_checkpoint, tmp_path / "b", cache)
    assert "from the model cache" not in proc.stderr and "built in" in proc.stderr, proc.stderr
    assert len([p for p in (cache / "graphs").iterdir() if not p.name.startswith(".tmp-")]) == 2
    run(scene_dataroot, other.parent, tmp_path / "torch", cache, "--backend", "torch")
    old, new, want = pictures(tmp_path / "a"), pictures(tmp_path / "b"), pictures(tmp_path / "torch")
    for k in want:
        assert np.abs(new[k].astype(int) - want[k]).max() <= 1, k  # the new weights' pictures
        assert np.abs(new[k].astype(int) - old[k]).max() > 16, k   # not the old graph's


def test_precision_bf16_runs_torch_with_fp32_norms_and_is_in_the_resume_identity(tmp_path, scene_dataroot,
                                                                                small_checkpoint):
    """--precision bf16: torch runs the checkpoint (the CPU graph is exact fp32), the manifest's runner and resume
    identity say bf16, the pictures are close to fp32's (PSNR), and the flag is refused where it cannot apply."""
    cache = tmp_path / "cache"
    proc = run(scene_dataroot, small_checkpoint, tmp_path / "bf16", cache, "--precision", "bf16")
    assert "--precision bf16 is a torch option" in proc.stderr
    manifest = json.loads((tmp_path / "bf16" / "manifest.json").read_text())
    assert manifest["identity"]["bf16"] is True and "torch bf16 (norms and the last layer in fp32)" in \
        manifest["runner"]
    run(scene_dataroot, small_checkpoint, tmp_path / "fp32", cache, "--backend", "torch")
    got, want = pictures(tmp_path / "bf16"), pictures(tmp_path / "fp32")
    for k in want:
        mse = np.mean((got[k].astype(float) - want[k]) ** 2)
        assert 0 < mse and 10 * np.log10(255 ** 2 / mse) > 30, k  # close, and not secretly fp32
    resumed = run(scene_dataroot, small_checkpoint, tmp_path / "bf16", cache, check=False)  # fp32 into bf16's folder
    assert resumed.returncode == 2 and "bf16" in resumed.stderr
    for extra, words in ((["--backend", "openvino"], "--precision bf16 is a torch option, not one of --backend"),
                         (["--fp16"], "--fp16 contradicts --precision bf16")):
        proc = run(scene_dataroot, small_checkpoint, tmp_path / "x", cache, "--precision", "bf16", *extra,
                   check=False)
        assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr
