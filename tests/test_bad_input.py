"""Issue 6: bad input, interruptions and untrusted files, through the command line as a user runs it.

Every case asserts what a user must be able to rely on: a non-zero exit with one line on stderr (no traceback) that
names the file, the problem and the fix; no partial output (nothing incomplete under a final name, no ``.tmp-*``
file); the inputs unchanged. Log lines (``INFO``/``WARNING``/``ERROR`` + logger name) are not the error line.
Already covered elsewhere, so not repeated here: SIGKILL in the middle of ``run`` and a second ``run`` into a locked
folder (``test_pipeline.py``), an ``.om`` where ais_bench is not installed (``test_ais_bench_contract.py``).
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import error_line, failed_inputs_line, run_cli
from PIL import Image

from pix2pixhd_deploy.fileio import TMP_PREFIX

LABEL = "test_label/city_000000_000001_gtFine_labelIds.png"
INST = "test_inst/city_000000_000001_gtFine_instanceIds.png"
BIN_64x128 = 36 * 64 * 128 * 4


# ---------------------------------------------------------------------------------------------- helpers

def snapshot(*folders: Path) -> dict:
    """Every file under ``folders`` with its content hash: the inputs, to show they are unchanged."""
    out = {}
    for folder in folders:
        for p in sorted(Path(folder).rglob("*")):
            if p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def assert_complete(folder: Path, size: int = BIN_64x128) -> None:
    """Every file under a final name is complete: a .bin of ``size`` bytes, a picture that decodes."""
    for p in folder.rglob("*"):
        if p.name.startswith(TMP_PREFIX):
            continue
        if p.suffix == ".bin":
            assert p.stat().st_size == size, p
        elif p.suffix in (".png", ".jpg"):
            Image.open(p).load()


def assert_no_partial(folder: Path, size: int = BIN_64x128) -> None:
    """No temporary file, and every file under a final name complete."""
    if folder.exists():
        assert not list(folder.rglob(TMP_PREFIX + "*"))
        assert_complete(folder, size)


def with_free_disk(free: int, *args) -> list:
    """The command line, run with the free disk reported as ``free`` bytes (a full disk, simulated)."""
    code = ("import sys; from pix2pixhd_deploy import fileio; fileio.free_bytes_fn = lambda p: %d; "
            "from pix2pixhd_deploy.cli.main import main; sys.exit(main(sys.argv[1:]))" % free)
    return [sys.executable, "-c", code, *args]


@pytest.fixture
def prep(tmp_path, scene_dataroot):
    """The three scenes preprocessed: 36x64x128 float32 .bin files."""
    run_cli(["pix2pixhd_preprocess.py", scene_dataroot, tmp_path / "prep"])
    return tmp_path / "prep"


@pytest.fixture
def raw_outputs(tmp_path):
    """Three raw (3, 64, 128) outputs as infer writes them."""
    folder = tmp_path / "result"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        rng.uniform(-1, 1, (3, 64, 128)).astype(np.float32).tofile(folder / f"img{i}_0.bin")
    return folder


# ------------------------------------------------------------------------------- label and instance maps

def _rgb(root):  # road's colour (128, 64, 128) is read; one pixel near it is in no table
    pixels = np.zeros((64, 128, 3), np.uint8) + np.array([128, 64, 128], np.uint8)
    pixels[5, 9] = (128, 64, 127)
    Image.fromarray(pixels).save(root / LABEL)


def _palette(root):  # a palette PNG whose palette is neither an id palette nor Cityscapes colours
    img = Image.fromarray(np.full((64, 128), 3, np.uint8), "P")
    img.putpalette([10, 20, 30] * 256)
    img.save(root / LABEL)


def _16bit(root):
    Image.fromarray(np.full((64, 128), 300, np.uint16)).save(root / LABEL)


def _sizes(root):
    Image.fromarray(np.full((96, 192), 26001, np.uint16)).save(root / INST)


def _truncated(root):
    data = (root / LABEL).read_bytes()
    (root / LABEL).write_bytes(data[: len(data) // 2])


def _text(root):
    (root / LABEL).write_text("label ids, as text\n")


def _ids(root):
    Image.fromarray(np.full((64, 128), 40, np.uint8)).save(root / LABEL)


def _no_instance(root):
    (root / INST).unlink()


def _no_label(root):
    (root / LABEL).unlink()


MAP_CASES = {  # mutation, the file the line names, what it must say (problem and fix)
    "label map without its instance map": (_no_instance, LABEL, ["have no instance map", "add the matching"]),
    "instance map without its label map": (_no_label, INST, ["have no label map", "add the matching"]),
    "label map with an unknown colour": (_rgb, LABEL, ["no Cityscapes label colour: (128, 64, 127) in 1 px, first "
                                                       "at x=9, y=5", "paint with the exact colours"]),
    "palette of unknown colours": (_palette, LABEL, ["palette label map", "(10, 20, 30) in 8192 px, first at x=0, "
                                                     "y=0", "paint with the exact colours"]),
    "16-bit label map with ids out of range": (_16bit, LABEL, ["label ids 300 (8192 px) are outside 0..34",
                                                               "--label-nc"]),
    "label and instance maps of different sizes": (_sizes, INST, ["192x96 but its label map", "pair each"]),
    "truncated PNG": (_truncated, LABEL, ["damaged or truncated", "copy the label map again"]),
    "text file named .png": (_text, LABEL, ["not an image file", "replace it"]),
    "label ids >= label_nc": (_ids, LABEL, ["label ids 40 (8192 px) are outside 0..34", "--label-nc"]),
}


@pytest.mark.parametrize("case", MAP_CASES, ids=list(MAP_CASES))
def test_bad_maps_stop_preprocess_with_one_line(case, tmp_path, scene_dataroot):
    mutate, named, says = MAP_CASES[case]
    mutate(scene_dataroot)
    before = snapshot(scene_dataroot)
    out = tmp_path / "prep"
    proc = run_cli(["pix2pixhd_preprocess.py", scene_dataroot, out], check=False)
    line = error_line(proc, *says)
    assert Path(named).name in line
    assert snapshot(scene_dataroot) == before
    assert_no_partial(out)
    assert not (out / "city_000000_000001_gtFine_labelIds.bin").exists()


@pytest.mark.parametrize("case", ["missing data root", "empty test_label", "empty infer input",
                                  "empty postprocess input", "missing Cityscapes split"])
def test_missing_or_empty_folders(case, tmp_path, small_checkpoint):
    empty = tmp_path / "empty"
    (empty / "test_label").mkdir(parents=True)
    (empty / "test_inst").mkdir()
    out = tmp_path / "out"
    cmd, named, says = {
        "missing data root": (["pix2pixhd_preprocess.py", tmp_path / "nowhere", out], "nowhere",
                              ["does not exist", "pass the folder that holds test_label/"]),
        "empty test_label": (["pix2pixhd-deploy", "preprocess", empty, out], "test_label",
                             ["no label maps", "datasets_deal.py"]),
        "empty infer input": (["pix2pixhd-deploy", "infer", "--model", small_checkpoint, "--input", empty,
                               "--output", out, "--device", "cpu"], "empty", ["no .bin or .npy", "preprocess"]),
        "empty postprocess input": (["pix2pixhd_postprocess.py", empty, out], "empty",
                                    ["no .bin files", "pass the folder that infer"]),
        "missing Cityscapes split": (["datasets_deal.py", out / "inst", out / "label", tmp_path / "val"], "val",
                                     ["does not exist", "gtFine split"]),
    }[case]
    proc = run_cli(cmd, check=False)
    assert named in error_line(proc, *says)
    assert not out.exists()  # refused before anything was made


def test_8bit_instance_map_is_used_with_one_warning(tmp_path, scene_dataroot):
    """Upstream accepts it (issue #11) and so do we, but the collapsed ids are said, once, naming the file."""
    Image.fromarray(np.full((64, 128), 7, np.uint8)).save(scene_dataroot / INST)
    proc = run_cli(["pix2pixhd_preprocess.py", scene_dataroot, tmp_path / "prep"])
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and Path(INST).name in warnings[0]
    assert "8-bit" in warnings[0] and "collapsed" in warnings[0] and "#11" in warnings[0]
    assert len(list((tmp_path / "prep").glob("*.bin"))) == 3


def test_size_not_a_multiple_of_32_is_resized_as_upstream_and_said_once(tmp_path, scene_dataroot):
    for i in (1, 2):  # two 130x70 pairs: one notice for the run
        Image.fromarray(np.full((70, 130), 7, np.uint8)).save(
            scene_dataroot / f"test_label/city_000000_{i:06d}_gtFine_labelIds.png")
        Image.fromarray(np.full((70, 130), 26001, np.uint16)).save(
            scene_dataroot / f"test_inst/city_000000_{i:06d}_gtFine_instanceIds.png")
    proc = run_cli(["pix2pixhd-deploy", "preprocess", scene_dataroot, tmp_path / "prep"])
    notices = [line for line in proc.stderr.splitlines() if "not a multiple of 32" in line]
    assert len(notices) == 1
    assert "city_000000_000001_gtFine_labelIds.png" in notices[0] and "130x70" in notices[0]
    assert "128x64" in notices[0]
    assert (tmp_path / "prep" / "city_000000_000001_gtFine_labelIds.bin").stat().st_size == 36 * 64 * 128 * 4


# ------------------------------------------------------------------------------------------ .bin files

def _cut_bin(path: Path):
    path.write_bytes(path.read_bytes()[:1000])


def _nan_bin(path: Path):
    a = np.fromfile(path, np.float32)
    a[5], a[7] = np.nan, np.inf
    a.tofile(path)


@pytest.mark.parametrize("command", ["infer", "postprocess"])
@pytest.mark.parametrize("damage", ["wrong size", "NaN and Inf"])
def test_bad_bin_files(command, damage, tmp_path, request):
    if command == "infer":
        folder, checkpoint = request.getfixturevalue("prep"), request.getfixturevalue("small_checkpoint")
        bad = folder / "city_000000_000001_gtFine_labelIds.bin"
        cmd = ["pix2pixhd-deploy", "infer", "--model", checkpoint, "--input", folder, "--output", tmp_path / "res",
               "--output_dirname", "bs1", "--device", "cpu"]
        out, size = tmp_path / "res", 3 * 64 * 128 * 4
    else:
        folder = request.getfixturevalue("raw_outputs")
        bad = folder / "img1_0.bin"
        cmd = ["pix2pixhd_postprocess.py", folder, tmp_path / "pictures"]
        out, size = tmp_path / "pictures", None
    (_cut_bin if damage == "wrong size" else _nan_bin)(bad)
    before = snapshot(folder)
    says = (["1000 bytes", "re-run pix2pixhd_preprocess.py"] if (command, damage) == ("infer", "wrong size") else
            ["not a whole float32", "use the .bin files"] if damage == "wrong size" else
            ["2 NaN or infinite values"])
    assert bad.name in error_line(run_cli(cmd, check=False), *says)
    assert snapshot(folder) == before
    assert_no_partial(out, size)
    if command == "infer":
        assert not (out / "bs1" / "city_000000_000001_gtFine_labelIds_0.bin").exists()
        if damage == "wrong size":
            assert not out.exists()  # every input's size is checked before anything is written
    else:
        assert not (out / "img1_0generated.png").exists()


def test_infer_and_preprocess_keep_going(tmp_path, prep, scene_dataroot, small_checkpoint):
    """A bad input does not stop the run: the others are done, the bad ones are reported at the end, exit 2, in
    run's line and record ({name: {error, path, fix}}; tests/test_pipeline.py, tests/test_ray_engine.py)."""
    _nan_bin(prep / "city_000000_000001_gtFine_labelIds.bin")
    _cut_bin(prep / "city_000000_000002_gtFine_labelIds.bin")
    proc = run_cli(["pix2pixhd-deploy", "infer", "--model", small_checkpoint, "--input", prep, "--output",
                    tmp_path / "res", "--output_dirname", "go", "--device", "cpu", "--keep-going"], check=False)
    error_line(proc, "2 input(s) failed", "000001_gtFine_labelIds.bin", "000002_gtFine_labelIds.bin",
               "the other 1 were written")
    parsed = failed_inputs_line(proc.stderr)
    assert parsed["what"] == "input" and parsed["count"] == "2" and parsed["done"] == "1"
    assert "city_000000_000001_gtFine_labelIds.bin: the input holds 2 NaN" in parsed["shown"]  # found at reading
    assert parsed["shown"].startswith("city_000000_000002_gtFine_labelIds.bin: the file has 1000 bytes")  # at the scan
    assert [p.name for p in (tmp_path / "res" / "go").iterdir()] == ["city_000000_000000_gtFine_labelIds_0.bin"]
    summary = json.loads((tmp_path / "res" / "go_summary.json").read_text())
    assert len(summary["filesinfo"]) == 1
    nan = summary["failed"]["city_000000_000001_gtFine_labelIds.bin"]
    assert list(summary["failed"]) == ["city_000000_000002_gtFine_labelIds.bin", "city_000000_000001_gtFine_labelIds.bin"]
    assert set(nan) == {"error", "path", "fix"} and nan["path"] == str(prep / "city_000000_000001_gtFine_labelIds.bin")

    _ids(scene_dataroot)
    proc = run_cli(["pix2pixhd_preprocess.py", scene_dataroot, tmp_path / "prep2", "--keep-going"], check=False)
    error_line(proc, "1 pair(s) failed", Path(LABEL).stem, "label ids 40", "the other 2 were written")
    parsed = failed_inputs_line(proc.stderr)
    assert (parsed["what"], parsed["count"], parsed["done"]) == ("pair", "1", "2")
    assert parsed["shown"].startswith(f"{Path(LABEL).stem}: label ids 40")
    record = json.loads((tmp_path / "prep2" / "pix2pixhd_sizes.json").read_text())["failed"]
    assert list(record) == [Path(LABEL).stem] and record[Path(LABEL).stem]["path"].endswith(LABEL)
    assert sorted(p.name for p in (tmp_path / "prep2").iterdir()) == [
        "city_000000_000000_gtFine_labelIds.bin", "city_000000_000002_gtFine_labelIds.bin",
        "pix2pixhd_sizes.json"]
    assert_no_partial(tmp_path / "prep2")


# ------------------------------------------------------------------------------------ models and runtimes

class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _malicious(folder: Path) -> Path:
    import torch

    torch.save({"model.1.weight": _Evil(folder / "pwned")}, folder / "latest_net_G.pth")
    return folder / "latest_net_G.pth"


def _other_network(folder: Path) -> Path:
    import torch

    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 512)}, folder / "resnet.pth")
    return folder / "resnet.pth"


def _truncated_checkpoint(folder: Path, small_checkpoint: Path) -> Path:
    data = (small_checkpoint / "latest_net_G.pth").read_bytes()
    (folder / "latest_net_G.pth").write_bytes(data[: len(data) // 2])
    return folder / "latest_net_G.pth"


CHECKPOINT_CASES = {  # how to make it, the command that meets it, what the line says
    "malicious pickle": ("export", ["refused to load", "system", "from a source you trust"]),
    "another network": ("infer", ["not a pix2pixHD generator", "latest_net_G.pth saved by pix2pixHD"]),
    "truncated": ("run", ["truncated or not a torch file", "download or copy the checkpoint again"]),
    "folder without latest_net_G.pth": ("infer", ["has no latest_net_G.pth", "put pix2pixHD's"]),
    "missing file": ("run", ["does not exist", "pass the path of latest_net_G.pth or of the folder that holds it"]),
}


@pytest.mark.parametrize("case", CHECKPOINT_CASES)
def test_untrusted_checkpoints(case, tmp_path, scene_dataroot, small_checkpoint):
    folder = tmp_path / "download"
    folder.mkdir()
    path = {"malicious pickle": lambda: _malicious(folder), "another network": lambda: _other_network(folder),
            "truncated": lambda: _truncated_checkpoint(folder, small_checkpoint),
            "folder without latest_net_G.pth": lambda: folder, "missing file": lambda: folder / "nope.pth"}[case]()
    command, says = CHECKPOINT_CASES[case]
    out = tmp_path / "out"
    cmd = {"export": ["pix2pixhd_pth2onnx.py", "--load_pretrain", path, "--output_file", out / "g.onnx",
                      "--height", "64", "--width", "128"],
           "infer": ["pix2pixhd-deploy", "infer", "--model", path, "--output", out, "--output_dirname", "x",
                     "--device", "cpu"],
           "run": ["pix2pixhd-deploy", "run", "--dataroot", scene_dataroot, "--checkpoint", path, "--output", out,
                   "--device", "cpu"]}[command]
    before = snapshot(folder, scene_dataroot)
    line = error_line(run_cli(cmd, check=False), *says)
    assert str(path) in line
    assert not (folder / "pwned").exists()  # the pickle's code never ran
    assert snapshot(folder, scene_dataroot) == before
    # nothing is made from it: no output folder, not even an empty one, a lock file or a manifest
    assert not out.exists()


def test_corrupt_onnx_file(tmp_path, prep):
    pytest.importorskip("onnxruntime", reason="ONNX Runtime is not installed (pip install onnxruntime)")
    model = tmp_path / "pix2pixhd.onnx"
    model.write_bytes(b"\x08\x07" + os.urandom(200))  # an ONNX header and then garbage, as a cut-short download
    proc = run_cli(["pix2pixhd-deploy", "infer", "--model", model, "--input", prep, "--output", tmp_path / "res"],
                   check=False)
    assert str(model) in error_line(proc, "ONNX Runtime cannot load this file", "export it again")
    assert not (tmp_path / "res").exists()


# -------------------------------------------------------------------------------------- output folders

@pytest.mark.parametrize("case", ["preprocess into a file", "postprocess under a file", "convert into a file",
                                  "compare --json onto a folder", "run under a file"])
def test_output_path_that_is_a_file_or_cannot_be_made(case, tmp_path, scene_dataroot, raw_outputs,
                                                      small_checkpoint):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("the user's own file")
    taken = tmp_path / "figures.json"
    taken.mkdir()
    cmd, named, says = {
        "preprocess into a file": (["pix2pixhd_preprocess.py", scene_dataroot, blocker], blocker,
                                   ["is an existing file, not a folder", "choose a folder path"]),
        "postprocess under a file": (["pix2pixhd-deploy", "postprocess", raw_outputs, blocker / "pics"],
                                     blocker / "pics", ["cannot create the output folder", "choose a folder"]),
        "convert into a file": (["datasets_deal.py", tmp_path / "inst", blocker, tmp_path / "val"], None, None),
        "compare --json onto a folder": (["pix2pixhd-deploy", "compare", raw_outputs, raw_outputs, "--json", taken],
                                         taken, ["is a folder", "give a file name"]),
        "run under a file": (["pix2pixhd-deploy", "run", "--dataroot", scene_dataroot, "--checkpoint",
                              small_checkpoint, "--output", blocker / "run", "--device", "cpu"], blocker / "run",
                             ["cannot create the output folder", "choose a folder"]),
    }[case]
    if case == "convert into a file":
        from pix2pixhd_deploy.data.synthetic import write_cityscapes_split

        write_cityscapes_split(tmp_path / "val", 1, height=32, width=64, city="ulm")
        named, says = blocker, ["is an existing file, not a folder", "choose a folder path"]
    before = snapshot(scene_dataroot, raw_outputs)
    assert str(named) in error_line(run_cli(cmd, check=False), *says)
    assert blocker.read_text() == "the user's own file" and not list(taken.iterdir())
    assert snapshot(scene_dataroot, raw_outputs) == before
    assert not [p for p in tmp_path.glob(TMP_PREFIX + "*")]


def test_output_folder_not_writable(tmp_path, scene_dataroot):
    if os.geteuid() == 0:
        pytest.skip("running as root, which may write anywhere: the folder-under-a-file cases above stand in")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        proc = run_cli(["pix2pixhd_preprocess.py", scene_dataroot, locked / "prep"], check=False)
        assert str(locked / "prep") in error_line(proc, "cannot create the output folder", "choose a folder")
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize("command", ["preprocess", "infer"])
def test_too_little_free_disk_is_refused_with_the_numbers(command, tmp_path, scene_dataroot, small_checkpoint,
                                                          request):
    if command == "preprocess":
        args, out = ["preprocess", str(scene_dataroot), str(tmp_path / "prep")], tmp_path / "prep"
        says = ["not enough free disk for 3 input tensors of 1 MiB", "needs 3.4 MiB, 1000 bytes free"]
    else:
        prep = request.getfixturevalue("prep")
        args = ["infer", "--model", str(small_checkpoint), "--input", str(prep), "--output", str(tmp_path / "res"),
                "--output_dirname", "bs1", "--device", "cpu"]
        out, says = tmp_path / "res", ["not enough free disk for 3 outputs of 0.1 MiB", "needs 288.0 KiB"]
    proc = subprocess.run(with_free_disk(1000, *args), capture_output=True, text=True, timeout=300)
    error_line(proc, *says, "free some space")
    assert not out.exists()  # refused before the first write


# ------------------------------------------------------------------------------------ interruptions

def _interrupt(cmd, watch: Path, pattern: str, sig: int) -> subprocess.CompletedProcess:
    """Start ``cmd``, freeze it once its first output exists, send ``sig``, let it go and wait for it."""
    # SIGINT back to its default in the child: a shell that starts the tests in the background (CI may) ignores
    # SIGINT in them, and Python then keeps ignoring it instead of raising KeyboardInterrupt
    proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not list(watch.glob(pattern)):
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGSTOP)
    os.kill(proc.pid, sig)
    os.kill(proc.pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.mark.parametrize("command,sig", [("preprocess", signal.SIGINT), ("preprocess", signal.SIGKILL),
                                         ("run", signal.SIGINT)], ids=["preprocess-SIGINT", "preprocess-SIGKILL",
                                                                       "run-SIGINT"])
def test_interrupted_then_rerun_completes(command, sig, tmp_path, small_checkpoint):
    from pix2pixhd_deploy.data.synthetic import write_cityscapes_split

    n, h, w = 6, 256, 512
    split = tmp_path / "val"
    write_cityscapes_split(split, n, height=h, width=w, city="kiel")
    if command == "preprocess":
        data = tmp_path / "data"
        run_cli(["datasets_deal.py", data / "test_inst", data / "test_label", split, "--link"])
        out = tmp_path / "prep"
        cmd = [sys.executable, "-m", "pix2pixhd_deploy", "preprocess", data, out]
        watch, pattern, finished = out, "*.bin", lambda: sorted(out.glob("*.bin"))
        size = 36 * h * w * 4
    else:
        out = tmp_path / "run"
        cmd = [sys.executable, "-m", "pix2pixhd_deploy", "run", "--cityscapes", split, "--checkpoint",
               small_checkpoint, "--device", "cpu", "--output", out]
        watch, pattern = out / "images", "*_synthesized_image.png"
        finished, size = (lambda: sorted((out / "images").glob(pattern))), None
    before = snapshot(split)
    proc = _interrupt(cmd, watch, pattern, sig)
    done = len(finished())
    assert 1 <= done < n, "the command was not interrupted midway; make the inputs larger"
    if sig == signal.SIGINT:
        assert error_line(proc, "interrupted", "run the same command again", status=130).startswith("interrupted")
        assert not list(watch.glob(TMP_PREFIX + "*"))
    else:
        assert proc.returncode == -signal.SIGKILL
    assert_complete(watch, size)  # whatever is under a final name is complete
    subprocess.run([str(c) for c in cmd], check=True, capture_output=True, timeout=300)
    assert len(finished()) == n
    assert_no_partial(watch, size)
    assert snapshot(split) == before
    if command == "preprocess":  # the resumed files are the ones an uninterrupted run writes
        from pix2pixhd_deploy.data.dataset import find_pairs
        from pix2pixhd_deploy.model.encoding import encode_pair

        last = find_pairs(tmp_path / "data")[-1]
        assert np.array_equal(np.fromfile(out / f"{last.name}.bin", np.float32), encode_pair(last).ravel())


# ------------------------------------------------------------------------------- two runs, one folder

def test_two_preprocess_runs_into_one_folder(tmp_path):
    """Atomic writes make two runs writing the same files safe, and neither deletes the other's temporary files
    (a run removes only those of processes that are gone)."""
    from pix2pixhd_deploy.data.synthetic import write_cityscapes_split

    split = tmp_path / "val"
    write_cityscapes_split(split, 6, height=128, width=256, city="kiel")
    data = tmp_path / "data"
    run_cli(["datasets_deal.py", data / "test_inst", data / "test_label", split, "--link"])
    out = tmp_path / "prep"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive_tmp = out / f"{TMP_PREFIX}other.bin.{os.getpid()}.abcd1234"  # a live writer's file (this process)
    dead_tmp = out / f"{TMP_PREFIX}other.bin.{dead.pid}.abcd1234"  # left by a killed run
    alive_tmp.write_bytes(b"being written")
    dead_tmp.write_bytes(b"left behind")
    cmd = [sys.executable, "-m", "pix2pixhd_deploy", "preprocess", str(data), str(out)]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.1)
    second = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for proc in (first, second):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0 and "Traceback" not in err, err
    assert alive_tmp.exists() and not dead_tmp.exists()
    alive_tmp.unlink()
    from pix2pixhd_deploy.data.dataset import find_pairs
    from pix2pixhd_deploy.model.encoding import encode_pair

    pairs = find_pairs(data)
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{p.name}.bin" for p in pairs] + ["pix2pixhd_sizes.json"])
    for pair in pairs:
        assert np.array_equal(np.fromfile(out / f"{pair.name}.bin", np.float32), encode_pair(pair).ravel())


def test_a_map_too_small_for_the_generator_is_one_line_naming_it(tmp_path, small_checkpoint):
    """An 8x16 map rounds to 0x0 at the generator's multiple of 32: before, the CPU graph was exported for 0x0 and
    the run ended in ZeroDivisionError; now the map is named with the fix, and nothing is written."""
    from pix2pixhd_deploy.data.synthetic import make_scene
    from pix2pixhd_deploy.fileio import atomic_save_image

    root = tmp_path / "data"
    label, inst = make_scene(64, 128, seed=0)
    for folder, array in (("test_label", label[:8, :16]), ("test_inst", inst[:8, :16].astype(np.uint16))):
        (root / folder).mkdir(parents=True)
        atomic_save_image(root / folder / "tiny.png", array)
    proc = run_cli(["pix2pixhd-deploy", "run", "--dataroot", root, "--checkpoint", small_checkpoint, "--output",
                    tmp_path / "out", "--cache-dir", tmp_path / "cache"], check=False)
    error_line(proc, "tiny.png", "16x8, too small for the generator", "--fit pad")
    assert not list((tmp_path / "out" / "images").glob("*.png")) if (tmp_path / "out").exists() else True


def test_a_stems_graph_whose_weights_file_was_cut_short_is_one_line(tmp_path, scene_dataroot, small_checkpoint):
    """A stems graph's .stems.npz cut short by a copy: before, zipfile.BadZipFile; now one line naming the file."""
    graph = tmp_path / "stems.onnx"
    run_cli(["pix2pixhd-deploy", "export", "--checkpoint", small_checkpoint, "--output", graph, "--input-format",
             "stems", "--height", "64", "--width", "128"])
    sidecar = graph.with_name(graph.name + ".stems.npz")
    sidecar.write_bytes(sidecar.read_bytes()[: sidecar.stat().st_size // 2])
    proc = run_cli(["pix2pixhd-deploy", "run", "--dataroot", scene_dataroot, "--model", graph, "--output",
                    tmp_path / "out"], check=False)
    error_line(proc, str(sidecar), "cannot read the stem weights", "export the graph again")
