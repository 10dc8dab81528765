"""The measuring scripts that docs/cpu.md quotes run as written, cut down to a tiny generator (their figures are
theirs, not a test's: here, that they run and report every image)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO


def _env(tmp_path):
    """A bare environment whose temporary folder is the test's own, to see that a script leaves nothing there."""
    (tmp_path / "temp").mkdir()
    return {"XDG_CACHE_HOME": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
            "TMPDIR": str(tmp_path / "temp")}


def _folders(temp):
    """What a script left in its temporary folder (OpenVINO's telemetry leaves a small .ses file of its own)."""
    return [p.name for p in temp.iterdir() if p.is_dir()]


def test_page_faults_script(tmp_path):
    out = tmp_path / "pf.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "page_faults.py"), "--model", "small", "--size",
                           "64,128", "--images", "3", "--json", str(out)], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path, env=_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _folders(tmp_path / "temp") == []  # its work folder (a checkpoint, a cache) is gone
    rows = json.loads(out.read_text())
    assert [r["image"] for r in rows] == [1, 2, 3] and all(r["minor_faults"] >= 0 for r in rows)
    assert rows[0]["minor_faults"] > 0 and "| 3 |" in proc.stdout


def test_serve_first_request_script(tmp_path):
    out = tmp_path / "sfr.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "serve_first_request.py"), "--model", "small",
                           "--size", "64,128", "--repeats", "1", "--requests", "3", "--json", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env=_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _folders(tmp_path / "temp") == []
    rounds = json.loads(out.read_text())["rounds"]
    assert [r["warm_up"] for r in rounds] == [False, True]
    assert all(len(r["latencies_s"]) == 3 for r in rounds)


def test_winograd_tile_script(tmp_path):
    out = tmp_path / "wt.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "winograd_tile.py"), "--channels", "16", "--size",
                           "18,34", "--repeats", "2", "--json", str(out)], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert [r["form"] for r in rows] == ["direct", "F(2x2, 3x3)", "F(4x4, 3x3)"]
    assert all(r["median_ms"] > 0 and r["max_abs_error"] < 1e-4 for r in rows)
    assert "| F(4x4, 3x3) |" in proc.stdout


def test_png_level_script(tmp_path):
    out = tmp_path / "png.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "png_level.py"), "--repeat", "1", "--json",
                           str(out)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert len(report) == 2  # the generated photo-like picture and label colours
    for rows in report.values():
        assert [r["setting"] for r in rows][-1] == "the tool's: level 6, Z_RLE"
        assert all(r["seconds"] > 0 and r["mib"] > 0 for r in rows)
    assert "| the tool's: level 6, Z_RLE |" in proc.stdout


def test_a_test_session_leaves_no_model_cache_behind(tmp_path):
    """conftest gives each session a model cache of its own in the temporary folder (the graphs of a whole
    session: gigabytes); it must go with the session, or every `make test` leaves one more behind."""
    (tmp_path / "temp").mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PIX2PIXHD_TEST_KEEP_CACHE", "XDG_CACHE_HOME")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider",
                           str(REPO / "tests" / "test_benchmark_scripts.py")], capture_output=True, text=True,
                          timeout=300, cwd=REPO, env=dict(env, TMPDIR=str(tmp_path / "temp")))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "test_a_test_session_leaves_no_model_cache_behind" in proc.stdout
    assert list((tmp_path / "temp").iterdir()) == []


def test_norm_forms_script(tmp_path):
    out = tmp_path / "nf.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "norm_forms.py"), "--sizes", "4,32,64",
                           "--error-size", "64,128", "--repeats", "2", "--json", str(out)], capture_output=True,
                          text=True, timeout=600, cwd=tmp_path, env=_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [r["size"] for r in result["timing"]] == [[4, 32, 64]]
    forms = ("two-stage", "row moments")
    assert all(result["timing"][0][f]["max_error"] < 1e-5 for f in forms)  # both are the norm, in OpenVINO too
    errors = {r["input"]: r for r in result["errors"]}
    assert len(errors) == 5 and all(errors["normal(0, 1)"][f] < 1e-5 for f in forms)
    # the worst case is where the row moments lose digits, and the table says so
    assert errors["normal(100, 1)"]["row moments"] > errors["normal(100, 1)"]["two-stage"]
    assert "| 4 at 32x64 |" in proc.stdout
