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
from conftest import SMALL_LOCAL, error_line, failed_inputs_line, run_cli
from PIL import Image

from pix2pixhd_deploy.data.synthetic import write_cityscapes_split
from pix2pixhd_deploy.fileio import TMP_PREFIX
from pix2pixhd_deploy.seed.postprocess import tensor2im


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
             "--output", tmp_path / "run2", "--streams", "2", "--encode-threads", "3", "--device", "cpu"])
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
    from pix2pixhd_deploy.model.network import random_generator, save_checkpoint
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
    # the killed run's entries came back from its journal: every picture has one
    assert len(json.loads((tmp_path / "killed" / "manifest.json").read_text())["images"]) == 8
    assert all(np.array_equal(whole[k], resumed[k]) for k in whole)


def test_a_picture_written_but_never_recorded_gets_an_entry_on_resume(tmp_path, scene_dataroot, small_checkpoint):
    """A SIGKILL between a picture's rename and its journal line (seen once in a fresh clone's make test): the
    picture is complete, so it is not computed again, and the resumed run's manifest still has an entry for it."""
    cmd = ["pix2pixhd-deploy", "run", "--dataroot", scene_dataroot, "--checkpoint", small_checkpoint, "--backend",
           "torch", "--device", "cpu", "--output", tmp_path / "out"]
    run_cli(cmd)
    path = tmp_path / "out" / "manifest.json"
    manifest = json.loads(path.read_text())
    lost = sorted(manifest["images"])[1]
    del manifest["images"][lost]
    path.write_text(json.dumps(manifest))
    proc = run_cli(cmd)
    assert "3 already done" in proc.stdout
    images = json.loads(path.read_text())["images"]
    assert sorted(images) == sorted([*manifest["images"], lost])
    assert images[lost] == {"recovered": True} and all("compute_s" in e for k, e in images.items() if k != lost)


def test_keep_going_reports_bad_images_and_exits_nonzero(tmp_path, scene_dataroot, small_checkpoint):
    bad = scene_dataroot / "test_label" / "city_000000_000001_gtFine_labelIds.png"
    Image.fromarray(np.full((64, 128), 40, np.uint8)).save(bad)  # id 40 >= label_nc
    cmd = ["pix2pixhd-deploy", "run", "--dataroot", scene_dataroot, "--checkpoint", small_checkpoint, "--backend", "torch",
           "--device", "cpu", "--output"]
    proc = run_cli(cmd + [tmp_path / "stop"], check=False)
    error_line(proc, bad.name, "label ids 40 (8192 px) are outside 0..34", "--label-nc")  # one line, exit 2
    proc = run_cli(cmd + [tmp_path / "go", "--keep-going"], check=False)
    assert proc.returncode == 2 and "1 image(s) failed" in proc.stderr
    parsed = failed_inputs_line(proc.stderr)  # the line preprocess and infer end with (tests/test_bad_input.py)
    assert (parsed["what"], parsed["count"], parsed["done"]) == ("image", "1", "2")
    assert parsed["shown"].startswith(f"{bad.stem}: label ids 40")
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
    from pix2pixhd_deploy.export import seeded_maps
    from pix2pixhd_deploy.model.encoding import encode_input
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


# ------------------------------------------------------------------------------------ reliability (issue 13)

def fake_engine(calls=None, refuse=None):
    """An engine far faster than PNG writing: a grey picture per map, no model. ``refuse``: a label id whose
    batches raise a UserError, as a device that rejects an input."""
    from pix2pixhd_deploy.errors import UserError

    def engine(labels, insts, want_raw):
        if refuse is not None and (labels[:, 0, 0] == refuse).any():
            raise UserError("the device refused this batch", fix="try again")
        if calls is not None:
            calls()
        return np.full((*labels.shape, 3), 128, np.uint8), None
    return engine


def stream_run(pairs, out, engine, *, keep_going=False, batch_size=1, streams=1, model, encoders=0):
    """What pipeline.run does around its stages, with ``engine`` in place of a runner's."""
    from pix2pixhd_deploy.run import folder as runfolder
    from pix2pixhd_deploy.run import stream as streaming
    from pix2pixhd_deploy.run.settings import RunReport, RunSettings

    settings = RunSettings(model=str(model), backend="torch", device="cpu", batch_size=batch_size, streams=streams,
                           encoders=encoders)
    with runfolder.RunFolder(out, settings) as folder:
        report = RunReport(output=folder.out)
        todo = folder.todo(pairs)
        folder.prepare(todo)
        stream = streaming.Stream(folder, engine, settings, report, keep_going=keep_going, show_progress=False)
        try:
            stream.run(todo)
        finally:
            folder.save()
        folder.finish(pairs, report, write_index=False)
    return stream, report


def touch_fresh_pages(pages: int) -> None:
    """Write one byte into each of ``pages`` pages of memory never touched before: ``pages`` minor page faults."""
    import mmap

    with mmap.mmap(-1, pages * mmap.PAGESIZE) as m:
        m.madvise(mmap.MADV_NOHUGEPAGE)  # one fault a page even where transparent huge pages are always on
        for i in range(pages):
            m[i * mmap.PAGESIZE] = 1


@pytest.mark.parametrize("encoders", [1, 2])
def test_each_picture_counts_the_page_faults_of_its_own_decode_and_write(tmp_path, small_checkpoint, monkeypatch,
                                                                         encoders):
    """A picture's page faults are its share of the runtime's and those of its own decoding and writing, even when
    its writing overlaps the next picture's computation (held here until that writing is done), and when a decoder
    thread reads its last pair and ends during it: before, the writer's first-touched memory was counted against
    the next picture, and so was an ended thread's."""
    import threading

    from pix2pixhd_deploy.data.dataset import cityscapes_pairs
    from pix2pixhd_deploy.run import stream as streaming

    write_cityscapes_split(tmp_path / "val", 3, height=32, width=64, city="ulm")
    pairs = cityscapes_pairs(tmp_path / "val")
    decode_pages, write_pages = 1500, 3000
    written = [threading.Event() for _ in pairs]
    second_computing = threading.Event()
    real_write, real_decode, calls = streaming.write_outputs, streaming.decode_pair, []

    def write(out, name, *args):
        result = real_write(out, name, *args)
        touch_fresh_pages(write_pages)
        written[[p.name for p in pairs].index(name)].set()
        return result

    def decode(index, pair, options):
        if index == len(pairs) - 1:  # the last pair is read while the second picture computes
            assert second_computing.wait(60)
        touch_fresh_pages(decode_pages)
        return real_decode(index, pair, options)

    def decoders_alive():
        return [t for t in threading.enumerate() if t.name.startswith("run-decode")]

    def engine(labels, insts, want_raw):
        calls.append(len(calls))
        if len(calls) > 1:  # the previous picture is written while this one computes
            assert written[len(calls) - 2].wait(60)
        if len(calls) == 2:  # and the decoders read the last pair and end
            second_computing.set()
            for thread in decoders_alive():
                thread.join(60)
            assert not decoders_alive()
        return np.full((*labels.shape, 3), 128, np.uint8), None

    monkeypatch.setattr(streaming, "write_outputs", write)
    monkeypatch.setattr(streaming, "decode_pair", decode)
    stream, _ = stream_run(pairs, tmp_path / "out", engine, model=small_checkpoint, encoders=encoders)
    entries = {e["name"]: e for e in stream.recorded}
    for pair in pairs:
        e = entries[pair.name]
        assert e["minor_faults"] == e["compute_minor_faults"] + e["decode_minor_faults"] + e["write_minor_faults"]
        assert e["decode_minor_faults"] >= decode_pages and e["write_minor_faults"] >= write_pages, e
    for pair in pairs[1:]:  # the computation's own faults hold neither the writing nor the decoding beside it
        assert entries[pair.name]["compute_minor_faults"] < decode_pages // 2, entries[pair.name]


@pytest.mark.parametrize("batch_size,streams,encoders", [(1, 1, 1), (3, 2, 1), (1, 1, 4), (3, 2, 3)])
def test_a_device_faster_than_the_writer_waits_instead_of_piling_up_pictures(tmp_path, small_checkpoint,
                                                                             monkeypatch, batch_size, streams,
                                                                             encoders):
    import threading

    from pix2pixhd_deploy.data.dataset import cityscapes_pairs
    from pix2pixhd_deploy.run import stream as streaming

    write_cityscapes_split(tmp_path / "val", 60, height=32, width=64, city="ulm")
    pairs = cityscapes_pairs(tmp_path / "val")
    counts = {"made": 0, "written": 0, "peak": 0, "writing": 0, "most_writing": 0}
    lock = threading.Lock()
    real_write = streaming.write_outputs

    def slow_write(*args):
        with lock:
            counts["writing"] += 1
            counts["most_writing"] = max(counts["most_writing"], counts["writing"])
        time.sleep(0.01)  # a slow disk: the engine would run far ahead without back-pressure
        result = real_write(*args)
        with lock:
            counts["written"] += 1
            counts["writing"] -= 1
        return result

    def made():
        with lock:
            counts["peak"] = max(counts["peak"], counts["made"] - counts["written"])
            counts["made"] += batch_size

    monkeypatch.setattr(streaming, "write_outputs", slow_write)
    stream, report = stream_run(pairs, tmp_path / "out", fake_engine(made), batch_size=batch_size, streams=streams,
                                model=small_checkpoint, encoders=encoders)
    assert report.done == counts["written"] == 60
    bound = stream.limits.max_pictures(batch_size, streams)
    assert counts["peak"] <= bound < 30, (counts, bound)  # pictures made and not yet written: bounded
    assert stream.peak_unwritten <= bound
    assert 1 <= counts["most_writing"] <= encoders  # the pool writes in parallel, never more than its threads
    if encoders > 1:
        assert counts["most_writing"] > 1, counts
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert sorted(manifest["images"]) == sorted(p.name for p in pairs)


def test_an_encoder_thread_error_stops_the_run_and_names_the_picture(tmp_path, small_checkpoint, monkeypatch):
    from pix2pixhd_deploy.data.dataset import cityscapes_pairs
    from pix2pixhd_deploy.errors import UserError
    from pix2pixhd_deploy.run import stream as streaming

    write_cityscapes_split(tmp_path / "val", 12, height=32, width=64, city="ulm")
    pairs = cityscapes_pairs(tmp_path / "val")
    real_write = streaming.write_outputs

    def failing_write(out, name, *args):
        if name == pairs[4].name:
            raise UserError("the disk is full", path=out / name, fix="free some space")
        return real_write(out, name, *args)

    monkeypatch.setattr(streaming, "write_outputs", failing_write)
    with pytest.raises(UserError, match="the disk is full"):
        stream_run(pairs, tmp_path / "out", fake_engine(lambda: None), model=small_checkpoint, encoders=3)
    written = sorted(p.name for p in (tmp_path / "out" / "images").glob("*_synthesized_image.png"))
    assert pairs[4].name + "_synthesized_image.png" not in written and len(written) < 12


def test_the_manifest_exists_before_the_first_picture(tmp_path, scene_dataroot, small_checkpoint, monkeypatch):
    from pix2pixhd_deploy.data.dataset import find_pairs
    from pix2pixhd_deploy.run import stream as streaming
    from pix2pixhd_deploy.run.folder import JOURNAL

    seen = []
    real_write = streaming.write_outputs

    def write(out, *args):
        manifest = json.loads((out / "manifest.json").read_text())  # a SIGKILL now leaves it naming the weights
        seen.append(manifest["identity"]["model_sha256"])
        return real_write(out, *args)

    monkeypatch.setattr(streaming, "write_outputs", write)
    stream_run(find_pairs(scene_dataroot), tmp_path / "out", fake_engine(), model=small_checkpoint)
    assert len(seen) == 3 and len(set(seen)) == 1 and len(seen[0]) == 64
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert len(manifest["images"]) == 3 and not (tmp_path / "out" / JOURNAL).exists()


def test_keep_going_records_compute_errors_and_stops_without_it(tmp_path, scene_dataroot, small_checkpoint):
    from pix2pixhd_deploy.data.dataset import find_pairs, load_pair
    from pix2pixhd_deploy.errors import UserError
    from pix2pixhd_deploy.fileio import atomic_save_image

    pairs = find_pairs(scene_dataroot)
    victim = 1
    for i, pair in enumerate(pairs):  # the victim's map alone starts with id 34
        label = load_pair(pair)[0].copy()
        label[0, 0] = 34 if i == victim else 7
        atomic_save_image(pair.label, label)
    engine = fake_engine(refuse=34)
    with pytest.raises(UserError, match="the device refused this batch"):
        stream_run(pairs, tmp_path / "stop", engine, model=small_checkpoint)
    with pytest.raises(UserError, match="1 image"):
        stream_run(pairs, tmp_path / "go", engine, keep_going=True, model=small_checkpoint)
    manifest = json.loads((tmp_path / "go" / "manifest.json").read_text())
    # the record the Ray engine writes too (tests/test_ray_engine.py)
    assert manifest["failed"] == {pairs[victim].name: {"error": "the device refused this batch", "path": "",
                                                       "fix": "try again"}}
    assert len(pictures(tmp_path / "go")) == 2 and len(manifest["images"]) == 2


SLOW_RUN = """
import sys, time
import numpy as np
from pix2pixhd_deploy.run import folder as runfolder, stream
from pix2pixhd_deploy.run.settings import RunReport, RunSettings
from pix2pixhd_deploy.data.dataset import cityscapes_pairs
real_write = stream.write_outputs
def slow_write(*args):
    time.sleep(0.2)
    return real_write(*args)
stream.write_outputs = slow_write
engine = lambda labels, insts, raw: (np.full((*labels.shape, 3), 128, np.uint8), None)
settings = RunSettings(model=sys.argv[2], backend="torch", device="cpu", batch_size=2)
with runfolder.RunFolder(sys.argv[3], settings) as folder:
    todo = folder.todo(cityscapes_pairs(sys.argv[1]))
    folder.prepare(todo)
    try:
        stream.Stream(folder, engine, settings, RunReport(output=folder.out), show_progress=False).run(todo)
    finally:
        folder.save()
"""


def test_ctrl_c_finishes_the_picture_being_written_and_drops_the_backlog(tmp_path, small_checkpoint):
    """With a backlog of computed pictures waiting for a slow writer, Ctrl-C ends the run after the picture being
    written: no more pictures appear after the signal than the one in hand, none is partial."""
    write_cityscapes_split(tmp_path / "val", 40, height=32, width=64, city="ulm")
    out = tmp_path / "out"
    (tmp_path / "slow_run.py").write_text(SLOW_RUN)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, str(tmp_path / "slow_run.py"), str(tmp_path / "val"),
                             str(small_checkpoint), str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    images = out / "images"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and len(list(images.glob("*_synthesized_image.png"))) < 3:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGSTOP)
    before = len(list(images.glob("*_synthesized_image.png")))
    os.kill(proc.pid, signal.SIGINT)
    os.kill(proc.pid, signal.SIGCONT)
    _, err = proc.communicate(timeout=60)
    after = sorted(images.glob("*_synthesized_image.png"))
    assert "KeyboardInterrupt" in err and proc.returncode != 0
    assert before <= len(after) <= before + 1 < 40  # the picture in hand, not the backlog
    assert not list(images.glob(TMP_PREFIX + "*"))
    for p in after:
        Image.open(p).load()
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["images"]) == sorted(p.name.replace("_synthesized_image.png", "") for p in after)


def test_a_planted_lock_link_is_refused_and_its_target_untouched(tmp_path, scene_dataroot, small_checkpoint):
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    (out / ".pix2pixhd-deploy.lock").symlink_to(victim)
    proc = run_cli(["pix2pixhd-deploy", "run", "--dataroot", scene_dataroot, "--checkpoint", small_checkpoint,
                    "--device", "cpu", "--output", out], check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "lock file of this output folder is a symbolic link" in proc.stderr
    assert victim.read_text() == "keep me" and (out / ".pix2pixhd-deploy.lock").is_symlink()
    assert not (out / "images").exists()


def test_settings_that_do_not_change_pictures_do_not_block_a_resume():
    from pix2pixhd_deploy.run.settings import RunSettings

    base = RunSettings(model="m", backend="onnxruntime")
    assert base.identity() == RunSettings(model="m", backend="onnxruntime", batch_size=4, streams=2,
                                          image_format="jpg", save_raw=True).identity()
    assert base.identity() != RunSettings(model="m", backend="onnxruntime", fp16=True).identity()
    assert RunSettings(model="m", backend="onnxruntime", device="cuda:1").identity()["device"] == "cuda"


def fake_graph(path, props):
    """A tiny ONNX file with the provenance ``export`` writes."""
    onnx = pytest.importorskip("onnx", reason="onnx is not installed")
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
                              [helper.make_tensor("w", TensorProto.FLOAT, [4096], np.ones(4096).tolist())])
    model = helper.make_model(graph)
    helper.set_model_props(model, props)
    onnx.save(model, str(path))
    return path


def test_the_identity_of_a_stems_graph_covers_its_npz_and_refuses_a_foreign_one(tmp_path):
    from pix2pixhd_deploy.errors import UserError
    from pix2pixhd_deploy.model.network import random_generator
    from pix2pixhd_deploy.model.stems import StemWeights, sidecar_path
    from pix2pixhd_deploy.run.folder import graph_properties, resume_model_identity

    ckpt = "a" * 64
    graph = fake_graph(tmp_path / "g.onnx", {"pix2pixhd.export": json.dumps({"input_format": "stems"}),
                                             "pix2pixhd.checkpoint_sha256": ckpt})
    assert graph_properties(graph)["pix2pixhd.checkpoint_sha256"] == ckpt
    weights = StemWeights.from_generator(random_generator(SMALL_LOCAL, seed=1))
    with pytest.raises(UserError, match="stem weights file of this graph is missing"):
        resume_model_identity(graph)
    weights.save(sidecar_path(graph), checkpoint_sha256=ckpt)
    first = resume_model_identity(graph)
    assert first["checkpoint_sha256"] == ckpt and len(first["stems_sha256"]) == 64
    StemWeights.from_generator(random_generator(SMALL_LOCAL, seed=2)).save(sidecar_path(graph),
                                                                          checkpoint_sha256=ckpt)
    assert resume_model_identity(graph)["stems_sha256"] != first["stems_sha256"]  # other stems: another identity
    weights.save(sidecar_path(graph), checkpoint_sha256="b" * 64)  # the .npz of another export
    with pytest.raises(UserError, match="stem weights beside this graph come from another checkpoint"):
        resume_model_identity(graph)
    (tmp_path / "junk.onnx").write_bytes(b"\xff" * 10)
    assert graph_properties(tmp_path / "junk.onnx") == {}


def test_a_resume_with_other_stems_is_refused(tmp_path, scene_dataroot):
    from pix2pixhd_deploy.data.dataset import find_pairs
    from pix2pixhd_deploy.errors import UserError
    from pix2pixhd_deploy.model.network import random_generator
    from pix2pixhd_deploy.model.stems import StemWeights, sidecar_path

    graph = fake_graph(tmp_path / "g.onnx", {"pix2pixhd.export": json.dumps({"input_format": "stems"})})
    StemWeights.from_generator(random_generator(SMALL_LOCAL, seed=1)).save(sidecar_path(graph))
    pairs = find_pairs(scene_dataroot)
    stream_run(pairs[:2], tmp_path / "out", fake_engine(), model=graph)
    StemWeights.from_generator(random_generator(SMALL_LOCAL, seed=2)).save(sidecar_path(graph))
    with pytest.raises(UserError, match="made with other settings.*stems_sha256"):
        stream_run(pairs, tmp_path / "out", fake_engine(), model=graph)
