"""``run --engine ray``: the local engine's outputs from a Ray cluster, resume, a worker killed mid-run, the CLI.

A single-node Ray cluster is started once for the module (2 CPUs, no dashboard, a 200 MB object store) and shut
down at its end; each run uses a pool of two model actors of half a CPU each, leaving one CPU for decoding. Ray
turns 127.0.0.1 into the machine's own address (``services.resolve_ip_for_localhost``), so the cluster listens
there, on this machine only.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import sys

import numpy as np
import pytest
from conftest import SMALL_LOCAL, failed_inputs_line, run_cli
from PIL import Image

from pix2pixhd_deploy.fileio import TMP_PREFIX

POOL = {"num_workers": 2, "cpus_per_worker": 0.5}


def outputs(folder):
    """Every file a run wrote under images/ and raw/, by relative path: pictures as arrays, raw files as bytes."""
    found = {}
    for p in sorted((folder / "images").iterdir()):
        found[f"images/{p.name}"] = np.asarray(Image.open(p)) if not p.name.startswith(TMP_PREFIX) else None
    for p in sorted((folder / "raw").iterdir()) if (folder / "raw").is_dir() else []:
        found[f"raw/{p.name}"] = p.read_bytes()
    return found


def assert_same_outputs(got, want):
    assert sorted(got) == sorted(want)
    for k in want:
        assert got[k] is not None, f"{k} is a leftover temporary file"
        assert (np.array_equal(got[k], want[k]) if isinstance(want[k], np.ndarray) else got[k] == want[k]), k


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'pix2pixhd-deploy[ray]')")
    pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'ray[data]')")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024 ** 2, log_to_driver=False,
             configure_logging=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """8 small Cityscapes-style pairs, a small generator, and what the local engine makes of them."""
    from pix2pixhd_deploy.data.dataset import cityscapes_pairs
    from pix2pixhd_deploy.data.synthetic import write_cityscapes_split
    from pix2pixhd_deploy.model.network import random_generator, save_checkpoint
    from pix2pixhd_deploy.run.local import run
    from pix2pixhd_deploy.run.settings import RunSettings
    from pix2pixhd_deploy.runners import make_runner

    root = tmp_path_factory.mktemp("ray_ref")
    checkpoint = save_checkpoint(random_generator(SMALL_LOCAL, seed=1), root / "ckpt" / "latest_net_G.pth")
    write_cityscapes_split(root / "val", 8, height=64, width=128, city="ulm")
    pairs = cityscapes_pairs(root / "val")

    def settings():
        return RunSettings(model=str(checkpoint), backend="torch", device="cpu", batch_size=2, save_raw=True)

    run(pairs, root / "local", make_runner(checkpoint, device="cpu"), settings(), show_progress=False)
    return {"root": root, "checkpoint": checkpoint, "pairs": pairs, "settings": settings,
            "local": outputs(root / "local"), "manifest": json.loads((root / "local" / "manifest.json").read_text())}


def test_ray_equals_the_local_engine_and_resumes(tmp_path, ray_cluster, reference):
    from pix2pixhd_deploy.run.local import run
    from pix2pixhd_deploy.run.ray import run_ray
    from pix2pixhd_deploy.runners import make_runner

    pairs, out = reference["pairs"], tmp_path / "ray"
    report = run_ray(pairs, out, reference["settings"](), show_progress=False, **POOL)
    assert report.done == 8 and report.skipped == 0 and not report.failed
    assert_same_outputs(outputs(out), reference["local"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["identity"] == reference["manifest"]["identity"]
    assert manifest["images"].keys() == reference["manifest"]["images"].keys()
    assert {e["worker"] for e in manifest["images"].values()} == set(report.workers)
    assert manifest["engine"]["name"] == "ray" and manifest["runner"] == reference["manifest"]["runner"]
    assert (out / "index.html").read_text().count("_synthesized_image.png\"") == 16
    assert "images/s while busy" in report.summary()

    # a re-run does nothing; a missing picture is made again, and only it, as the local engine makes it (alone in
    # its batch, so it may differ by a level from the batch-of-two picture: torch on a CPU does that)
    assert run_ray(pairs, out, reference["settings"](), show_progress=False, **POOL).skipped == 8
    shutil.copytree(reference["root"] / "local", tmp_path / "local")
    for folder in (out, tmp_path / "local"):
        os.remove(folder / "images" / f"{pairs[5].name}_synthesized_image.png")
    report = run_ray(pairs, out, reference["settings"](), show_progress=False, **POOL)
    assert (report.done, report.skipped) == (1, 7)
    run(pairs, tmp_path / "local", make_runner(reference["checkpoint"], device="cpu"), reference["settings"](),
        show_progress=False)
    assert_same_outputs(outputs(out), outputs(tmp_path / "local"))
    # a folder the local engine made is complete for the ray engine too (same identity, same names)
    assert run_ray(pairs, tmp_path / "local", reference["settings"](), show_progress=False, **POOL).skipped == 8


def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(tmp_path, ray_cluster, reference, caplog):
    from pix2pixhd_deploy.data.labels import colorize
    from pix2pixhd_deploy.fileio import atomic_save_image
    from pix2pixhd_deploy.run.ray import GeneratorStage, run_ray

    marker = tmp_path / "died"
    victim = reference["pairs"][3].name

    # Defined here so that Ray ships it by value to the workers (a test module is not importable there).
    class DyingStage(GeneratorStage):
        """Dies, the first time only, half-way through writing the victim: label written, a temporary file left,
        no picture."""

        def write(self, name, picture, label, raw):
            if name == victim and not marker.exists():
                marker.write_text(self.worker)
                atomic_save_image(self.out / "images" / f"{name}_input_label.png", colorize(label))
                (self.out / "images" / f"{TMP_PREFIX}{name}_synthesized_image.png.x").write_bytes(b"half")
                os._exit(1)
            super().write(name, picture, label, raw)

    out = tmp_path / "ray"
    with caplog.at_level(logging.WARNING, logger="pix2pixhd_deploy.run.ray"):
        report = run_ray(reference["pairs"], out, reference["settings"](), show_progress=False,
                         stage_cls=DyingStage, **POOL)
    dead = marker.read_text()
    assert report.done == 8 and not report.failed
    assert "a second record" not in caplog.text
    files = sorted(os.listdir(out / "images"))
    assert len(files) == len(set(files)) == 16, files  # every picture and label once, no temporary file
    assert_same_outputs(outputs(out), reference["local"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["images"]) == sorted(p.name for p in reference["pairs"])
    assert manifest["images"][victim]["worker"] != dead  # made again by a restarted actor


def test_cli_engine_ray_on_a_running_cluster_with_a_bad_input(tmp_path, ray_cluster, reference):
    from pix2pixhd_deploy.data.dataset import cityscapes_pairs
    from pix2pixhd_deploy.errors import UserError
    from pix2pixhd_deploy.run.local import run
    from pix2pixhd_deploy.runners import make_runner

    data = tmp_path / "val"
    shutil.copytree(reference["root"] / "val", data)
    bad = sorted(data.glob("*/*_labelIds.png"))[2]
    Image.fromarray(np.full((64, 128), 40, np.uint8)).save(bad)  # id 40 >= label_nc
    cmd = ["pix2pixhd-deploy", "run", "--cityscapes", data, "--checkpoint", reference["checkpoint"], "--backend", "torch", "--device",
           "cpu", "--save-raw", "--engine", "ray", "--address", ray_cluster, "--num-workers", "2",
           "--cpus-per-worker", "0.5", "--output", tmp_path / "out"]
    proc = run_cli(cmd, check=False)
    assert proc.returncode == 2 and "label ids 40 (8192 px) are outside 0..34" in proc.stderr
    proc = run_cli(cmd + ["--keep-going"], check=False)
    assert proc.returncode == 2 and "1 image(s) failed" in proc.stderr and bad.name in proc.stderr
    parsed = failed_inputs_line(proc.stderr)  # the local engine's line, and preprocess's and infer's
    assert (parsed["what"], parsed["count"]) == ("image", "1") and "label ids 40" in parsed["shown"]
    # the local engine, keeping going over the same inputs
    settings = reference["settings"]()
    settings.batch_size = 1
    with pytest.raises(UserError, match="1 image"):
        run(cityscapes_pairs(data), tmp_path / "local", make_runner(reference["checkpoint"], device="cpu"),
            settings, keep_going=True, show_progress=False)
    assert len(outputs(tmp_path / "local")) == 21
    assert_same_outputs(outputs(tmp_path / "out"), outputs(tmp_path / "local"))


def test_engine_ray_without_ray_says_what_to_install(tmp_path, scene_dataroot, small_checkpoint, monkeypatch,
                                                     capsys):
    from pix2pixhd_deploy.cli import main as cli

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as when it is not installed
    monkeypatch.setitem(sys.modules, "ray.data", None)
    args = ["run", "--dataroot", str(scene_dataroot), "--checkpoint", str(small_checkpoint), "--output",
            str(tmp_path / "out")]
    assert cli.main(args + ["--engine", "ray"]) == 2
    err = capsys.readouterr().err
    assert "--engine ray needs Ray Data" in err and "pip install 'pix2pixhd-deploy[ray]'" in err
    assert cli.main(args + ["--num-workers", "2"]) == 2
    assert "--num-workers apply only to --engine ray" in capsys.readouterr().err


def test_a_url_output_is_refused_with_the_way_round_it(reference):
    pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'pix2pixhd-deploy[ray]')")
    from pix2pixhd_deploy.errors import UserError
    from pix2pixhd_deploy.run.ray import run_ray

    with pytest.raises(UserError, match="the output is a URL.*mount the bucket"):
        run_ray(reference["pairs"], "s3://bucket/results", reference["settings"]())


def test_a_crash_that_repeats_ends_the_run_with_one_line(tmp_path, ray_cluster, reference):
    """A worker that dies on the same batch every time (SIGILL, a segfault, out of memory): a bounded number of
    restarts, then one error naming the inputs, every complete picture kept, and no actor left writing."""
    from pix2pixhd_deploy.errors import UserError
    from pix2pixhd_deploy.run.ray import GeneratorStage, _alive_model_actors, run_ray

    victim = reference["pairs"][5].name

    class AlwaysDying(GeneratorStage):
        def write(self, name, picture, label, raw):
            if name == victim:
                os._exit(1)
            super().write(name, picture, label, raw)

    settings = reference["settings"]()
    settings.batch_size = 1
    out = tmp_path / "ray"
    with pytest.raises(UserError, match="a model worker died 3 times, on a batch among") as err:
        run_ray(reference["pairs"], out, settings, show_progress=False, stage_cls=AlwaysDying, **POOL)
    assert victim in str(err.value)
    import ray

    assert not _alive_model_actors(ray)  # run_ray returned only once its actors were gone
    manifest = json.loads((out / "manifest.json").read_text())
    assert victim not in manifest["images"]
    assert not list((out / "images").glob(TMP_PREFIX + "*"))


def test_keep_going_records_compute_errors_alike_under_both_engines(tmp_path, ray_cluster, reference):
    """A batch whose compute raises a UserError: recorded and skipped with --keep-going, in the manifest record the
    local engine writes too (tests/test_pipeline.py)."""
    from pix2pixhd_deploy.data.dataset import cityscapes_pairs, load_pair
    from pix2pixhd_deploy.errors import UserError
    from pix2pixhd_deploy.fileio import atomic_save_image
    from pix2pixhd_deploy.run.ray import GeneratorStage, run_ray

    data = tmp_path / "val"
    shutil.copytree(reference["root"] / "val", data)
    pairs = cityscapes_pairs(data)
    for i, pair in enumerate(pairs):  # the victim's map alone starts with id 34
        label = load_pair(pair)[0].copy()
        label[0, 0] = 34 if i == 2 else 7
        atomic_save_image(pair.label, label)

    class Refusing(GeneratorStage):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            engine = self.engine

            def refuse(labels, insts, want_raw):
                if (labels[:, 0, 0] == 34).any():
                    raise UserError("the device refused this batch", fix="try again")
                return engine(labels, insts, want_raw)
            self.engine = refuse

    settings = reference["settings"]()
    settings.batch_size = 1
    with pytest.raises(UserError, match="1 image"):
        run_ray(pairs, tmp_path / "ray", settings, keep_going=True, show_progress=False, stage_cls=Refusing, **POOL)
    manifest = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    assert manifest["failed"] == {pairs[2].name: {"error": "the device refused this batch", "path": "",
                                                  "fix": "try again"}}
    assert len(manifest["images"]) == 7


def test_engine_ray_makes_runs_default_choice(tmp_path, ray_cluster, reference):
    """Without --backend, the Ray engine runs what the local engine would: the CPU graph from the model cache."""
    cache = tmp_path / "cache"
    common = ["pix2pixhd-deploy", "run", "--cityscapes", reference["root"] / "val", "--checkpoint",
              reference["checkpoint"], "--device", "cpu", "--cache-dir", cache]
    run_cli(common + ["--output", tmp_path / "local"])
    proc = run_cli(common + ["--engine", "ray", "--address", ray_cluster, "--num-workers", "2",
                             "--cpus-per-worker", "0.5", "--output", tmp_path / "ray"])
    assert "from the model cache" in proc.stderr
    manifest = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    assert manifest["settings"]["backend"] in ("openvino", "onnxruntime") and manifest["settings"]["graph_key"]
    assert_same_outputs(outputs(tmp_path / "ray"), outputs(tmp_path / "local"))


class _FakeCluster:
    """Just what _check_resources asks of ray."""

    def __init__(self, cpus, gpus=0.0):
        self.have = {"CPU": cpus, "GPU": gpus}

    def cluster_resources(self):
        return self.have


@pytest.mark.parametrize("workers, cpus_each, fix", [(2, 1.0, "--num-workers 1 or fewer"),
                                                      (1, 2.0, "lower --cpus-per-worker")])
def test_a_local_cluster_the_pool_would_fill_is_refused_in_one_line(workers, cpus_each, fix):
    """On a cluster this process started (it never grows) model actors that hold every CPU would leave the decoding
    tasks waiting for ever: refused before anything runs, with the number of workers that fits."""
    from pix2pixhd_deploy.errors import UserError
    from pix2pixhd_deploy.run.ray import _check_resources

    with pytest.raises(UserError) as err:
        _check_resources(_FakeCluster(2.0), workers, cpus_each, 0.0, local=True)
    assert "leave none for decoding" in str(err.value) and fix in str(err.value)
    _check_resources(_FakeCluster(2.0), 2, 0.5, 0.0, local=True)  # the module's pool fits: no error


def test_a_joined_cluster_short_of_cpus_only_warns(caplog):
    """A cluster joined by address may grow (an autoscaler), so there it is a warning, not a refusal."""
    from pix2pixhd_deploy.run.ray import _check_resources

    with caplog.at_level(logging.WARNING):
        _check_resources(_FakeCluster(2.0), 2, 1.0, 0.0, local=False)
        _check_resources(_FakeCluster(2.0), 1, 0.5, 1.0, local=False)
    assert "leave less than one for decoding" in caplog.text and "waits for GPU nodes" in caplog.text
    from pix2pixhd_deploy.errors import UserError

    with pytest.raises(UserError, match="GPU"):
        _check_resources(_FakeCluster(2.0), 1, 0.5, 1.0, local=True)
