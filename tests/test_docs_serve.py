"""docs/serve.md's API commands, run against ``pix2pixhd-deploy serve`` started the way a user starts it.

The server is a subprocess on a free port with a small checkpoint and ``--size 64,128``; its start-up lines must
say the URL and ``ready``. Each ``curl`` line of the API block runs in bash with ``$MAP``, ``$INST`` and ``$PORT``
set. Then SIGTERM arrives while a request is queued behind another: both are answered and the process exits 0.
"""
from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'pix2pixhd-deploy[serve]')")
httpx = pytest.importorskip("httpx", reason="httpx is not installed")

from conftest import REPO  # noqa: E402
from serve_helpers import free_port, make_data, picture  # noqa: E402


def api_commands():
    text = (REPO / "docs" / "serve.md").read_text()
    block = text.split("## The API", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    return [line for line in block.strip().splitlines() if line.startswith("curl")]


@pytest.fixture
def server(tmp_path):
    checkpoint, pairs = make_data(tmp_path, count=2)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pix2pixhd_deploy", "serve", "--checkpoint", str(checkpoint),
                             "--size", "64,128", "--port", str(port), "--max-batch", "1"],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    lines = []

    def read():
        for line in proc.stderr:
            lines.append(line)

    threading.Thread(target=read, daemon=True).start()
    end = time.monotonic() + 300
    while not any("serve: ready at" in line for line in lines) and time.monotonic() < end and proc.poll() is None:
        time.sleep(0.1)
    try:
        yield {"proc": proc, "port": port, "pairs": pairs, "lines": lines, "root": tmp_path}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def test_the_docs_commands_and_a_sigterm_that_drains(server, tmp_path):
    lines, port, pair = server["lines"], server["port"], server["pairs"][0]
    assert any(f"serve: http://127.0.0.1:{port}" in line for line in lines), lines
    assert any("serve: ready at" in line and "CPU graph for 128x64" in line for line in lines), lines
    env = {**os.environ, "MAP": str(pair.label), "INST": str(pair.instance), "PORT": str(port)}
    (tmp_path / "README.md").write_text((REPO / "README.md").read_text())  # the docs' example of a file that is no map
    outputs = []
    for command in api_commands():
        proc = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, timeout=120)
        assert proc.returncode == 0, (command, proc.stderr)
        outputs.append(proc.stdout.decode())
    assert len(outputs) == 6
    assert '"alive"' in outputs[0] and '"ready"' in outputs[1]
    assert picture((tmp_path / "picture.png").read_bytes()).shape == (64, 128, 3)
    assert re.search(r"x-batch-size: 1", (tmp_path / "headers.txt").read_text(), re.I)
    assert picture((tmp_path / "picture.jpg").read_bytes()).shape == (64, 128, 3)
    assert "not an image file" in outputs[4] and "label (README.md)" in outputs[4]
    assert 'pix2pixhd_requests_total{status="400"} 1.0' in outputs[5]

    async def posts_then_sigterm():
        files = {"label": pair.label.read_bytes(), "instance": pair.instance.read_bytes()}
        async with httpx.AsyncClient(timeout=120) as client:
            url = f"http://127.0.0.1:{port}/v1/synthesize"
            tasks = [asyncio.create_task(client.post(url, files=files)) for _ in range(3)]
            await asyncio.sleep(0.3)
            server["proc"].send_signal(signal.SIGTERM)
            return await asyncio.gather(*tasks)

    answers = asyncio.run(posts_then_sigterm())
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert server["proc"].wait(120) == 0
    time.sleep(0.5)
    assert any("serve: stopped" in line for line in server["lines"]), server["lines"]


def test_the_docs_benchmark_command_runs_and_reports_its_ratios(tmp_path):
    """The measurement command of docs/serve.md, cut down to the small model, one concurrency and one round (the
    figures are not checked: they are the benchmark's, not a test's)."""
    import json
    import shlex

    text = (REPO / "docs" / "serve.md").read_text()
    block = text.split("## Measured figures", 1)[1].split("```sh", 1)[1].split("```", 1)[0].strip()
    args = shlex.split(block)
    assert args[:2] == ["python", "benchmarks/serve_load.py"], block
    cmd = [sys.executable, str(REPO / args[1]), *args[2:], "--models", "small", "--small-requests", "4",
           "--concurrency", "2", "--repeats", "1"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "serve_load.json").read_text())
    (small,) = report["results"]
    assert small["model"] == "small" and len(small["run"]) == 1 and small["run"][0]["images"] == 4
    assert {(r["max_batch"], r["concurrency"]) for r in small["serve"]} == {(4, 2), (1, 2)}
    assert all(r["requests"] == 4 and r["images_per_s"] > 0 for r in small["serve"])
    assert "vs run's steady rate" in proc.stdout and "images/s steady" in proc.stdout
