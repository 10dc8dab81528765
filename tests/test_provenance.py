"""provenance: one record of versions, machine and model hash, the same in run's manifest, bench's and compare's JSON."""
from __future__ import annotations

import json

import pytest
from conftest import run_cli

from pix2pixhd_deploy import provenance
from pix2pixhd_deploy.errors import UserError
from pix2pixhd_deploy.model.network import file_sha256


def test_versions_list_every_backend():
    v = provenance.versions()
    assert {"python", "pix2pixhd_deploy", "numpy", "PIL", "onnx", "torch", "onnxruntime", "openvino",
            "ais_bench"} <= set(v)
    assert v["numpy"] and v["torch"]  # installed in every test environment


def test_machine_and_model_identity(small_checkpoint, tmp_path):
    m = provenance.machine()
    assert m["cpu"] and m["cpu_count"] >= 1 and len(m["load_average"]) == 3
    ck = small_checkpoint / "latest_net_G.pth"
    assert provenance.model_hash(small_checkpoint) == provenance.model_hash(ck) == file_sha256(ck)
    ident = provenance.model_identity(small_checkpoint)
    assert ident["file"] == "latest_net_G.pth" and ident["bytes"] == ck.stat().st_size
    assert provenance.model_identity(tmp_path / "nowhere.onnx") == {"path": str(tmp_path / "nowhere.onnx")}
    with pytest.raises(UserError, match="does not exist"):
        provenance.model_hash(tmp_path / "nowhere.onnx")


def test_run_manifest_and_compare_json_carry_the_same_record(small_checkpoint, scene_dataroot, tmp_path):
    out = tmp_path / "run"
    run_cli(["pix2pixhd-deploy", "run", "--dataroot", scene_dataroot, "--checkpoint", small_checkpoint,
             "--output", out, "--backend", "torch", "--device", "cpu", "--save-raw"])
    manifest = json.loads((out / "manifest.json").read_text())
    raw = out / "raw"
    run_cli(["pix2pixhd-deploy", "compare", raw, raw, "--json", tmp_path / "c.json"])
    compared = json.loads((tmp_path / "c.json").read_text())
    for record in (manifest, compared):
        assert set(record["versions"]) - {"cuda"} == set(provenance.versions()) - {"cuda"}  # cuda: once torch is loaded
        assert set(record["machine"]) >= {"platform", "cpu", "cpu_count"}
    assert manifest["identity"]["model_sha256"] == provenance.model_hash(small_checkpoint)
