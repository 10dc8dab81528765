"""docs/serve.md's API commands, run against ``pix2pixhd-deploy serve`` started the way a user starts it.

The server is a subprocess on a free port with a small checkpoint and ``--size 64,128``; its start-up lines must
say the URL and ``ready``. Each ``curl`` line of the API block runs in bash with ``$MAP``, ``$INST`` and ``$PORT``
set. Then SIGTERM arrives while three requests are queued (seen in /metrics) and a fourth is still uploading: the
server stops listening, all four are answered with run's picture, and the process exits 0.
"""
from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'pix2pixhd-deploy[serve]')")
httpx = pytest.importorskip("httpx", reason="httpx is not installed")

from conftest import REPO, assert_within_one_level, run_cli  # noqa: E402
from serve_helpers import free_port, make_data, picture  # noqa: E402


def api_commands():
    text = (REPO / "docs" / "serve.md").read_text()
    block = text.split("## The API", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    return [line for line in block.strip().splitlines() if line.startswith("curl")]


@pytest.fixture
def server(tmp_path):
    checkpoint, pairs = make_data(tmp_path, count=2)
    port = free_port()
    # batches of 4, the first map waiting (up to 2 minutes) for company while another request is still uploading:
    # what lets the SIGTERM test hold requests in the queue from outside the process
    proc = subprocess.Popen([sys.executable, "-m", "pix2pixhd_deploy", "serve", "--checkpoint", str(checkpoint),
                             "--size", "64,128", "--port", str(port), "--max-batch", "4", "--max-wait-ms", "120000"],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    lines = []

    def read():
        for line in proc.stderr:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    end = time.monotonic() + 300
    while not any("serve: ready at" in line for line in lines) and time.monotonic() < end and proc.poll() is None:
        time.sleep(0.1)
    try:
        yield {"proc": proc, "port": port, "pairs": pairs, "lines": lines, "root": tmp_path, "reader": reader,
               "checkpoint": checkpoint}
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

    run_cli(["pix2pixhd-deploy", "run", "--checkpoint", server["checkpoint"], "--cityscapes", server["root"] / "val",
             "-o", tmp_path / "run"])
    want = picture((tmp_path / "run" / "images" / f"{pair.name}_synthesized_image.png").read_bytes())
    assert np.array_equal(picture((tmp_path / "picture.png").read_bytes()), want)  # the docs' command: run's pixels
    answers, queued = asyncio.run(sigterm_while_queued(server["proc"], port, pair))
    assert queued == 3, f"the queue never held the 3 maps before SIGTERM (depth {queued})"
    for a in answers:
        assert a.status_code == 200, a.text
        assert a.headers["X-Batch-Size"] == "4"  # the 3 queued and the one that finished its upload after SIGTERM
        assert_within_one_level(picture(a.content), want, "a request answered while the server stopped")
    assert server["proc"].wait(120) == 0
    server["reader"].join(30)  # stderr read to its end
    assert any("serve: stopped" in line for line in server["lines"]), server["lines"]


def multipart(files: dict) -> tuple:
    """(body, content type) of a multipart/form-data POST of ``files`` (field -> bytes)."""
    boundary = "pix2pixhd-test-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.png"\r\n'
             f"Content-Type: image/png\r\n\r\n".encode() + data + b"\r\n" for name, data in files.items()]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


async def sigterm_while_queued(proc, port, pair):
    """SIGTERM at a known point: three maps queued (their batch waits for company) and a fourth request still
    uploading (held by the test). Its upload is finished only once the server has stopped listening, so every
    request is answered during the shutdown, not before it. Returns (the 4 answers, the queue depth at SIGTERM)."""
    url = f"http://127.0.0.1:{port}"
    files = {"label": pair.label.read_bytes(), "instance": pair.instance.read_bytes()}
    body, content_type = multipart(files)
    head_sent, finish = asyncio.Event(), asyncio.Event()

    async def held_body():
        yield body[: len(body) // 2]
        head_sent.set()  # the headers and half the body are written
        await finish.wait()
        yield body[len(body) // 2:]

    async with httpx.AsyncClient(timeout=120) as client:
        uploading = asyncio.create_task(client.post(
            f"{url}/v1/synthesize", content=held_body(),
            headers={"Content-Type": content_type, "Content-Length": str(len(body))}))
        queued_tasks: list = []
        depth = -1
        try:
            await asyncio.wait_for(head_sent.wait(), 60)
            # a request on another connection answered after those bytes were sent: the server has read the held
            # request's headers by then, so it counts it as on its way and the next maps wait for it
            assert (await client.get(f"{url}/healthz")).status_code == 200
            queued_tasks = [asyncio.create_task(client.post(f"{url}/v1/synthesize", files=files)) for _ in range(3)]
            end = time.monotonic() + 120
            while depth != 3 and time.monotonic() < end:
                text = (await client.get(f"{url}/metrics")).text
                depth = int(float(re.search(r"^pix2pixhd_queue_depth (\S+)$", text, re.M).group(1)))
                assert not any(t.done() for t in queued_tasks), [t.result() for t in queued_tasks if t.done()]
                await asyncio.sleep(0.05)
            if depth == 3:
                proc.send_signal(signal.SIGTERM)
                while listening(port):  # the shutdown has begun: no new connections
                    assert time.monotonic() < end and proc.poll() is None, "the server never stopped listening"
                    await asyncio.sleep(0.02)
                assert not any(t.done() for t in [uploading, *queued_tasks])  # nothing answered yet
        finally:
            finish.set()
        answers = await asyncio.wait_for(asyncio.gather(*queued_tasks, uploading), 120)
    return answers, depth


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        return True
    except ConnectionRefusedError:
        return False


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
