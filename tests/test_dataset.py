"""Dataset conversion (datasets_deal.py), pairing by stem, and reading label/instance PNGs."""
from __future__ import annotations

import logging
import os

import numpy as np
import pytest
from PIL import Image

from pix2pixhd_deploy.data.dataset import convert_cityscapes, find_pairs, pair_key
from pix2pixhd_deploy.data.labelmaps import read_instance_map, read_label_map
from pix2pixhd_deploy.data.synthetic import write_cityscapes_split
from pix2pixhd_deploy.errors import UserError


def test_pair_key():
    assert pair_key("frankfurt_000000_000576_gtFine_labelIds.png") == "frankfurt_000000_000576"
    assert pair_key("frankfurt_000000_000576_gtFine_instanceIds.png") == "frankfurt_000000_000576"
    assert pair_key("scene7.png") == "scene7"


def test_pairs_by_stem_not_position(tmp_path):
    for d in ("test_label", "test_inst"):
        (tmp_path / d).mkdir()
    Image.new("L", (64, 32)).save(tmp_path / "test_label" / "b_gtFine_labelIds.png")
    Image.new("L", (64, 32)).save(tmp_path / "test_label" / "a_gtFine_labelIds.png")
    Image.new("I;16", (64, 32)).save(tmp_path / "test_inst" / "a_gtFine_instanceIds.png")
    Image.new("I;16", (64, 32)).save(tmp_path / "test_inst" / "b_gtFine_instanceIds.png")
    pairs = find_pairs(tmp_path)
    assert [(p.label.name, p.instance.name) for p in pairs] == [
        ("a_gtFine_labelIds.png", "a_gtFine_instanceIds.png"), ("b_gtFine_labelIds.png", "b_gtFine_instanceIds.png")]
    os.remove(tmp_path / "test_inst" / "a_gtFine_instanceIds.png")
    with pytest.raises(UserError, match="1 label map.*have no instance map.*a_gtFine_labelIds.png"):
        find_pairs(tmp_path)
    assert len(find_pairs(tmp_path, use_instance=False)) == 2


def test_samples_pair_up(samples):
    pairs = find_pairs(samples)
    assert len(pairs) == 15
    assert all(pair_key(p.label) == pair_key(p.instance) for p in pairs)


def test_convert_copies_and_links(tmp_path):
    split = tmp_path / "gtFine" / "val"
    stems = write_cityscapes_split(split, 2, height=32, width=64, city="bonn")
    write_cityscapes_split(split, 1, height=32, width=64, city="ulm", seed=5)
    (split / "bonn" / f"{stems[0]}_gtFine_color.png").write_bytes(b"ignored")
    root = tmp_path / "ds"
    report = convert_cityscapes(split, root / "test_inst", root / "test_label")
    assert (report.pairs, report.copied, dict(report.cities)) == (3, 6, {"bonn": 2, "ulm": 1})
    assert sorted(p.name for p in (root / "test_label").iterdir()) == [
        "bonn_000000_000000_gtFine_labelIds.png", "bonn_000000_000001_gtFine_labelIds.png",
        "ulm_000000_000000_gtFine_labelIds.png"]
    assert len(find_pairs(root)) == 3
    again = convert_cityscapes(split, root / "test_inst", root / "test_label")
    assert (again.copied, again.unchanged) == (0, 6)
    linked = convert_cityscapes(split, tmp_path / "l" / "test_inst", tmp_path / "l" / "test_label", link=True)
    assert linked.linked == 6 and (tmp_path / "l" / "test_label" / "ulm_000000_000000_gtFine_labelIds.png").is_symlink()


def test_convert_refuses_unpaired_and_never_overwrites(tmp_path):
    split = tmp_path / "val"
    write_cityscapes_split(split, 2, height=32, width=64, city="bonn")
    victim = tmp_path / "ds" / "test_label" / "bonn_000000_000000_gtFine_labelIds.png"
    victim.parent.mkdir(parents=True)
    victim.write_bytes(b"the user's own file")
    with pytest.raises(UserError, match="already in the output folder"):
        convert_cityscapes(split, tmp_path / "ds" / "test_inst", tmp_path / "ds" / "test_label")
    assert victim.read_bytes() == b"the user's own file"
    os.remove(split / "bonn" / "bonn_000000_000001_gtFine_instanceIds.png")
    with pytest.raises(UserError, match="no partner.*bonn_000000_000001_gtFine_labelIds.png"):
        convert_cityscapes(split, tmp_path / "o" / "i", tmp_path / "o" / "l")
    assert not (tmp_path / "o").exists()  # checked before anything is written
    with pytest.raises(UserError, match="pass one split"):
        (tmp_path / "root" / "val").mkdir(parents=True)
        convert_cityscapes(tmp_path / "root", tmp_path / "o" / "i", tmp_path / "o" / "l")


def test_read_label_and_instance_maps(tmp_path, caplog):
    Image.fromarray(np.full((32, 64), 7, np.uint8)).save(tmp_path / "l.png")
    Image.fromarray(np.full((32, 64), 33001, np.uint16)).save(tmp_path / "i16.png")
    assert read_label_map(tmp_path / "l.png").dtype == np.uint8
    inst = read_instance_map(tmp_path / "i16.png")
    assert inst.dtype == np.int32 and inst.max() == 33001  # no int16 wrap
    Image.new("RGB", (64, 32)).save(tmp_path / "rgb.png")  # black: a colour map, read as ego vehicle
    assert (read_label_map(tmp_path / "rgb.png") == 1).all()
    with pytest.raises(UserError, match=r"i16.png: label ids 33001 \(2048 px\) are outside 0..255"):
        read_label_map(tmp_path / "i16.png")
    Image.new("F", (64, 32)).save(tmp_path / "float.tif")
    with pytest.raises(UserError, match="float.tif: the label map is a float image.*labelIds"):
        read_label_map(tmp_path / "float.tif")
    with caplog.at_level(logging.WARNING):
        read_instance_map(tmp_path / "l.png")
    assert "8-bit" in caplog.text and "#11" in caplog.text
    (tmp_path / "text.png").write_text("not a png")
    with pytest.raises(UserError, match="text.png: not an image file"):
        read_label_map(tmp_path / "text.png")
    data = (tmp_path / "l.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="cut.png: the label map is damaged or truncated"):
        read_label_map(tmp_path / "cut.png")
