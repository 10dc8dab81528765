"""The stems fast path: the two stem convolutions computed from the maps equal torch's convolutions."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import SMALL_LOCAL
from pix2pixhd_deploy import stems as st
from pix2pixhd_deploy.encoding import encode_input_torch
from pix2pixhd_deploy.export import seeded_maps
from pix2pixhd_deploy.network import random_generator


def reference_stems(generator, labels, insts):
    with torch.inference_mode():
        x = encode_input_torch(torch.from_numpy(labels), torch.from_numpy(insts) if insts is not None else None,
                               generator.model1_1[1].in_channels - (1 if insts is not None else 0))
        local = generator.model1_1[1](generator.model1_1[0](x))
        glob = generator.model[1](generator.model[0](generator.downsample(x)))
    return local.numpy(), glob.numpy()


@pytest.fixture(params=["c", "torch"])
def computer_kind(request, monkeypatch):
    if request.param == "c":
        if st.load_library() is None:
            pytest.skip("no C compiler here: only the torch fallback can be tested")
    else:
        monkeypatch.setattr(st, "load_library", lambda: None)
    return request.param


@pytest.mark.parametrize("hw", [(64, 128), (38, 54), (32, 32)])
def test_stems_equal_the_convolutions(computer_kind, hw):
    gen = random_generator(SMALL_LOCAL, seed=4)
    labels, insts = seeded_maps(2, *hw, seed=5)
    labels[0, :5, :7] = 33  # a small region at the corner: borders, reflection and short pool windows
    insts[1, -3:, -4:] = 26001
    comp = st.StemComputer(st.StemWeights.from_generator(gen))
    local, glob = comp(labels, insts)
    ref_local, ref_glob = reference_stems(gen, labels, insts)
    assert local.shape == ref_local.shape and glob.shape == ref_glob.shape
    assert np.abs(local - ref_local).max() <= 1e-5
    assert np.abs(glob - ref_glob).max() <= 1e-5


def test_stems_on_real_maps(samples):
    from pix2pixhd_deploy.dataset import find_pairs, load_pair

    if st.load_library() is None:
        pytest.skip("no C compiler here")
    gen = random_generator(SMALL_LOCAL, seed=6)
    label, inst = load_pair(find_pairs(samples)[4])
    labels, insts = label[None, 256:512, 512:1024].copy(), inst[None, 256:512, 512:1024].copy()
    local, glob = st.StemComputer(st.StemWeights.from_generator(gen))(labels, insts)
    ref_local, ref_glob = reference_stems(gen, labels, insts)
    assert np.abs(local - ref_local).max() <= 1e-5 and np.abs(glob - ref_glob).max() <= 1e-5


def test_weights_file_round_trip_and_errors(tmp_path):
    w = st.StemWeights.from_generator(random_generator(SMALL_LOCAL))
    w.save(tmp_path / "g.onnx.stems.npz")
    back = st.StemWeights.load(tmp_path / "g.onnx.stems.npz")
    assert np.array_equal(back.local_weight, w.local_weight) and back.label_nc == 35 and back.use_instance
    from pix2pixhd_deploy.errors import UserError
    with pytest.raises(UserError, match="stem weights file of this graph is missing"):
        st.StemWeights.load(tmp_path / "none.npz")
    (tmp_path / "bad.npz").write_bytes(b"junk")
    with pytest.raises(UserError, match="cannot read the stem weights"):
        st.StemWeights.load(tmp_path / "bad.npz")
