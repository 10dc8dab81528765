"""The GPU check's dry run (benchmarks/gpu_check.sh --dry-run): the same steps as on a GPU, on the CPU at 64x128, so
the script cannot rot between the rare times a GPU is lent. Its figures are the script's; here: that every step ran
and reported what it should, and that the precisions' accuracy is measured against the CPU fp32 pictures."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO


def test_the_gpu_check_dry_run(tmp_path):
    out = tmp_path / "gpu"
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(out)],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path,
                          env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["dry_run"] and report["size"] == [64, 128]
    timed = {(r["precision"], r["batch"]): r for r in report["device_only"] if "images_per_s" in r}
    tunings = ("fp32 channels-last", "fp16 channels-last", "fp16 cudnn.benchmark",
               "fp16 channels-last cudnn.benchmark", "fp32 cudnn.benchmark")
    assert set(timed) == {(p, b) for p in ("fp32", "fp16", "bf16") + tunings for b in (1, 2)}
    assert all(r["images_per_s"] > 0 for r in timed.values())
    assert "channels-last" in timed[("fp32 channels-last", 1)]["describe"]
    accuracy = {r["precision"]: r for r in report["accuracy"]}
    assert accuracy["fp32"]["identical"] == 1.0  # the CPU against itself: the comparison sees agreement
    # channels-last changes the order of the sums only: within one level of fp32 everywhere
    assert accuracy["fp32 channels-last"]["max_abs_levels"] <= 1
    assert accuracy["fp32 channels-last"]["within_one_level"] == 1.0
    assert accuracy["fp16"]["within_one_level"] >= 0.99 and accuracy["bf16"]["psnr_db"] > 30
    assert [r["format"] for r in report["run"]] == ["jpg", "png"]
    assert all(r.get("pictures") == 4 and r["images_per_s"] > 0 for r in report["run"]), report["run"]
    for r in report["run"]:  # the limiting stage named from run --profile's medians
        assert r["limit"] in ("decode", "compute", "encode and write") and r["stage_s"]["compute"] > 0
        assert r["stage_bound_s"][r["limit"]] == max(r["stage_bound_s"].values())
    assert report["serve"]["requests"] == 8 and report["serve"]["images_per_s"] > 0
    assert "| run --format jpg |" in (out / "gpu_check.md").read_text()


def test_without_a_gpu_it_says_so_in_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        return  # on a GPU machine the real check runs instead
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--out", str(tmp_path / "x")],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: torch sees no CUDA device here. fix: run on a machine with an NVIDIA GPU, or pass --dry-run"]
