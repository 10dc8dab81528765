"""``run --profile``: the per-image timeline (stages, page faults, CPU seconds) and OpenVINO's per-layer counters."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import error_line, run_cli
from PIL import Image

from pix2pixhd_deploy.run.profile import STAGES, format_profile, summarise


def test_summary_takes_the_first_image_against_the_median_of_the_rest():
    images = [{"name": f"i{k}", "runtime_s": r, "compute_s": r + 0.5, "minor_faults": f, "done_s": d}
              for k, (r, f, d) in enumerate([(3.0, 1000, 4.0), (1.0, 10, 5.6), (2.0, 30, 8.0), (1.5, 20, 10.0)])]
    layers = [{"layer": "a", "type": "Convolution", "exec_type": "brgconv", "runs": 4, "seconds": 6.0, "cpu_seconds": 6.0},
              {"layer": "b", "type": "Convolution", "exec_type": "brgconv", "runs": 4, "seconds": 1.0, "cpu_seconds": 1.0},
              {"layer": "c", "type": "Add", "exec_type": "jit", "runs": 4, "seconds": 1.0, "cpu_seconds": 1.0}]
    p = summarise(images, 10.0, layers)
    assert p["first"]["runtime_s"] == 3.0 and p["steady"]["runtime_s"] == 1.5  # median of 1.0, 2.0, 1.5
    assert p["steady"]["minor_faults"] == 20 and p["steady_faults_of_first"] == pytest.approx(0.02)
    assert p["worst_faults_of_first"] == pytest.approx(0.03) and p["worst_faults_image"] == "i2"
    assert p["first_compute_of_steady"] == pytest.approx(3.5 / 2.0)
    assert p["wall_s_per_image"] == 2.5
    assert p["steady_wall_s_per_image"] == pytest.approx(2.0)  # (10.0 - 4.0) / 3
    assert p["steady_wall_of_runtime"] == pytest.approx(2.0 / 1.5)
    kinds = {k["kind"]: k for k in p["layers"]["by_kind"]}
    assert kinds["Convolution (brgconv)"]["seconds_per_infer"] == pytest.approx(7.0 / 4)
    assert kinds["Convolution (brgconv)"]["share"] == pytest.approx(7 / 8)
    assert [v["layer"] for v in p["layers"]["top"]] == ["a", "b", "c"]
    text = format_profile(p)
    assert "2.0% of the first image's, at most 3.0% (i2)" in text and "1.75x a steady one" in text and "87.5%" in text
    assert "one every 2.000 s: 1.33x the runtime's own 1.500 s" in text


def test_run_profile_writes_the_timeline_and_the_layers(tmp_path, scene_dataroot, small_checkpoint):
    out = tmp_path / "out"
    proc = run_cli(["pix2pixhd-deploy", "run", "--dataroot", scene_dataroot, "--checkpoint", small_checkpoint,
                    "--output", out, "--profile", "--cache-dir", tmp_path / "cache"])
    profile = json.loads((out / "profile.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    assert profile["images"] == 3 and len(profile["timeline"]) == 3
    for entry in profile["timeline"]:
        # the timeline is the manifest's record of each picture, every stage present and timed
        assert {k: v for k, v in entry.items() if k != "name"} == manifest["images"][entry["name"]]
        assert set(STAGES) <= set(entry) and all(entry[k] >= 0 for k in STAGES)
        assert entry["runtime_s"] > 0 and entry["encode_s"] > 0 and entry["minor_faults"] >= 0
        assert entry["minor_faults"] == sum(entry[f"{k}_minor_faults"] for k in ("compute", "decode", "write"))
        assert entry["feeds_s"] + entry["runtime_s"] <= entry["compute_s"] + 1e-3
        assert 0 < entry["done_s"] <= profile["wall_s"]
    assert sorted(e["done_s"] for e in profile["timeline"]) == [e["done_s"] for e in profile["timeline"]]
    # the first image touches the runtime's memory for the first time; the process did fault pages in
    assert profile["first"]["minor_faults"] > 0
    layers = profile["layers"]
    assert layers["infers"] == 3 and layers["top"] and layers["by_kind"]
    assert sum(k["share"] for k in layers["by_kind"]) == pytest.approx(1.0)
    assert any("Convolution" in k["kind"] for k in layers["by_kind"])
    assert "profile: 3 pictures" in proc.stdout and "top layers:" in proc.stdout
    # profiling does not change a pixel
    plain = tmp_path / "plain"
    run_cli(["pix2pixhd-deploy", "run", "--dataroot", scene_dataroot, "--checkpoint", small_checkpoint,
             "--output", plain, "--cache-dir", tmp_path / "cache"])
    assert not (plain / "profile.json").exists()
    for picture in sorted((out / "images").glob("*_synthesized_image.png")):
        assert np.array_equal(np.asarray(Image.open(picture)), np.asarray(Image.open(plain / "images" / picture.name)))


@pytest.mark.parametrize("flag", [["--profile"], ["--encode-threads", "3"]])
def test_local_engine_flags_are_refused_with_ray_before_any_work(tmp_path, scene_dataroot, small_checkpoint, flag):
    proc = run_cli(["pix2pixhd-deploy", "run", "--dataroot", scene_dataroot, "--checkpoint", small_checkpoint,
                    "--output", tmp_path / "out", *flag, "--engine", "ray", "--cache-dir", tmp_path / "cache"],
                   check=False)
    error_line(proc, flag[0], "--engine ray", "local engine")
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()
