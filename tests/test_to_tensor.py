"""The encoding reference's own ``to_tensor`` equals torchvision's, the seed's 0.10, on every image mode it reads.

torchvision cannot be imported beside this project's torch (its compiled operators do not load), so ``make test``
keeps the seed's wheel in ``.venv/reference/`` and this test loads only the three pure-Python files of
``torchvision/transforms`` from it, under a private package name, so nothing of torchvision's native side runs and
the torchvision stub of the parity tests is left alone.
"""
from __future__ import annotations

import importlib
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pix2pixhd_deploy.model.upstream import to_tensor

WHEELS = Path(sys.prefix) / "reference"
FILES = ("functional.py", "functional_pil.py", "functional_tensor.py")


@pytest.fixture(scope="module")
def torchvision_to_tensor(tmp_path_factory):
    wheels = sorted(WHEELS.glob("torchvision-0.10.0-*.whl"))
    if not wheels:
        pytest.skip(f"torchvision 0.10.0's wheel is not in {WHEELS}: `make test` downloads it there")
    root = tmp_path_factory.mktemp("tv010")
    with zipfile.ZipFile(wheels[0]) as whl:
        for name in FILES:
            (root / name).write_bytes(whl.read(f"torchvision/transforms/{name}"))
    package = "_torchvision_010_transforms"
    stub = types.ModuleType(package)
    stub.__path__ = [str(root)]
    sys.modules[package] = stub
    try:
        yield importlib.import_module(f"{package}.functional").to_tensor
    finally:
        for name in [k for k in sys.modules if k == package or k.startswith(package + ".")]:
            del sys.modules[name]


def _images():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 34, size=(37, 53), dtype=np.uint8)
    instances = np.where(rng.random((37, 53)) < 0.5, rng.integers(0, 34, (37, 53)),
                         rng.integers(24000, 33999, (37, 53))).astype(np.int32)
    palette = Image.fromarray(labels, "L").convert("P")
    sixteen = Image.fromarray(instances.astype(np.uint16))
    assert sixteen.mode == "I;16"
    return {
        "L labels": Image.fromarray(labels, "L"),
        "P labels": palette,
        "I instances": Image.fromarray(instances, "I"),
        "I;16 instances": sixteen,
        "RGB": Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8), "RGB"),
    }


@pytest.mark.parametrize("kind", list(_images()))
def test_equals_torchvision_0_10(kind, torchvision_to_tensor):
    pic = _images()[kind]
    want = torchvision_to_tensor(pic)
    got = to_tensor(pic)
    assert got.dtype == want.dtype and got.shape == want.shape, kind
    assert torch.equal(got, want), kind
    # a value check that does not lean on either implementation
    arr = np.asarray(pic)
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    if pic.mode == "I;16":
        # torchvision reads 16-bit images through int16, so ids above 32767 wrap (a bicycle's 33001 becomes
        # -32535); the wrap is one-to-one, so upstream's instance edges are unchanged by it
        arr = arr.astype(np.uint16).view(np.int16)
        assert (arr < 0).any()
    expect = torch.from_numpy(arr.transpose(2, 0, 1).astype(np.float64))
    if arr.dtype == np.uint8:
        expect = expect / 255
    assert torch.allclose(got.double(), expect, rtol=0, atol=1e-7), kind


def test_real_instance_png_reads_alike(torchvision_to_tensor, street_maps):
    """A 16-bit Cityscapes instance PNG as Pillow opens it (generated scenes in every clone)."""
    inst = sorted((street_maps / "test_inst").glob("*.png"))[0]
    label = sorted((street_maps / "test_label").glob("*.png"))[0]
    for path in (inst, label):
        with Image.open(path) as pic:
            assert torch.equal(to_tensor(pic), torchvision_to_tensor(pic)), path.name
