"""bench on a small generator: the tables, the JSON holding every figure they show, the chart, merging, errors."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import run_cli

from pix2pixhd_deploy.bench import (
    DETAIL_COLUMNS,
    SEED_COLUMNS,
    bench_device_only,
    format_number,
    latency_stats,
    realistic_batch,
)

SMALL = ["--height", "64", "--width", "128", "--loops", "3", "--warmup", "1", "--e2e-batches", "1"]


def markdown_tables(text):
    """Every Markdown table in ``text``: (header cells, [row cells])."""
    tables, current = [], None
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if current is None:
                current = (cells, [])
                tables.append(current)
            elif not set("".join(cells)) <= {"-"}:
                current[1].append(cells)
        else:
            current = None
    return tables


def test_bench_cli_json_holds_every_figure_of_the_table(tmp_path, small_checkpoint):
    proc = run_cli(["pix2pixhd-deploy", "bench", "--model", small_checkpoint, "--batch-sizes", "1", "2", *SMALL,
                    "--json", tmp_path / "bench.json", "--chart", tmp_path / "bench.png", "--device", "cpu"])
    report = json.loads((tmp_path / "bench.json").read_text())
    seed, detail = markdown_tables(proc.stdout)
    assert tuple(seed[0]) == SEED_COLUMNS and tuple(detail[0]) == DETAIL_COLUMNS
    assert [r[1] for r in seed[1]] == ["1", "2"]

    runs = {run["batch_size"]: run for run in report["runs"]}
    for cells in seed[1]:
        run = runs[int(cells[1])]
        assert cells[0] == run["device"] and "torch fp32 on cpu" in cells[0]
        assert cells[2] == format_number(run["device_only"]["images_per_s"])
    for cells in detail[1]:
        run = runs[int(cells[1])]
        want = [run["device"], str(run["batch_size"]), format_number(run["device_only"]["images_per_s"]),
                format_number(run["end_to_end"]["images_per_s"]), format_number(run["device_only"]["p50_ms"]),
                format_number(run["device_only"]["p90_ms"]), format_number(run["device_only"]["p99_ms"]),
                format_number(run["peak_host_mib"]), format_number(run["peak_device_mib"])]
        assert cells == want
    for bs, run in runs.items():
        dev = run["device_only"]
        assert len(dev["times_ms"]) == 3 and dev["warmup"] == 1
        # torch is measured in the form run uses: the maps in, the pictures out
        assert run["input_shapes"] == {"label": [bs, 64, 128], "inst": [bs, 64, 128]}
        assert run["model_form"].startswith("maps form") and run["model_form"].endswith("-> uint8")
        assert dev["images_per_s"] == pytest.approx(1000 * bs / np.mean(dev["times_ms"]))  # ais_bench's formula
        assert dev["p50_ms"] <= dev["p90_ms"] <= dev["p99_ms"] <= dev["max_ms"]
        e2e = run["end_to_end"]
        assert e2e["images"] == bs and (e2e["height"], e2e["width"]) == (64, 128)
        assert e2e["images_per_s"] == pytest.approx(e2e["images"] / e2e["seconds"])
        assert run["peak_host_mib"] > 50 and run["peak_device_mib"] is None
    # the machine, versions and settings travel with the numbers
    assert report["machine"]["cpu_count"] >= 1 and report["machine"]["cpu"]
    assert report["versions"]["torch"] and report["versions"]["pix2pixhd_deploy"]
    assert report["settings"]["batch_sizes"] == [1, 2] and report["settings"]["loops"] == 3
    assert len(report["model"]["sha256"]) == 64
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a second run (another process, e.g. another backend) merged into one table and chart
    proc = run_cli(["pix2pixhd-deploy", "bench", "--model", small_checkpoint, "--batch-sizes", "4", *SMALL,
                    "--e2e-batches", "0", "--merge", tmp_path / "bench.json", "--json", tmp_path / "all.json",
                    "--chart", tmp_path / "all.png", "--device", "cpu"])
    merged = json.loads((tmp_path / "all.json").read_text())
    assert [r["batch_size"] for r in merged["runs"]] == [4, 1, 2]
    assert merged["runs"][0]["end_to_end"] is None and merged["runs"][1]["source"] == str(tmp_path / "bench.json")
    seed, detail = markdown_tables(proc.stdout)
    assert [r[1] for r in seed[1]] == ["4", "1", "2"] and detail[1][0][3] == "n/a"
    assert (tmp_path / "all.png").stat().st_size > 10_000


def test_bench_errors_are_one_line(tmp_path, small_checkpoint):
    proc = run_cli(["pix2pixhd-deploy", "bench", "--model", small_checkpoint, "--loops", "0"], check=False)
    assert proc.returncode == 2 and "--loops must be at least 1" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli(["pix2pixhd-deploy", "bench"], check=False)
    assert proc.returncode == 2 and "nothing to benchmark" in proc.stderr
    (tmp_path / "x.json").write_text("{}")
    proc = run_cli(["pix2pixhd-deploy", "bench", "--merge", tmp_path / "x.json"], check=False)
    assert proc.returncode == 2 and "not a bench JSON" in proc.stderr


class _FakeRunner:
    """Times set by hand: the device-only figure is ais_bench's formula over them."""

    name = "fake"

    def __init__(self, times_s):
        self.times = list(times_s)
        self.inference_time = None

    def infer(self, x):
        self.inference_time = self.times.pop(0)
        return x


def test_device_only_is_ais_bench_formula_after_warmup():
    runner = _FakeRunner([9.0, 0.1, 0.2, 0.3])  # the first (warm-up) is not counted
    result = bench_device_only(runner, np.zeros((4, 1, 1, 1), np.float32), loops=3, warmup=1)
    assert result["mean_ms"] == pytest.approx(200.0)
    assert result["images_per_s"] == pytest.approx(1000 * 4 / 200.0)
    assert latency_stats([1, 2, 3, 4, 100])["p50_ms"] == 3


def test_realistic_batch_is_one_hot_plus_edges():
    x = realistic_batch(2, 32, 64, label_nc=35, use_instance=True)
    assert x.shape == (2, 36, 32, 64) and x.dtype == np.float32
    assert np.array_equal(x[:, :35].sum(axis=1), np.ones((2, 32, 64)))
    assert 0 < x[:, 35].mean() < 0.5 and not np.array_equal(x[0], x[1])


def test_table_marks_a_skipped_batch_size():
    from pix2pixhd_deploy.bench import format_tables

    text = format_tables({"runs": [{"device": "d", "batch_size": 8, "skipped": "the model has a static batch of 1"}]})
    assert re.search(r"\| d \| 8 \| skipped: the model has a static batch of 1 \|", text)


def test_bench_onnx_static_batch_skips_what_it_cannot_take(tmp_path, small_checkpoint):
    pytest.importorskip("onnxruntime")
    from pix2pixhd_deploy.bench import run_bench
    from pix2pixhd_deploy.export import export_onnx

    export_onnx(small_checkpoint, tmp_path / "g.onnx", dynamic_batch=False, batch=1, height=64, width=128)
    report = run_bench(tmp_path / "g.onnx", batch_sizes=[1, 2], loops=2, warmup=1, e2e_batches=1)
    one, two = report["runs"]
    assert one["backend"] == "onnxruntime" and "onnxruntime cpu" in one["device"]
    assert one["input_shape"] == [1, 36, 64, 128] and one["end_to_end"]["width"] == 128  # the model's static size
    assert two["skipped"] == "the model has a static batch of 1" and "device_only" not in two
    assert report["timing_note"].startswith("session.run")


def test_bench_ais_bench_gears_and_static_oms(tmp_path, small_checkpoint, monkeypatch):
    """With the documented-API fake of ais_bench: a dynamic-batch OM runs each gear, a static one skips the others,
    and the device-only time is ais_bench's own NPU execute time."""
    from test_ais_bench_contract import install_fake, write_om

    from pix2pixhd_deploy.bench import run_bench

    install_fake(monkeypatch)
    dynamic = write_om(tmp_path / "dyn.om", small_checkpoint, batch=-1, gears=(1, 4, 8))
    report = run_bench(dynamic, batch_sizes=[1, 4], loops=2, warmup=1, e2e_batches=1, device="0")
    for run, bs in zip(report["runs"], (1, 4)):
        dev = run["device_only"]
        assert run["backend"] == "ais_bench" and "dymBatch" in run["runtime"] and run["input_shape"][0] == bs
        assert all(t % 1 == 0.5 for t in dev["times_ms"])  # the fake's exec_time_list values (7.5 + n ms)
        assert dev["images_per_s"] == pytest.approx(1000 * bs / np.mean(dev["times_ms"]))
        assert run["end_to_end"]["images"] == bs
    static = write_om(tmp_path / "bs1.om", small_checkpoint, batch=1)
    one, four = run_bench(static, batch_sizes=[1, 4], loops=1, warmup=0, e2e_batches=0)["runs"]
    assert "device_only" in one and four["skipped"] == "the model has a static batch of 1"
