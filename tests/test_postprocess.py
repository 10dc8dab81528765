"""Postprocessing equals upstream ``util.tensor2im`` exactly; the seed's file naming."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pix2pixhd_deploy.errors import UserError
from pix2pixhd_deploy.model.decoding import tensor2im, tensor2im_torch
from pix2pixhd_deploy.seed.postprocess import postprocess_dir


def test_tensor2im_equals_upstream(upstream_util):
    rng = np.random.default_rng(0)
    special = np.array([-1.5, -1.0, -0.999, -0.5, 0.0, 1e-7, 0.2, 0.5, 0.99, 1.0, 1.5], np.float32)
    y = np.concatenate([special, rng.uniform(-1.05, 1.05, 3 * 64 * 64 - special.size).astype(np.float32)])
    y = y.reshape(3, 64, 64)
    want = upstream_util.tensor2im(torch.from_numpy(y))
    assert np.array_equal(tensor2im(y), want)
    assert np.array_equal(tensor2im_torch(torch.from_numpy(y)[None])[0].numpy(), want)
    assert tensor2im(np.zeros((3, 1, 1), np.float32))[0, 0].tolist() == [127, 127, 127]  # truncation, not rounding
    # the tempting y * 127.5 + 127.5 is not the same function (UPSTREAM.md §4)
    alt = np.clip(np.transpose(y, (1, 2, 0)) * np.float32(127.5) + np.float32(127.5), 0, 255).astype(np.uint8)
    assert not np.array_equal(alt, want)


def test_postprocess_dir(tmp_path):
    rng = np.random.default_rng(1)
    bins = tmp_path / "bs1"
    bins.mkdir()
    arrays = {}
    for name in ("x10_gtFine_labelIds_0", "x2_gtFine_labelIds_0"):
        arrays[name] = rng.uniform(-1, 1, (3, 32, 64)).astype(np.float32)
        arrays[name].tofile(bins / f"{name}.bin")
    outs = postprocess_dir(bins, tmp_path / "png")
    assert [p.name for p in outs] == ["x2_gtFine_labelIds_0generated.png", "x10_gtFine_labelIds_0generated.png"]
    for p in outs:
        got = np.asarray(Image.open(p))
        assert np.array_equal(got, tensor2im(arrays[p.name.replace("generated.png", "")]))
    jpgs = postprocess_dir(bins, tmp_path / "jpg", fmt="jpg")
    assert Image.open(jpgs[0]).format == "JPEG"
    np.full((3, 32, 64), np.nan, np.float32).tofile(bins / "bad_0.bin")
    with pytest.raises(UserError, match="bad_0.bin: the output holds 6144 NaN"):
        postprocess_dir(bins, tmp_path / "png2")
    (bins / "bad_0.bin").write_bytes(b"\0" * 10)
    with pytest.raises(UserError, match="not a whole float32"):
        postprocess_dir(bins, tmp_path / "png3")
