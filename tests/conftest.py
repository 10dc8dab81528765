"""Shared fixtures: the real Cityscapes samples (skipped when absent), NVIDIA's code, small models, the CLI."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
# The model cache of run --checkpoint: one for the whole test session (and the CLI processes it starts), never the
# user's ~/.cache. It holds every graph the tests build (gigabytes) and goes when the session ends.
if "PIX2PIXHD_TEST_KEEP_CACHE" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="pix2pixhd-test-cache-")
    atexit.register(shutil.rmtree, os.environ["XDG_CACHE_HOME"], ignore_errors=True)
SAMPLES = Path(os.environ.get("PIX2PIXHD_SAMPLES", REPO.parent / "shared" / "data" / "cityscapes_samples"))
REFERENCE = REPO.parent / "shared" / "reference"

# A small LocalEnhancer with the label2city layout (36 in, 3 out): fast enough for many tests.
from pix2pixhd_deploy.model.network import GeneratorConfig  # noqa: E402

SMALL_LOCAL = GeneratorConfig(input_nc=36, output_nc=3, ngf=8, netG="local", n_downsample_global=2,
                              n_blocks_global=1, n_local_enhancers=1, n_blocks_local=1)


@pytest.fixture(scope="session")
def samples() -> Path:
    if not (SAMPLES / "test_label").is_dir():
        pytest.skip(f"the Cityscapes samples are not at {SAMPLES} (set PIX2PIXHD_SAMPLES to their folder)")
    return SAMPLES


@pytest.fixture(scope="session", params=["generated", "real"])
def street_maps(request, tmp_path_factory):
    """Full-size (2048x1024) street-scene label/instance pairs in a folder with test_label/ and test_inst/: generated
    scenes in every clone (``generated``), and the real Cityscapes samples where they are present (``real``)."""
    if request.param == "real":
        return request.getfixturevalue("samples")
    from pix2pixhd_deploy.data.synthetic import make_scene
    from pix2pixhd_deploy.fileio import atomic_save_image

    root = tmp_path_factory.mktemp("street_maps")
    for sub in ("test_label", "test_inst"):
        (root / sub).mkdir()
    for i in range(3):
        label, inst = make_scene(1024, 2048, seed=100 + i)
        atomic_save_image(root / "test_label" / f"gen_000000_{i:06d}_gtFine_labelIds.png", label)
        atomic_save_image(root / "test_inst" / f"gen_000000_{i:06d}_gtFine_instanceIds.png", inst)
    return root


def import_upstream(module: str):
    """Import a module of NVIDIA's pix2pixHD (PyPI ``pix2pixhd==1.0``), skipping when it is not installed.

    Its ``networks.py`` imports torchvision for a VGG loss that inference never uses; ``upstream.import_upstream``
    puts a stub in its place during the import only, so no other code ever sees a fake torchvision.
    """
    from pix2pixhd_deploy.errors import UserError
    from pix2pixhd_deploy.model.upstream import import_upstream as _import

    try:
        return _import(module)
    except UserError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def upstream_networks():
    return import_upstream("pix2pixhd.models.networks")


@pytest.fixture(scope="session")
def upstream_util():
    return import_upstream("pix2pixhd.util.util")


#: the one line a --keep-going run with bad inputs ends with, for preprocess, infer and run (local and Ray) alike
FAILED_INPUTS_LINE = re.compile(
    r"^error: (?P<path>.+): (?P<count>\d+) (?P<what>\w+)\(s\) failed \((?P<shown>.+)\); the other (?P<done>\d+) "
    r"were written\. fix or remove those inputs and run again: finished outputs are kept\.$")


def failed_inputs_line(stderr: str) -> "re.Match":
    """The --keep-going summary line in ``stderr``, parsed: path, count, what, shown (``name: error; ...``), done."""
    found = [m for m in map(FAILED_INPUTS_LINE.match, stderr.splitlines()) if m]
    assert len(found) == 1, stderr
    return found[0]


def run_cli(args, cwd=None, check=True, timeout=600, env=None) -> subprocess.CompletedProcess:
    """Run a command the way a user types it (``python script.py ...`` or ``pix2pixhd-deploy ...``)."""
    if args[0] == "pix2pixhd-deploy":
        args = [sys.executable, "-m", "pix2pixhd_deploy", *args[1:]]
    elif str(args[0]).endswith(".py"):
        args = [sys.executable, str(REPO / args[0]), *args[1:]]
    proc = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


@pytest.fixture
def scene_dataroot(tmp_path):
    """A data root with 3 small synthetic scenes (64x128) in test_label/ and test_inst/."""
    from pix2pixhd_deploy.data.synthetic import make_scene
    from pix2pixhd_deploy.fileio import atomic_save_image

    root = tmp_path / "data"
    (root / "test_label").mkdir(parents=True)
    (root / "test_inst").mkdir()
    for i in range(3):
        label, inst = make_scene(64, 128, seed=i)
        atomic_save_image(root / "test_label" / f"city_000000_{i:06d}_gtFine_labelIds.png", label)
        atomic_save_image(root / "test_inst" / f"city_000000_{i:06d}_gtFine_instanceIds.png", inst)
    return root


@pytest.fixture
def small_checkpoint(tmp_path):
    """A seeded random small LocalEnhancer saved as upstream saves it, in a folder like the seed's."""
    from pix2pixhd_deploy.model.network import random_generator, save_checkpoint

    folder = tmp_path / "checkpoints" / "label2city_1024p"
    save_checkpoint(random_generator(SMALL_LOCAL, seed=1), folder / "latest_net_G.pth")
    return folder


def rng_input(shape, seed=0, label_nc=35):
    """A realistic generator input: one-hot of random blocky labels plus random edges, float32."""
    rng = np.random.default_rng(seed)
    n, c, h, w = shape
    ids = rng.integers(0, label_nc, size=(n, h // 8 + 1, w // 8 + 1)).repeat(8, 1).repeat(8, 2)[:, :h, :w]
    x = np.zeros(shape, np.float32)
    for b in range(n):
        for k in range(label_nc):
            x[b, k] = ids[b] == k
        if c > label_nc:
            x[b, label_nc] = rng.random((h, w)) < 0.05
    return x


def assert_within_one_level(got: np.ndarray, want: np.ndarray, what: str = "") -> None:
    """The project's rule for pictures from two computations of one graph (another batch size, another runtime):
    no value more than one level apart, at most 0.1% of the values different at all."""
    assert got.shape == want.shape, (what, got.shape, want.shape)
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1 and np.mean(diff > 0) <= 1e-3, (what, int(diff.max()), float(np.mean(diff > 0)))


def log_line(line: str) -> bool:
    return line.split(" ", 1)[0] in ("INFO", "WARNING", "ERROR") and " pix2pixhd_deploy" in line


def error_line(proc: subprocess.CompletedProcess, *must_say: str, status: int = 2) -> str:
    """The one line a failure ends with; it must say each of ``must_say`` (file, problem, fix)."""
    assert proc.returncode == status, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not log_line(line)]
    assert len(lines) == 1, proc.stderr
    for text in must_say:
        assert text in lines[0], (text, lines[0])
    return lines[0]
