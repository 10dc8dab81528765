"""Encoding: ours equals NVIDIA's data path + ``encode_input`` exactly, on the real samples and on edge cases."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import import_upstream
from PIL import Image

from pix2pixhd_deploy.data.dataset import find_pairs
from pix2pixhd_deploy.data.labelmaps import Pair, read_instance_map, read_label_map
from pix2pixhd_deploy.errors import UserError
from pix2pixhd_deploy.model.encoding import (
    edges_from_instances,
    encode_input,
    encode_input_torch,
    encode_pair,
)
from pix2pixhd_deploy.model.upstream import to_tensor
from pix2pixhd_deploy.seed.preprocess import preprocess_dataset


@pytest.fixture(scope="module")
def upstream_encoder():
    model_mod = import_upstream("pix2pixhd.models.pix2pixHD_model")
    base_dataset = import_upstream("pix2pixhd.data.base_dataset")
    m = model_mod.Pix2PixHDModel.__new__(model_mod.Pix2PixHDModel)
    m.opt = SimpleNamespace(label_nc=35, data_type=32, no_instance=False)
    m.gpu_ids, m.Tensor, m.use_features = [], torch.FloatTensor, False
    make_power_2 = getattr(base_dataset, "__make_power_2")

    def encode(label_path, inst_path, base=32):
        """upstream AlignedDataset.__getitem__ (resize_or_crop none) + Pix2PixHDModel.encode_input."""
        label = to_tensor(make_power_2(Image.open(label_path), base, Image.NEAREST)) * 255.0
        inst = to_tensor(make_power_2(Image.open(inst_path), base, Image.NEAREST))
        with torch.no_grad():
            x, *_ = m.encode_input(label[None], inst[None])
        return x[0].numpy()

    return encode


def test_equals_upstream_on_full_size_street_maps(street_maps, upstream_encoder):
    """Generated scenes in every clone; all 23 real samples (test and train) where they are present."""
    pairs = find_pairs(street_maps, phase="test")
    if (street_maps / "train_label").is_dir():
        pairs += find_pairs(street_maps, phase="train")
        assert len(pairs) == 23
    assert pairs
    for pair in pairs:
        ours = encode_pair(pair)
        want = upstream_encoder(pair.label, pair.instance)
        assert ours.shape == (36, 1024, 2048) and ours.dtype == np.float32
        assert np.array_equal(ours, want), pair.name
        assert ours[35].sum() > 0  # the edge channel is not empty


def test_odd_size_is_snapped_like_upstream(tmp_path, upstream_encoder):
    from pix2pixhd_deploy.data.synthetic import make_scene

    label, inst = make_scene(100, 150, seed=3)  # upstream: 100x150 -> 96x160 (round to /32, nearest)
    Image.fromarray(label).save(tmp_path / "a_labelIds.png")
    Image.fromarray(inst).save(tmp_path / "a_instanceIds.png")
    ours = encode_pair(Pair("a", tmp_path / "a_labelIds.png", tmp_path / "a_instanceIds.png"))
    want = upstream_encoder(tmp_path / "a_labelIds.png", tmp_path / "a_instanceIds.png")
    assert ours.shape == (36, 96, 160)
    assert np.array_equal(ours, want)


def test_edges_four_neighbour_both_sides():
    inst = np.zeros((4, 5), np.int32)
    inst[1:3, 1:3] = 7
    e = edges_from_instances(inst)
    want = np.array([[0, 1, 1, 0, 0],
                     [1, 1, 1, 1, 0],
                     [1, 1, 1, 1, 0],
                     [0, 1, 1, 0, 0]], np.float32)
    assert np.array_equal(e, want)
    # diagonal neighbours alone are not an edge
    diag = np.array([[1, 2], [2, 1]], np.int32)
    assert edges_from_instances(diag).all()
    assert not edges_from_instances(np.full((3, 3), 26001)).any()


def test_large_instance_ids_keep_their_edges():
    """Ids 26001 and 26002 side by side (upstream's fp16 path merges them): an edge here."""
    inst = np.array([[26001, 26002]], np.int32)
    assert edges_from_instances(inst).tolist() == [[1.0, 1.0]]


def test_one_hot_and_label_id_errors():
    label = np.array([[0, 7], [33, 34]], np.uint8)
    x = encode_input(label, None)
    assert x.shape == (35, 2, 2)
    assert x.sum(axis=0).tolist() == [[1, 1], [1, 1]]
    assert x[7, 0, 1] == 1 and x[34, 1, 1] == 1
    with pytest.raises(UserError, match=r"label ids 35 \(1 px\), 255 \(1 px\) are outside 0\.\.34.*trainIds"):
        encode_input(np.array([[35, 255, 3]], np.uint8), None, path="x_labelIds.png")
    assert encode_input(np.array([[0, 1]], np.uint8), np.array([[1, 1]], np.int32), label_nc=2).shape == (3, 1, 2)


def test_torch_encoding_equals_numpy(scene_dataroot):
    pairs = find_pairs(scene_dataroot)
    labels = np.stack([read_label_map(p.label) for p in pairs])
    insts = np.stack([read_instance_map(p.instance) for p in pairs])
    got = encode_input_torch(torch.from_numpy(labels), torch.from_numpy(insts)).numpy()
    want = np.stack([encode_pair(p) for p in pairs])
    assert np.array_equal(got, want)


def test_preprocess_writes_the_seed_format(scene_dataroot, tmp_path):
    out = tmp_path / "prep"
    files = preprocess_dataset(scene_dataroot, out)
    assert [f.name for f in files] == [f"city_000000_{i:06d}_gtFine_labelIds.bin" for i in range(3)]
    pair = find_pairs(scene_dataroot)[1]
    raw = np.fromfile(files[1], dtype="<f4")
    assert raw.size == 36 * 64 * 128
    assert np.array_equal(raw.reshape(36, 64, 128), encode_pair(pair))


def test_preprocess_without_instances(scene_dataroot, tmp_path):
    files = preprocess_dataset(scene_dataroot, tmp_path / "prep", use_instance=False)
    assert files[0].stat().st_size == 35 * 64 * 128 * 4
