"""``serve --engine ray``: the same app in Ray Serve replicas on a local cluster; a replica killed while it loads.

One local Ray cluster (2 CPUs, no dashboard) for the module. The deployment has two replicas of half a CPU, with a
model cache of its own, so each replica builds the CPU graph while it loads (about 15 s here), and one of them is
killed then. Meanwhile and after, clients keep posting maps: every request must be answered with run's picture or
refused cleanly (a status and a body, never a dropped connection), and the deployment must recover to serve all.
"""
from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'pix2pixhd-deploy[serve]')")
httpx = pytest.importorskip("httpx", reason="httpx is not installed")
ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'pix2pixhd-deploy[ray]')")
pytest.importorskip("ray.serve", reason="Ray Serve is not installed (pip install 'ray[serve]')")

from conftest import run_cli  # noqa: E402
from serve_helpers import SIZE, free_port, make_data, picture  # noqa: E402


def replica_names():
    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith("SERVE_REPLICA::pix2pixhd")]


def files_of(pair):
    return {"label": pair.label.read_bytes(), "instance": pair.instance.read_bytes()}


async def post_some(url, pairs, rounds):
    async with httpx.AsyncClient(timeout=120) as client:
        async def one(pair):
            try:
                return pair, await client.post(f"{url}/v1/synthesize", files=files_of(pair))
            except httpx.TransportError as exc:  # a dropped connection: not a clean answer
                return pair, exc
        return await asyncio.gather(*(one(p) for _ in range(rounds) for p in pairs))


def test_replicas_serve_runs_pictures_and_survive_a_replica_killed_mid_load(tmp_path):
    from pix2pixhd_deploy.runners.open import ModelOptions
    from pix2pixhd_deploy.serve.options import RayOptions, ServeLimits
    from pix2pixhd_deploy.serve.ray_serve import serve_ray

    checkpoint, pairs = make_data(tmp_path, count=4)
    run_cli(["pix2pixhd-deploy", "run", "--checkpoint", checkpoint, "--cityscapes", tmp_path / "val", "-o",
             tmp_path / "run"])
    want = {p.name: np.asarray(picture((tmp_path / "run" / "images" / f"{p.name}_synthesized_image.png")
                                       .read_bytes())) for p in pairs}
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024 ** 2, log_to_driver=False,
             configure_logging=False)
    stop, port = threading.Event(), free_port()
    options = ModelOptions(model=str(checkpoint), sizes=(SIZE,), cache_dir=str(tmp_path / "replica-cache"))
    thread = threading.Thread(target=serve_ray, args=(options, ServeLimits(max_batch=2),
                                                      RayOptions(replicas=2, cpus_per_replica=0.5)),
                              kwargs={"port": port, "stop": stop, "say": lambda line: None}, daemon=True)
    url = f"http://127.0.0.1:{port}"
    try:
        thread.start()
        end = time.monotonic() + 120
        while not replica_names() and time.monotonic() < end:
            time.sleep(0.2)
        victim = replica_names()[0]
        time.sleep(2)  # inside its constructor: building the graph into its empty cache
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        during = asyncio.run(post_some(url, pairs, 2))
        for _, answer in during:  # answered, or refused cleanly while no replica is ready
            assert not isinstance(answer, Exception), answer
            assert answer.status_code in (200, 500, 503), answer.text
        end = time.monotonic() + 180
        while time.monotonic() < end and (len(replica_names()) < 2 or victim in replica_names()):
            time.sleep(0.5)
        assert victim not in replica_names() and len(replica_names()) == 2, replica_names()
        after = asyncio.run(post_some(url, pairs, 2))
        for pair, answer in during + after:
            if not isinstance(answer, Exception) and answer.status_code == 200:
                assert np.array_equal(picture(answer.content), want[pair.name]), pair.name
        assert [a.status_code for _, a in after] == [200] * len(after)
        assert httpx.get(f"{url}/readyz", timeout=30).status_code == 200
    finally:
        stop.set()
        thread.join(120)
        ray.shutdown()


def test_the_kuberay_builder_reads_its_settings_from_the_environment(monkeypatch, tmp_path):
    from ray.serve import Application

    from pix2pixhd_deploy.errors import UserError
    from pix2pixhd_deploy.serve.ray_serve import app_from_env

    monkeypatch.delenv("PIX2PIXHD_CHECKPOINT", raising=False)
    with pytest.raises(UserError, match="PIX2PIXHD_CHECKPOINT"):
        app_from_env()
    monkeypatch.setenv("PIX2PIXHD_CHECKPOINT", str(tmp_path / "ck"))
    monkeypatch.setenv("PIX2PIXHD_SIZES", "512,1024;1024,2048")
    app = app_from_env({"replicas": "3"})
    assert isinstance(app, Application)
    deployment = app._bound_deployment
    assert deployment.num_replicas == 3
    assert deployment.init_args[0]["sizes"] == ((512, 1024), (1024, 2048))
