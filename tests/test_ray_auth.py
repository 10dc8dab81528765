"""The Ray clusters this tool starts are authenticated: ``run --engine ray`` without ``--address`` starts a local
cluster with ``RAY_AUTH_MODE=token``; a second driver with no token, or a wrong one, is refused, and one with the
user's token is let in. A Ray without token authentication (before 2.52) is refused in one line."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO

pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'pix2pixhd-deploy[ray]')")

ENGINE = """
import sys
from pix2pixhd_deploy.run.ray import start_local_cluster
ray = start_local_cluster(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()  # held until the test closes stdin
ray.shutdown()
"""

DRIVER = """
import sys, ray
try:
    ray.init(address=sys.argv[1], log_to_driver=False, configure_logging=False)
    print("joined", ray.get(ray.put(41)) + 1, flush=True)
except Exception as exc:
    print("refused:", type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "", flush=True)
"""


def driver(address, home, **env):
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    proc = subprocess.run([sys.executable, "-c", DRIVER, address], capture_output=True, text=True, timeout=120,
                          env={**base, "HOME": str(home), "PYTHONPATH": str(REPO / "src"), **env})
    return proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-500:]


def test_the_engines_local_cluster_refuses_a_driver_without_its_token(tmp_path):
    home, stranger = tmp_path / "user", tmp_path / "stranger"
    home.mkdir()
    stranger.mkdir()
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    engine = subprocess.Popen([sys.executable, "-c", ENGINE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env={**base, "HOME": str(home), "PYTHONPATH": str(REPO / "src")})
    try:
        address = engine.stdout.readline().strip()
        assert ":" in address, engine.stderr.read()[-2000:] if engine.poll() is not None else address
        no_token = driver(address, stranger, RAY_AUTH_MODE="token")
        wrong = driver(address, stranger, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 32)
        plain = driver(address, stranger)
        right = driver(address, home, RAY_AUTH_MODE="token")  # the user: the token Ray kept in ~/.ray
    finally:
        engine.stdin.close()
        try:
            engine.wait(60)
        except subprocess.TimeoutExpired:
            engine.kill()
    assert right == "joined 42", right
    for answer in (no_token, wrong, plain):
        assert not answer.startswith("joined"), answer


def test_a_ray_without_authentication_is_refused_in_one_line():
    from pix2pixhd_deploy.errors import UserError
    from pix2pixhd_deploy.run.ray import check_ray_version

    check_ray_version("2.52.0")
    check_ray_version("2.60.0")
    with pytest.raises(UserError, match=r"Ray 2\.51\.1 has no token authentication") as err:
        check_ray_version("2.51.1")
    assert "2.52" in err.value.fix and "\n" not in str(err.value)
