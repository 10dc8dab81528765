"""The ais_bench runner against a fake of each line of ais_bench in use, built from the real sources.

ais_bench needs an Ascend NPU and CANN, so these are contract tests. ``tests/fake_ascend/`` holds one fake
``ais_bench.infer.interface`` per line (``t2023``: Ascend/tools 2023-06; ``ait``: the ait build; ``current``: the
gitee tools of 2025), each mirroring that line's Python code and naming the repository, path and commit it follows,
over one simulated device (``fake_acl.py``, from aclruntime's C++). An "OM" is what ``fake_atc.py`` makes from the
``atc`` line that ``pix2pixhd-deploy export`` prints; the fakes run the ONNX it names with ONNX Runtime on the CPU.

If a real ais_bench changes, its fake is the file to update; the runner must keep passing all three.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import re
import shlex
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_within_one_level, rng_input, run_cli

from pix2pixhd_deploy.errors import UserError
from pix2pixhd_deploy.runners import AisBenchRunner, TorchRunner, ais_bench_runner, make_runner

FAKES = Path(__file__).resolve().parent / "fake_ascend"
LINES = ("t2023", "ait", "current")
H, W = 64, 128
FAKE_MODULES = ("aclruntime", "ais_bench", "ais_bench.infer", "ais_bench.infer.interface")
AIS_BENCH_INSTALLED = importlib.util.find_spec("ais_bench") is not None  # before any fake is imported
sys.path.insert(0, str(FAKES))
import fake_acl  # noqa: E402
import fake_atc  # noqa: E402


def install_fake(monkeypatch, line: str = "current"):
    """Make ``import ais_bench.infer.interface`` give ``line``'s fake, on a fresh simulated device."""
    for name in FAKE_MODULES:  # recorded as absent (or as they were), so the fake never outlives the test
        monkeypatch.setitem(sys.modules, name, None)
        del sys.modules[name]
    monkeypatch.syspath_prepend(str(FAKES / line))
    for name in FAKE_MODULES:
        importlib.import_module(name)
    fake_acl.reset()
    monkeypatch.setattr(ais_bench_runner, "FINALIZER", ais_bench_runner._ProcessFinalizer())
    return fake_acl.ACL


def fake_env(line: str = "current") -> dict:
    """The environment that gives a subprocess ``line``'s fake."""
    import os

    return {"PYTHONPATH": os.pathsep.join([str(FAKES / line), os.environ.get("PYTHONPATH", "")])}


_ONNX_CACHE: dict = {}


def export_graph(checkpoint: Path, input_format: str = "tensor", output_format: str = "float"):
    """(onnx path, export report) for ``checkpoint`` at 64x128 with a dynamic batch axis, exported once."""
    from pix2pixhd_deploy.export import export_onnx

    key = (str(checkpoint), input_format, output_format)
    if key not in _ONNX_CACHE:
        out = Path(checkpoint).parent / f"g_{input_format}_{output_format}.onnx"
        report = export_onnx(checkpoint, out, height=H, width=W, input_format=input_format,
                             output_format=output_format)
        _ONNX_CACHE[key] = (out, report)
    return _ONNX_CACHE[key]


def write_om(path: Path, checkpoint: Path, batch: int, gears=(1, 4, 8), input_format: str = "tensor",
             output_format: str = "float") -> Path:
    """Compile an "OM" with the atc line that export printed: batch -1 is the --dynamic_batch_size line."""
    _, report = export_graph(checkpoint, input_format, output_format)
    line = report.atc_commands[-1 if batch == -1 else 0]
    line = re.sub(r'(\w+):(-?\d+),', lambda m: f"{m.group(1)}:{batch},", line)  # every input's batch
    line = re.sub(r'--dynamic_batch_size="[^"]*"', f'--dynamic_batch_size="{",".join(map(str, gears))}"', line)
    line = re.sub(r"--output=\S+", f"--output={shlex.quote(str(path.with_suffix('')))}", line)
    om = fake_atc.run_command(line)
    om.chmod(0o644)
    return om


@pytest.fixture(params=LINES)
def line(request, monkeypatch):
    install_fake(monkeypatch, request.param)
    return request.param


def torch_outputs(checkpoint, x):
    with TorchRunner(checkpoint, device="cpu") as runner:
        return runner.infer(x)


def torch_pictures(checkpoint, labels, insts):
    """The uint8 (N, H, W, 3) pictures the checkpoint makes from label and instance maps (the maps graph's form)."""
    with TorchRunner(checkpoint, device="cpu", input_format="maps", output_format="uint8") as ref:
        return ref.infer({"label": labels, "inst": insts})


def assert_close(got, want, what=""):
    """The float outputs of one graph computed twice: same shape, within 1e-4 (NaN and inf fail too)."""
    got = np.asarray(got)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    assert np.isfinite(got).all(), (what, "values that are not finite")
    err = float(np.abs(got.astype(np.float64) - want).max())
    assert err <= 1e-4, (what, err)


@contextlib.contextmanager
def open_session(om: Path):
    """The installed fake's own InferSession on NPU 0 and this thread, without the runner; freed on exit."""
    from ais_bench.infer.interface import InferSession

    session = InferSession(0, str(om))
    try:
        yield session
    finally:
        if hasattr(session, "free_resource"):
            session.free_resource()


# ------------------------------------------------------------------------------------------------- the runner

def test_static_om(line, small_checkpoint, tmp_path):
    om = write_om(tmp_path / "pix2pixhd_bs2.om", small_checkpoint, batch=2)
    x = rng_input((2, 36, H, W), seed=2)
    with make_runner(om, device="1") as runner:
        assert isinstance(runner, AisBenchRunner) and runner.thread_bound == (line == "t2023")
        assert runner.input_spec().shape == (2, 36, H, W) and runner.output_spec().dtype == "float32"
        y = runner.infer(x)
        assert runner.inference_time == pytest.approx(7.5e-3)  # the tool's own exec time, 7.5 ms for the first run
        y2 = runner.infer(x)
        assert runner.inference_time == pytest.approx(7.5e-3)  # the list is reset after each read
        with pytest.raises(UserError, match="axis 0"):
            runner.infer(x[:1])
    assert np.array_equal(y, y2) and y.shape == (2, 3, H, W)
    assert np.abs(y - torch_outputs(small_checkpoint, x)).max() <= 1e-4
    assert fake_acl.ACL.loaded == {} and not fake_acl.ACL.finalized  # freed, and ACL still usable
    ais_bench_runner.finalize_at_exit()
    assert fake_acl.ACL.finalize_calls == (0 if line == "t2023" else 1)  # the static finalize, once


def test_dynamic_batch_om_takes_its_gears(line, small_checkpoint, tmp_path, capfd):
    om = write_om(tmp_path / "pix2pixhd_dynbs.om", small_checkpoint, batch=-1, gears=(1, 4, 8))
    x = rng_input((4, 36, H, W), seed=3)
    capfd.readouterr()
    with make_runner(om, device="0") as runner:
        assert runner.gears == [1, 4, 8] and runner.input_spec().batch is None
        y4 = runner.infer(x)
        y1 = runner.infer(x[1:2])  # switching gears between calls
        with pytest.raises(UserError, match=r"batches of 1, 4, 8 .*not 3"):
            runner.infer(x[:3])
    # probing 1..8 missed 2, 3, 5, 6 and 7; for each the tool's C++ wrote two lines to fd 1, past sys.stdout
    seen = capfd.readouterr()
    assert "dymBatch parameter" not in seen.out + seen.err  # the probing's tool log was silenced at the fd
    assert "model has dynamic batch size" not in seen.out + seen.err
    with open_session(om) as session, pytest.raises(RuntimeError):  # the control: without the runner, it shows
        session.set_dynamic_batchsize(3)
    assert "[ERROR] the dymBatch parameter is not correct" in capfd.readouterr().out
    want = torch_outputs(small_checkpoint, x)
    assert_close(y4, want, "batch 4")
    assert_close(y1, want[1:2], "batch 1")


@pytest.mark.parametrize("layout", ["largest_gear", "flat", "batch"])
def test_dynamic_batch_outputs_are_cut_to_the_batch(line, layout, small_checkpoint, tmp_path, monkeypatch):
    """A dynamic-batch OM's output comes back in the buffer allocated for its largest gear, past the batch's samples
    stale device memory (fake_acl.DYNAMIC_BATCH_OUTPUTS); the runner returns the batch's samples, the model's."""
    monkeypatch.setattr(fake_acl, "DYNAMIC_BATCH_OUTPUTS", layout)
    om = write_om(tmp_path / "dyn.om", small_checkpoint, batch=-1, gears=(1, 2, 8))
    x = rng_input((8, 36, H, W), seed=11)
    want = torch_outputs(small_checkpoint, x)
    per_sample = 3 * H * W
    with open_session(om) as session:  # the control: what the tool itself hands back for a batch of 2
        session.set_dynamic_batchsize(2)
        raw = np.asarray(session.infer([x[:2]], mode="dymbatch")[0])
    assert raw.size == (2 if layout == "batch" else 8) * per_sample
    assert_close(raw.reshape(-1)[: 2 * per_sample].reshape(want[:2].shape), want[:2], "the tool's first samples")
    if layout != "batch":
        assert not np.isfinite(raw.reshape(-1)[2 * per_sample:]).all()  # the tail is garbage, not outputs
    with make_runner(om) as runner:
        for n in (2, 8, 1, 2):  # up and down the gears
            assert_close(runner.infer(x[:n]), want[:n], f"batch {n} ({layout})")


def test_dymbatch_fixes_the_gear_and_is_checked(line, small_checkpoint, tmp_path):
    om = write_om(tmp_path / "dyn.om", small_checkpoint, batch=-1, gears=(1, 4, 8))
    x = rng_input((4, 36, H, W), seed=1)
    with make_runner(om, dym_batch=4) as runner:
        assert runner.input_spec().shape == (4, 36, H, W)
        y = runner.infer(x)
    assert_close(y, torch_outputs(small_checkpoint, x))
    with pytest.raises(UserError, match=r"--dymBatch 3 is not a gear of the OM \(it has 1, 4, 8\)"):
        make_runner(om, dym_batch=3).activate()
    assert fake_acl.ACL.loaded == {}  # the refused session was freed too


def test_bench_three_gears_in_one_process(line, small_checkpoint, tmp_path):
    from pix2pixhd_deploy.bench import run_bench

    om = write_om(tmp_path / "dyn.om", small_checkpoint, batch=-1, gears=(1, 2, 4))
    report = run_bench(om, batch_sizes=[1, 2, 4], loops=2, warmup=1, e2e_batches=1, device="0")
    for run, bs in zip(report["runs"], (1, 2, 4)):
        assert "skipped" not in run and run["input_shape"][0] == bs and run["end_to_end"]["images"] == bs
        assert all(t % 1 == 0.5 for t in run["device_only"]["times_ms"])  # the fake's exec times (7.5 + k ms)
    assert not fake_acl.ACL.finalized and fake_acl.ACL.loaded == {}


def test_called_from_a_worker_thread(line, small_checkpoint, tmp_path):
    """run computes on worker threads; the 2023 build has the ACL context only where the session was made."""
    om = write_om(tmp_path / "bs1.om", small_checkpoint, batch=1)
    x = rng_input((1, 36, H, W), seed=4)
    with make_runner(om) as runner, ThreadPoolExecutor(2) as pool:
        outs = list(pool.map(runner.infer, [x, x, x]))
    assert all(np.array_equal(o, outs[0]) for o in outs)
    assert_close(outs[0], torch_outputs(small_checkpoint, x))
    if line == "t2023":  # the fake holds the constraint: the same call without the runner's thread fails
        from ais_bench.infer.interface import InferSession

        session = InferSession(0, str(om))
        with ThreadPoolExecutor(1) as pool, pytest.raises(RuntimeError, match="context is empty"):
            pool.submit(session.infer, [x]).result()


def test_maps_om_with_two_integer_inputs_and_uint8_output(line, small_checkpoint, tmp_path):
    from pix2pixhd_deploy.export import seeded_maps
    from pix2pixhd_deploy.runners.adapter import make_adapter

    om = write_om(tmp_path / "maps_bs2.om", small_checkpoint, batch=2, input_format="maps", output_format="uint8")
    labels, insts = seeded_maps(3, H, W, seed=5)
    with make_runner(om) as runner:
        assert [(s.name, s.dtype) for s in runner.input_specs()] == [("label", "uint8"), ("inst", "int32")]
        assert runner.output_spec().shape == (2, H, W, 3) and runner.output_format == "uint8"
        pictures, raw = make_adapter(runner)(labels, insts)  # 3 maps on a bs2 OM: split, the last one padded
    with TorchRunner(small_checkpoint, device="cpu", input_format="maps", output_format="uint8") as ref:
        want = ref.infer({"label": labels, "inst": insts})
    assert pictures.shape == (3, H, W, 3) and raw is None
    assert np.abs(pictures.astype(int) - want.astype(int)).max() <= 1


def test_run_command_with_a_maps_uint8_om(line, small_checkpoint, scene_dataroot, tmp_path):
    """``run --model X.om``: the pipeline's compute threads call the runner (two streams: two threads)."""
    from pix2pixhd_deploy.cli.main import main

    om = write_om(tmp_path / "maps_dyn.om", small_checkpoint, batch=-1, gears=(1, 2), input_format="maps",
                  output_format="uint8")
    from PIL import Image

    from pix2pixhd_deploy.data.labelmaps import read_instance_map, read_label_map

    out = tmp_path / "pics"
    assert main(["run", "--dataroot", str(scene_dataroot), "--model", str(om), "--output", str(out),
                 "--batch-size", "2", "--streams", "2", "--device", "0"]) == 0
    assert len(list(out.glob("images/*_synthesized_image.png"))) == 3
    labels = sorted((scene_dataroot / "test_label").glob("*.png"))  # 3 maps at batch 2: gears 2 and 1
    want = torch_pictures(small_checkpoint, np.stack([read_label_map(p) for p in labels]),
                          np.stack([read_instance_map(scene_dataroot / "test_inst" /
                                                      p.name.replace("labelIds", "instanceIds")) for p in labels]))
    for path, w in zip(labels, want):
        name = f"{path.stem}_synthesized_image.png"
        assert_within_one_level(np.asarray(Image.open(out / "images" / name)), w, name)


# ------------------------------------------------------------------------------------------------- model paths

def test_a_symlinked_or_writable_om_is_refused_first(line, small_checkpoint, tmp_path):
    om = write_om(tmp_path / "bs1.om", small_checkpoint, batch=1)
    link = tmp_path / "link.om"
    link.symlink_to(om)
    with pytest.raises(UserError, match="symbolic link") as err:
        make_runner(link).activate()
    assert str(om) in str(err.value)
    om.chmod(0o664)
    with pytest.raises(UserError, match=r"writable by its group .*chmod go-w"):
        make_runner(om).activate()
    assert fake_acl.ACL.loaded == {}


def test_the_current_tools_path_rules(monkeypatch, small_checkpoint, tmp_path):
    install_fake(monkeypatch, "current")
    folder = tmp_path / "my models"
    folder.mkdir()
    om = write_om(folder / "bs1.om", small_checkpoint, batch=1)
    with pytest.raises(UserError, match="refuses paths with the characters ' '"):
        make_runner(om).activate()
    install_fake(monkeypatch, "ait")  # the ait build has no path rules: the same file loads
    with make_runner(om) as runner:
        assert runner.input_spec().batch == 1


def test_missing_device_and_bad_device_are_user_errors(line, small_checkpoint, tmp_path):
    om = write_om(tmp_path / "bs1.om", small_checkpoint, batch=1)
    with pytest.raises(UserError, match="NPU 7"):
        make_runner(om, device="7").activate()
    with pytest.raises(UserError, match="NPU number"):
        make_runner(om, device="cuda").activate()
    with pytest.raises(UserError, match="does not exist"):
        make_runner(tmp_path / "missing.om").activate()


# ------------------------------------------------------------------------------------------------- the infer CLI

def test_seed_command_line_static_bs4_with_a_short_last_batch(line, small_checkpoint, tmp_path, monkeypatch,
                                                             capsys):
    """The seed's ais_bench line with the program renamed: 5 inputs on a bs4 OM -> 2 runs, 5 outputs."""
    import json

    from pix2pixhd_deploy.cli.main import main

    om = write_om(tmp_path / "pix2pixhd_bs4.om", small_checkpoint, batch=4)
    prep = tmp_path / "prep_datasets"
    prep.mkdir()
    x = rng_input((5, 36, H, W), seed=4)
    names = [f"city_{i}_gtFine_labelIds" for i in (1, 2, 3, 10, 20)]  # natural order differs from sorted
    for name, sample in zip(names, x):
        sample.tofile(prep / f"{name}.bin")
    monkeypatch.chdir(tmp_path)
    rc = main(["infer", f"--model={om.name}", "--input=./prep_datasets/", "--output=./result/",
               "--output_dirname=bs4", "--outfmt=BIN", "--batchsize=4", "--device", "0"])
    assert rc == 0
    stdout = capsys.readouterr().out
    out = tmp_path / "result" / "bs4"
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}_0.bin" for n in names)
    want = torch_outputs(small_checkpoint, x)
    for name, w in zip(names, want):
        got = np.fromfile(out / f"{name}_0.bin", np.float32)
        assert np.abs(got - w.ravel()).max() <= 1e-4
    summary = json.loads((tmp_path / "result" / "bs4_summary.json").read_text())
    assert summary["npu_compute_time_list"] == [7.5, 7.5]  # warm-up excluded; each read resets the tool's list
    assert summary["throughput"] == pytest.approx(1000 * 4 / 7.5)
    assert summary["H2D_latency"] is None and summary["D2H_latency"] is None  # never measured: null, not 0
    assert [v["infiles"][0].split("/")[-1] for v in summary["filesinfo"].values()] == [f"{n}.bin" for n in names]
    assert "throughput 1000*batchsize.mean(4)/NPU_compute_time.mean(" in stdout


def test_seed_command_line_dynamic_om(line, small_checkpoint, tmp_path, monkeypatch):
    from pix2pixhd_deploy.cli.main import main

    om = write_om(tmp_path / "pix2pixhd_dynbs.om", small_checkpoint, batch=-1)
    prep = tmp_path / "prep"
    prep.mkdir()
    x = rng_input((3, 36, H, W), seed=5)
    for i, sample in enumerate(x):
        sample.tofile(prep / f"s{i}.bin")
    monkeypatch.chdir(tmp_path)
    assert main(["infer", f"--model={om.name}", "--input=prep", "--output=res", "--output_dirname=d",
                 "--dymBatch", "4", "--device", "0"]) == 0
    assert sorted(p.name for p in (tmp_path / "res" / "d").iterdir()) == ["s0_0.bin", "s1_0.bin", "s2_0.bin"]
    want = torch_outputs(small_checkpoint, x)  # 3 inputs at --dymBatch 4: one padded run, its output cut to 3
    for i, w in enumerate(want):
        assert_close(np.fromfile(tmp_path / "res" / "d" / f"s{i}_0.bin", np.float32).reshape(w.shape), w, i)


def test_not_installed_is_one_line(tmp_path):
    """Without ais_bench (as here): one line naming where to get it, exit 2, no traceback."""
    if AIS_BENCH_INSTALLED:
        pytest.skip("ais_bench is installed here")
    om = tmp_path / "pix2pixhd_bs1.om"
    om.write_bytes(b"not really an om")
    proc = run_cli(["pix2pixhd-deploy", "infer", f"--model={om}", "--output", str(tmp_path / "r"),
                    "--device", "0"], check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "ais_bench is not installed" in lines[0] and "Ascend/tools" in lines[0]
    assert str(om) in lines[0] and not (tmp_path / "r").exists()


def test_fakes_name_their_sources():
    """Each fake says which repository, path (and commit, where the index gives one) it follows."""
    for line in LINES:
        doc = (FAKES / line / "ais_bench" / "infer" / "interface.py").read_text()
        assert re.search(r"(Ascend/tools|sync-ait|Yanguan619/aclruntime)", doc)
        assert "interface.py" in doc
    assert threading.current_thread() is threading.main_thread()


def _prep_bins(folder: Path, n: int, seed: int = 7) -> np.ndarray:
    folder.mkdir()
    x = rng_input((n, 36, H, W), seed=seed)
    for i, sample in enumerate(x):
        sample.tofile(folder / f"s{i}.bin")
    return x


def test_infer_without_output_saves_nothing_and_prints_the_summary(monkeypatch, small_checkpoint, tmp_path, capsys):
    from pix2pixhd_deploy.cli.main import main

    install_fake(monkeypatch, "current")
    om = write_om(tmp_path / "bs1.om", small_checkpoint, batch=1)
    _prep_bins(tmp_path / "prep", 2)
    before = sorted(p.name for p in tmp_path.iterdir())
    monkeypatch.chdir(tmp_path)
    assert main(["infer", "--model", str(om), "--input", "prep", "--display_all_summary", "1", "--debug", "1"]) == 0
    out = capsys.readouterr().out
    assert "throughput 1000*batchsize.mean(1)" in out and "H2D_latency (ms): not measured" in out
    assert "nothing saved" in out and sorted(p.name for p in tmp_path.iterdir()) == before


def test_npy_outputs_keep_the_batch_axis_and_the_split_axis_is_checked(monkeypatch, small_checkpoint, tmp_path):
    from pix2pixhd_deploy.cli.main import main

    install_fake(monkeypatch, "ait")
    om = write_om(tmp_path / "bs2.om", small_checkpoint, batch=2)
    x = _prep_bins(tmp_path / "prep", 3)
    assert main(["infer", "--model", str(om), "--input", str(tmp_path / "prep"), "--output", str(tmp_path / "r"),
                 "--output_dirname", "n", "--outfmt", "NPY"]) == 0
    assert [np.load(p).shape for p in sorted((tmp_path / "r" / "n").glob("*.npy"))] == [(1, 3, H, W)] * 3
    want = torch_outputs(small_checkpoint, x)
    for i, w in enumerate(want):
        assert_close(np.load(tmp_path / "r" / "n" / f"s{i}_0.npy"), w[None], i)
    assert main(["infer", "--model", str(om), "--input", str(tmp_path / "prep"), "--output_batchsize_axis", "1"]) == 2


@pytest.mark.parametrize("flag", ["--profiler", "--dymShape", "--acl_json_path"])
def test_ais_bench_flags_left_out_are_refused_in_one_line(flag, tmp_path):
    proc = run_cli(["pix2pixhd-deploy", "infer", "--model", tmp_path / "x.om", flag, "1"], check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")] == [
        ln for ln in proc.stderr.splitlines() if flag in ln]


def test_two_devices_one_process_each(monkeypatch, small_checkpoint, tmp_path, capsys):
    from pix2pixhd_deploy.cli.main import main

    install_fake(monkeypatch, "t2023")  # the spawned processes import the fake from this sys.path
    om = write_om(tmp_path / "bs1.om", small_checkpoint, batch=1)
    x = _prep_bins(tmp_path / "prep", 2)
    assert main(["infer", "--model", str(om), "--input", str(tmp_path / "prep"), "--output", str(tmp_path / "r"),
                 "--output_dirname", "bs1", "--device", "0,1"]) == 0
    out = capsys.readouterr().out
    want = torch_outputs(small_checkpoint, x)
    for d in (0, 1):
        folder = tmp_path / "r" / "bs1" / f"device{d}"
        assert sorted(p.name for p in folder.iterdir()) == ["s0_0.bin", "s1_0.bin"]
        for i, w in enumerate(want):
            assert_close(np.fromfile(folder / f"s{i}_0.bin", np.float32).reshape(w.shape), w, (d, i))
        assert (tmp_path / "r" / "bs1" / f"device{d}_summary.json").is_file()
    per_device = [float(m) for m in re.findall(r"i:\d device_\d throughput:([\d.]+)", out)]
    total = float(re.search(r"summary throughput:([\d.]+)", out).group(1))
    assert len(per_device) == 2 and total == pytest.approx(sum(per_device), abs=1e-3)


def test_a_maps_om_through_infer_takes_one_folder_per_input(monkeypatch, small_checkpoint, tmp_path):
    from pix2pixhd_deploy.cli.main import main
    from pix2pixhd_deploy.export import seeded_maps

    install_fake(monkeypatch, "current")
    om = write_om(tmp_path / "maps_bs1.om", small_checkpoint, batch=1, input_format="maps", output_format="uint8")
    labels, insts = seeded_maps(2, H, W, seed=3)
    for name, maps in (("label", labels), ("inst", insts)):
        (tmp_path / name).mkdir()
        for i, m in enumerate(maps):
            m.tofile(tmp_path / name / f"c_{i}.bin")
    assert main(["infer", "--model", str(om), "--input", f"{tmp_path / 'label'},{tmp_path / 'inst'}",
                 "--output", str(tmp_path / "r"), "--output_dirname", "m"]) == 0
    want = torch_pictures(small_checkpoint, labels, insts)
    for i, w in enumerate(want):
        got = np.fromfile(tmp_path / "r" / "m" / f"c_{i}_0.bin", np.uint8)
        assert got.size == H * W * 3
        assert_within_one_level(got.reshape(w.shape), w, f"c_{i}")
    assert main(["infer", "--model", str(om), "--input", str(tmp_path / "label")]) == 2  # one folder for two inputs


# ------------------------------------------------------------------------------------------------- export's atc lines

@pytest.mark.parametrize("form", ["tensor", "maps", "stems"])
def test_every_atc_line_export_prints_compiles_and_runs(form, monkeypatch, small_checkpoint, tmp_path):
    """Each printed atc line is checked by the fake atc (names, ranks, static sizes, NCHW only for 4-D inputs) and
    the OM it makes runs through the runner with the graph's own inputs."""
    from pix2pixhd_deploy.export import seeded_maps
    from pix2pixhd_deploy.runners.adapter import make_adapter

    install_fake(monkeypatch, "current")
    _, report = export_graph(small_checkpoint, form, "uint8" if form == "maps" else "float")
    want_layout = "--input_format=ND" if form == "maps" else "--input_format=NCHW"
    assert len(report.atc_commands) == 4 and all(want_layout in c for c in report.atc_commands)
    if form == "maps":
        assert f'--input_shape="label:1,{H},{W};inst:1,{H},{W}"' in report.atc_commands[0]
    labels, insts = seeded_maps(4, H, W, seed=1)
    want = torch_pictures(small_checkpoint, labels, insts)
    for command in report.atc_commands:
        om = fake_atc.run_command(command)  # the OM lands beside the graph, as atc --output says
        om.chmod(0o644)
        with make_runner(om) as runner:
            pictures, _ = make_adapter(runner)(labels, insts)
        assert_within_one_level(pictures, want, command)


def test_opset_14_warns_that_cann_6_refuses_it(small_checkpoint, tmp_path):
    from pix2pixhd_deploy.export import export_onnx

    report = export_onnx(small_checkpoint, tmp_path / "g14.onnx", opset=14, height=H, width=W, verify=False)
    assert any("opset 14 needs CANN 7" in n for n in report.notes)
    with pytest.raises(SystemExit, match="opset 14 is not supported"):
        fake_atc.run_command(report.atc_commands[0])
