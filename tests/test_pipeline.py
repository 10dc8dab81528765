"""``pix2pixhd-deploy run``: equal to the seed's chain, resumable after SIGKILL, locked, keeps going on request."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from conftest import SMALL_LOCAL, run_cli
from pix2pixhd_deploy.fileio import TMP_PREFIX
from pix2pixhd_deploy.postprocess import tensor2im
from pix2pixhd_deploy.synthetic import write_cityscapes_split


def pictures(folder):
    return {p.name: np.asarray(Image.open(p)) for p in sorted((folder / "images").glob("*_synthesized_image.png"))}


def test_run_equals_the_seed_chain(tmp_path, scene_dataroot, small_checkpoint):
    run_cli(["pix2pixhd_preprocess.py", scene_dataroot, tmp_path / "prep"])
    run_cli(["pix2pixhd-deploy", "infer", "--model", small_checkpoint, "--input", tmp_path / "prep", "--output",
             tmp_path / "result", "--output_dirname", "bs1", "--device", "cpu"])
    run_cli(["pix2pixhd_postprocess.py", tmp_path / "result" / "bs1", tmp_path / "chain"])
    run_cli(["pix2pixhd-deploy", "run", "--dataroot", scene_dataroot, "--checkpoint", small_checkpoint, "--backend", "torch",
             "--output", tmp_path / "run", "--batch-size", "2", "--save-raw", "--device", "cpu"])
    run_cli(["pix2pixhd-deploy", "run", "--dataroot", scene_dataroot, "--checkpoint", small_checkpoint, "--backend", "torch",
             "--output", tmp_path / "run2", "--streams", "2", "--device", "cpu"])
    assert pictures(tmp_path / "run2").keys() == pictures(tmp_path / "run").keys()
    got = pictures(tmp_path / "run")
    assert len(got) == 3
    for (name, pic), one in zip(got.items(), pictures(tmp_path / "run2").values()):
        stem = name.replace("_synthesized_image.png", "")
        chain = np.asarray(Image.open(tmp_path / "chain" / f"{stem}_0generated.png"))
        assert np.array_equal(one, chain), name  # batch 1, like the chain: the same pixels
        # batch 2: torch's convolutions may sum in another order for two images (5e-6 seen on an AVX-512 CPU),
        # which can move a value across a level boundary
        diff = np.abs(pic.astype(int) - chain)
        assert diff.max() <= 1 and np.mean(diff > 0) <= 1e-3, name
        raw = np.fromfile(tmp_path / "run" / "raw" / f"{stem}_0.bin", np.float32)
        assert np.abs(raw - np.fromfile(tmp_path / "result" / "bs1" / f"{stem}_0.bin", np.float32)).max() <= 1e-5
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert len(manifest["images"]) == 3 and len(manifest["identity"]["model_sha256"]) == 64
    assert {"decode_s", "compute_s", "write_s"} <= set(next(iter(manifest["images"].values())))
    index = (tmp_path / "run" / "index.html").read_text()
    assert index.count("_input_label.png\"") == 6 and index.count("_synthesized_image.png\"") == 6


def test_run_on_a_cityscapes_split_and_resume_skips(tmp_path, small_checkpoint):
    split = tmp_path / "gtFine" / "val"
    write_cityscapes_split(split, 3, height=64, width=128, city="ulm")
    cmd = ["pix2pixhd-deploy", "run", "--cityscapes", split, "--checkpoint", small_checkpoint, "--backend", "torch", "--output",
           tmp_path / "out", "--device", "cpu"]
    run_cli(cmd)
    first = pictures(tmp_path / "out")
    os.remove(tmp_path / "out" / "images" / "ulm_000000_000001_gtFine_labelIds_synthesized_image.png")
    proc = run_cli(cmd)
    assert "1 pictures" in proc.stdout and "2 already done" in proc.stdout
    assert pictures(tmp_path / "out").keys() == first.keys()
    # other weights into the same folder: refused, nothing mixed
    from pix2pixhd_deploy.network import random_generator, save_checkpoint
    other = save_checkpoint(random_generator(SMALL_LOCAL, seed=9), tmp_path / "other" / "latest_net_G.pth")
    proc = run_cli([*cmd[:5], other, *cmd[6:]], check=False)
    assert proc.returncode == 2 and "made with other settings" in proc.stderr and "model_sha256" in proc.stderr


def test_sigkill_then_rerun_gives_the_uninterrupted_result(tmp_path, small_checkpoint):
    split = tmp_path / "val"
    write_cityscapes_split(split, 8, height=256, width=512, city="kiel")
    args = [sys.executable, "-m", "pix2pixhd_deploy", "run", "--cityscapes", str(split), "--checkpoint",
            str(small_checkpoint), "--backend", "torch", "--device", "cpu", "--output"]
    subprocess.run(args + [str(tmp_path / "whole")], check=True, capture_output=True)
    proc = subprocess.Popen(args + [str(tmp_path / "killed")], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    images = tmp_path / "killed" / "images"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(images.glob("*_synthesized_image.png"))) < 2:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(images.glob("*_synthesized_image.png")))
    assert 2 <= done_before < 8, "the run was not interrupted midway; make the inputs larger"
    for p in images.iterdir():  # what is there under a final name is a complete, readable picture
        if not p.name.startswith(TMP_PREFIX):
            Image.open(p).load()
    subprocess.run(args + [str(tmp_path / "killed")], check=True, capture_output=True)
    assert not [p for p in images.iterdir() if p.name.startswith(TMP_PREFIX)]
    whole, resumed = pictures(tmp_path / "whole"), pictures(tmp_path / "killed")
    assert whole.keys() == resumed.keys() and len(whole) == 8
    assert all(np.array_equal(whole[k], resumed[k]) for k in whole)


def test_keep_going_reports_bad_images_and_exits_nonzero(tmp_path, scene_dataroot, small_checkpoint):
    bad = scene_dataroot / "test_label" / "city_000000_000001_gtFine_labelIds.png"
    Image.fromarray(np.full((64, 128), 40, np.uint8)).save(bad)  # id 40 >= label_nc
    cmd = ["pix2pixhd-deploy", "run", "--dataroot", scene_dataroot, "--checkpoint", small_checkpoint, "--backend", "torch",
           "--device", "cpu", "--output"]
    proc = run_cli(cmd + [tmp_path / "stop"], check=False)
    assert proc.returncode == 2 and "label ids 40 are outside 0..34" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 or "Traceback" not in proc.stderr
    proc = run_cli(cmd + [tmp_path / "go", "--keep-going"], check=False)
    assert proc.returncode == 2 and "1 image(s) failed" in proc.stderr
    assert len(pictures(tmp_path / "go")) == 2


def test_two_runs_into_one_folder(tmp_path, scene_dataroot, small_checkpoint):
    import fcntl
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".pix2pixhd-deploy.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.write("pid 12345")
        fh.flush()
        proc = run_cli(["pix2pixhd-deploy", "run", "--dataroot", scene_dataroot, "--checkpoint", small_checkpoint, "--backend", "torch",
                        "--output", out], check=False)
    assert proc.returncode == 2 and "another run is writing to this output folder (pid 12345)" in proc.stderr
    assert not (out / "images").exists() or not list((out / "images").iterdir())


@pytest.fixture
def onnx_graphs(tmp_path, small_checkpoint):
    """The 36-channel graph and its maps-input / uint8-output variants, dynamic H and W."""
    pytest.importorskip("onnxruntime", reason="ONNX Runtime is not installed (pip install onnxruntime)")
    from pix2pixhd_deploy.export import export_onnx

    graphs = {}
    for fmt in [("tensor", "float"), ("maps", "float"), ("maps", "uint8"), ("tensor", "uint8")]:
        path = tmp_path / f"g_{fmt[0]}_{fmt[1]}.onnx"
        report = export_onnx(small_checkpoint, path, height=64, width=128, dynamic_hw=True, input_format=fmt[0],
                             output_format=fmt[1])
        assert report.verified
        graphs[fmt] = path
    return graphs


def test_maps_and_uint8_graphs_equal_the_36_channel_graph(onnx_graphs):
    from pix2pixhd_deploy.encoding import encode_input
    from pix2pixhd_deploy.export import seeded_maps
    from pix2pixhd_deploy.runners import make_runner

    labels, insts = seeded_maps(2, 96, 160, seed=3)
    x = np.stack([encode_input(labels[i], insts[i]) for i in range(2)])
    with make_runner(onnx_graphs[("tensor", "float")]) as r:
        want = r.infer(x)
    with make_runner(onnx_graphs[("maps", "float")]) as r:
        assert r.input_format == "maps" and r.output_format == "float"
        assert np.array_equal(r.infer({"label": labels, "inst": insts}), want)
    with make_runner(onnx_graphs[("maps", "uint8")]) as r:
        pics = r.infer({"label": labels, "inst": insts})
        assert pics.dtype == np.uint8 and pics.shape == (2, 96, 160, 3)
        assert np.array_equal(pics, np.stack([tensor2im(y) for y in want]))
    with make_runner(onnx_graphs[("tensor", "uint8")]) as r:
        assert np.array_equal(r.infer(x).astype(np.uint8), np.stack([tensor2im(y) for y in want]))


def test_run_with_onnxruntime_equals_the_seed_chain(tmp_path, scene_dataroot, onnx_graphs):
    run_cli(["pix2pixhd_preprocess.py", scene_dataroot, tmp_path / "prep"])
    run_cli(["pix2pixhd-deploy", "infer", f"--model={onnx_graphs[('tensor', 'float')]}", "--input", tmp_path / "prep",
             "--output", tmp_path / "result", "--output_dirname", "bs1"])
    run_cli(["pix2pixhd_postprocess.py", tmp_path / "result" / "bs1", tmp_path / "chain"])
    for fmt, streams in [(("tensor", "float"), 1), (("maps", "float"), 1), (("maps", "uint8"), 1),
                         (("maps", "uint8"), 2)]:
        out = tmp_path / f"run_{fmt[0]}_{fmt[1]}_{streams}"
        run_cli(["pix2pixhd-deploy", "run", "--dataroot", scene_dataroot, "--model", onnx_graphs[fmt],
                 "--output", out, "--batch-size", "2", "--streams", str(streams)])
        got = pictures(out)
        assert len(got) == 3
        for name, pic in got.items():
            stem = name.replace("_synthesized_image.png", "")
            assert np.array_equal(pic, np.asarray(Image.open(tmp_path / "chain" / f"{stem}_0generated.png"))), fmt


def test_run_with_the_stems_graph(tmp_path, scene_dataroot, small_checkpoint):
    """The stems graph: the stems computed from the maps, the rest in ONNX Runtime; within one level of the chain
    (the stems add in another order than a convolution, so a value can cross a truncation boundary)."""
    pytest.importorskip("onnxruntime", reason="ONNX Runtime is not installed (pip install onnxruntime)")
    from pix2pixhd_deploy.export import export_onnx

    graph = tmp_path / "stems.onnx"
    report = export_onnx(small_checkpoint, graph, height=64, width=128, dynamic_hw=True, input_format="stems",
                         output_format="uint8")
    assert report.verified and (tmp_path / "stems.onnx.stems.npz").is_file()
    run_cli(["pix2pixhd_preprocess.py", scene_dataroot, tmp_path / "prep"])
    run_cli(["pix2pixhd-deploy", "infer", "--model", small_checkpoint, "--input", tmp_path / "prep", "--output",
             tmp_path / "result", "--output_dirname", "bs1", "--device", "cpu"])
    run_cli(["pix2pixhd_postprocess.py", tmp_path / "result" / "bs1", tmp_path / "chain"])
    import importlib.util
    backends = ["onnxruntime"] + (["openvino"] if importlib.util.find_spec("openvino") else [])
    for backend, streams in [(b, s) for b in backends for s in (1, 2)]:
        out = tmp_path / f"run_{backend}_{streams}"
        run_cli(["pix2pixhd-deploy", "run", "--dataroot", scene_dataroot, "--model", graph, "--output", out,
                 "--streams", str(streams), "--backend", backend])
        got = pictures(out)
        assert len(got) == 3
        for name, pic in got.items():
            chain = np.asarray(Image.open(tmp_path / "chain" / name.replace("_synthesized_image.png",
                                                                            "_0generated.png")))
            diff = np.abs(pic.astype(int) - chain.astype(int))
            assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    (tmp_path / "stems.onnx.stems.npz").unlink()
    proc = run_cli(["pix2pixhd-deploy", "run", "--dataroot", scene_dataroot, "--model", graph, "--output",
                    tmp_path / "run3"], check=False)
    assert proc.returncode == 2 and "stem weights file of this graph is missing" in proc.stderr
