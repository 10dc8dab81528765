"""The label-map reader (labelmaps.py): every kind of label map gives the same ids, and the same pictures through
``run``; instance maps derived from labels; ``--fit pad``; ``convert --from-colour``; the docs' commands."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_cli
from PIL import Image

from pix2pixhd_deploy.data.labelmaps import instances_from_labels, read_label_ids
from pix2pixhd_deploy.data.labels import AMBIGUOUS_IDS, BLACK_ID, COLOUR_TO_ID, NAME_TO_ID, PALETTE
from pix2pixhd_deploy.errors import UserError
from pix2pixhd_deploy.model.encoding import edges_from_instances

CAR, PERSON, ROAD, BUILDING, SKY = (NAME_TO_ID[n] for n in ("car", "person", "road", "building", "sky"))
#: run with the torch backend on the CPU: the seed chain's arithmetic (the default CPU path builds an ONNX graph)
TORCH_CPU = ["--backend", "torch", "--device", "cpu"]


def scene(h: int, w: int, seed: int = 0):
    """Label ids and a true Cityscapes instance map where no two instances of one class touch: cars and people as
    rectangles with gaps between them, on road, building, sky and the ego vehicle (black) at the bottom."""
    rng = np.random.default_rng(seed)
    label = np.full((h, w), SKY, np.uint8)
    label[h // 3:, :] = BUILDING
    label[h // 2:, :] = ROAD
    label[h - h // 8:, :] = BLACK_ID
    inst = label.astype(np.int32)
    x, k = 2, {CAR: 0, PERSON: 0}
    while x < w - 12:
        cls = CAR if rng.random() < 0.6 else PERSON
        bw, bh = int(rng.integers(6, 14)), int(rng.integers(6, h // 3))
        top = h // 2 + int(rng.integers(-h // 8, h // 8))
        label[top:top + bh, x:x + bw] = cls
        inst[top:top + bh, x:x + bw] = cls * 1000 + k[cls]
        k[cls] += 1
        x += bw + int(rng.integers(2, 6))  # a gap: no two instances touch
    return label, inst


def as_colours(label: np.ndarray) -> np.ndarray:
    return PALETTE[label]


def save(path: Path, array: np.ndarray, mode=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)
    return path


def pictures(run_dir: Path):
    return {p.name: np.asarray(Image.open(p)) for p in sorted((run_dir / "images").glob("*_synthesized_image.png"))}


# -------------------------------------------------------------------------------------------- the reader

def test_every_kind_gives_the_same_ids(tmp_path):
    label, _ = scene(48, 96)
    want = label
    rgb = as_colours(label)
    pal = Image.fromarray(label, "L").convert("P")
    pal.putpalette(PALETTE.ravel().tolist())  # upstream's labelcolormap(35): indices are ids
    odd = Image.fromarray(np.searchsorted(np.unique(label), label).astype(np.uint8), "P")
    odd.putpalette(PALETTE[np.unique(label)].ravel().tolist())  # Cityscapes colours in another order
    kinds = {
        "ids.png": save(tmp_path / "ids.png", label),
        "ids16.png": save(tmp_path / "ids16.png", label.astype(np.uint16)),
        "rgb.png": save(tmp_path / "rgb.png", rgb),
        "rgba.png": save(tmp_path / "rgba.png", np.dstack([rgb, np.full(label.shape, 7, np.uint8)])),
    }
    pal.save(tmp_path / "palette_ids.png")
    odd.save(tmp_path / "palette_colours.png")
    kinds["palette_ids.png"] = tmp_path / "palette_ids.png"
    kinds["palette_colours.png"] = tmp_path / "palette_colours.png"
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for name, path in kinds.items():
        assert np.array_equal(read_label_ids(path, label_nc=35), want), name
    assert before == {p.name: p.read_bytes() for p in tmp_path.iterdir()}  # inputs are only read


def test_colour_table_resolves_shared_colours():
    assert COLOUR_TO_ID[(0, 0, 142)] == CAR and COLOUR_TO_ID[(153, 153, 153)] == NAME_TO_ID["pole"]
    assert COLOUR_TO_ID[(0, 0, 0)] == BLACK_ID == NAME_TO_ID["ego vehicle"]
    # the ids a colour round trip changes: the other black ones, polegroup and the licence-plate channel
    assert AMBIGUOUS_IDS == [0, 2, 3, 4, NAME_TO_ID["polegroup"], 34]


def test_unknown_colours_name_colour_count_and_first_place(tmp_path):
    rgb = as_colours(scene(32, 64)[0])
    rgb[3, 5] = rgb[3, 6] = (1, 2, 3)
    rgb[10, 1] = (9, 9, 9)
    path = save(tmp_path / "painted.png", rgb)
    with pytest.raises(UserError) as err:
        read_label_ids(path)
    line = str(err.value)
    assert "painted.png" in line and "(1, 2, 3) in 2 px, first at x=5, y=3" in line
    assert "(9, 9, 9) in 1 px, first at x=1, y=10" in line and "\n" not in line


def test_instances_from_labels_follow_cityscapes():
    label = np.full((6, 10), ROAD, np.uint8)
    label[1:3, 1:3] = CAR
    label[1:3, 5:7] = CAR
    label[4:6, 0:2] = PERSON
    inst = instances_from_labels(label)
    assert set(np.unique(inst[label == CAR])) == {CAR * 1000, CAR * 1000 + 1}
    assert (inst[label == ROAD] == ROAD).all() and (inst[label == PERSON] == PERSON * 1000).all()
    label[1:3, 3:5] = CAR  # now the two cars touch: one instance, the expected loss
    assert set(np.unique(instances_from_labels(label)[label == CAR])) == {CAR * 1000}


def test_derived_instances_draw_the_true_edges_where_no_instances_touch():
    for seed in range(3):
        label, inst = scene(64, 128, seed)
        assert np.array_equal(edges_from_instances(instances_from_labels(label)), edges_from_instances(inst))


# ------------------------------------------------------------------------------- through run, end to end

def test_ids_colours_16bit_and_derived_instances_give_identical_pictures(tmp_path, small_checkpoint):
    """One folder of three kinds (mixed kinds are read file by file), then the same scene without instance maps."""
    label, inst = scene(64, 128, seed=1)
    data = tmp_path / "data"
    save(data / "test_label" / "a_ids.png", label)
    save(data / "test_label" / "b_rgb.png", as_colours(label))
    save(data / "test_label" / "c_16bit.png", label.astype(np.uint16))
    for stem in ("a_ids", "b_rgb", "c_16bit"):
        save(data / "test_inst" / f"{stem}_instanceIds.png", inst.astype(np.uint16))
    run_cli(["pix2pixhd-deploy", "run", "--dataroot", data, "--checkpoint", small_checkpoint, "--output",
             tmp_path / "run", *TORCH_CPU])
    got = list(pictures(tmp_path / "run").values())
    assert len(got) == 3 and all(np.array_equal(got[0], p) for p in got[1:])

    bare = tmp_path / "bare"  # no test_inst/ at all: --instances labels is chosen, with one line saying so
    save(bare / "test_label" / "a_ids.png", label)
    proc = run_cli(["pix2pixhd-deploy", "run", "--dataroot", bare, "--checkpoint", small_checkpoint, "--output",
                    tmp_path / "derived", *TORCH_CPU])
    assert proc.stderr.count("has no instance maps") == 1 and "--instances labels" in proc.stderr
    assert np.array_equal(list(pictures(tmp_path / "derived").values())[0], got[0])
    identity = json.loads((tmp_path / "derived" / "manifest.json").read_text())["identity"]
    assert identity["instances"] == "labels"


def test_fit_pad_keeps_the_size_and_crops_exactly(tmp_path, small_checkpoint):
    label, inst = scene(200, 360, seed=2)
    data = tmp_path / "data"
    save(data / "test_label" / "s_labelIds.png", label)
    save(data / "test_inst" / "s_instanceIds.png", inst.astype(np.uint16))
    padded = tmp_path / "padded"  # the padding the docs state: edge replication, bottom and right, to 224x384
    save(padded / "test_label" / "s_labelIds.png", np.pad(label, ((0, 24), (0, 24)), mode="edge"))
    save(padded / "test_inst" / "s_instanceIds.png", np.pad(inst, ((0, 24), (0, 24)), mode="edge").astype(np.uint16))
    common = ["--checkpoint", small_checkpoint, *TORCH_CPU]
    run_cli(["pix2pixhd-deploy", "run", "--dataroot", data, "--output", tmp_path / "pad", "--fit", "pad", *common])
    run_cli(["pix2pixhd-deploy", "run", "--dataroot", padded, "--output", tmp_path / "full", *common])
    pad = pictures(tmp_path / "pad")["s_labelIds_synthesized_image.png"]
    full = pictures(tmp_path / "full")["s_labelIds_synthesized_image.png"]
    assert pad.shape == (200, 360, 3) and full.shape == (224, 384, 3)
    assert np.array_equal(pad, full[:200, :360])
    label_png = np.asarray(Image.open(tmp_path / "pad" / "images" / "s_labelIds_input_label.png"))
    assert label_png.shape == (200, 360, 3)

    # the seed's chain: preprocess's sidecar lets infer size the inputs and postprocess crop back
    run_cli(["pix2pixhd_preprocess.py", data, tmp_path / "prep", "--fit", "pad"])
    run_cli(["pix2pixhd-deploy", "infer", "--model", small_checkpoint, "--input", tmp_path / "prep", "--output",
             tmp_path / "result", "--output_dirname", "bs1", "--device", "cpu"])
    run_cli(["pix2pixhd_postprocess.py", tmp_path / "result" / "bs1", tmp_path / "chain"])
    assert np.array_equal(np.asarray(Image.open(tmp_path / "chain" / "s_labelIds_0generated.png")), pad)

    # a resume with the other fit would mix pictures: refused, naming the setting
    proc = run_cli(["pix2pixhd-deploy", "run", "--dataroot", data, "--output", tmp_path / "pad", *common],
                   check=False)
    assert proc.returncode == 2 and "fit: 'pad' -> None" in proc.stderr and "Traceback" not in proc.stderr


def test_fit_pad_on_the_default_cpu_graph_and_under_ray(tmp_path, small_checkpoint):
    """--fit pad where users meet it: the default path (the CPU graph for the padded size, from the model cache) and
    --engine ray give the map's own size and the torch path's pixels (within one level: another runtime)."""
    from conftest import assert_within_one_level

    label, inst = scene(200, 360, seed=2)
    data = tmp_path / "data"
    save(data / "test_label" / "s_labelIds.png", label)
    save(data / "test_inst" / "s_instanceIds.png", inst.astype(np.uint16))
    common = ["--dataroot", data, "--checkpoint", small_checkpoint, "--fit", "pad", "--cache-dir", tmp_path / "cache"]
    run_cli(["pix2pixhd-deploy", "run", "--output", tmp_path / "torch", *common, *TORCH_CPU])
    proc = run_cli(["pix2pixhd-deploy", "run", "--output", tmp_path / "graph", *common])
    assert "CPU graph for 384x224" in proc.stderr, proc.stderr  # the padded size, not the map's
    want = pictures(tmp_path / "torch")["s_labelIds_synthesized_image.png"]
    graph = pictures(tmp_path / "graph")["s_labelIds_synthesized_image.png"]
    assert graph.shape == (200, 360, 3)
    assert_within_one_level(graph, want)
    pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'pix2pixhd-deploy[ray]')")
    run_cli(["pix2pixhd-deploy", "run", "--output", tmp_path / "ray", *common, "--engine", "ray", "--num-workers",
             "1"])
    assert np.array_equal(pictures(tmp_path / "ray")["s_labelIds_synthesized_image.png"], graph)


def test_some_instance_maps_missing_is_an_error_naming_them(tmp_path):
    label, inst = scene(32, 64)
    data = tmp_path / "data"
    for stem in ("a", "b"):
        save(data / "test_label" / f"{stem}_labelIds.png", label)
    save(data / "test_inst" / "a_instanceIds.png", inst.astype(np.uint16))
    proc = run_cli(["pix2pixhd_preprocess.py", data, tmp_path / "prep"], check=False)
    assert proc.returncode == 2 and "1 label map(s) have no instance map" in proc.stderr
    assert "b_labelIds.png" in proc.stderr and "--instances labels" in proc.stderr
    assert not (tmp_path / "prep").exists()


def test_convert_from_colour_writes_label_ids(tmp_path):
    split = tmp_path / "gtFine" / "val"
    label, inst = scene(32, 64)
    for k in range(2):
        save(split / "ulm" / f"ulm_000000_00000{k}_gtFine_color.png", as_colours(label))
        save(split / "ulm" / f"ulm_000000_00000{k}_gtFine_instanceIds.png", inst.astype(np.uint16))
    data = tmp_path / "data"
    proc = run_cli(["datasets_deal.py", data / "test_inst", data / "test_label", split, "--from-colour"])
    assert "2 converted from colours" in proc.stdout
    written = sorted((data / "test_label").iterdir())
    assert [p.name for p in written] == ["ulm_000000_000000_gtFine_labelIds.png", "ulm_000000_000001_gtFine_labelIds.png"]
    assert Image.open(written[0]).mode == "L" and np.array_equal(np.asarray(Image.open(written[0])), label)
    assert len(list((data / "test_inst").iterdir())) == 2
    # painted masks in a flat folder, no instance maps: labelIds only, test_inst/ not made
    masks = tmp_path / "masks"
    save(masks / "street.png", as_colours(label))
    run_cli(["datasets_deal.py", tmp_path / "d2" / "test_inst", tmp_path / "d2" / "test_label", masks, "--from-colour"])
    assert (tmp_path / "d2" / "test_label" / "street_gtFine_labelIds.png").is_file()
    assert not (tmp_path / "d2" / "test_inst").exists()


# ----------------------------------------------------------------------------------- the docs' commands

def _doc_commands(path: Path):
    """The ``$ ...`` lines of the doc's console blocks, as argument lists."""
    text = path.read_text()
    blocks = re.findall(r"```console\n(.*?)```", text, flags=re.S)
    return [shlex.split(line[2:]) for block in blocks for line in block.splitlines() if line.startswith("$ ")]


def test_the_docs_commands_run(tmp_path, small_checkpoint):
    """Every command of docs/labelmaps.md, in order, on small generated maps (CHECKPOINT: a small model; run and
    infer on the CPU, run with the torch backend so that its pictures equal the seed chain's)."""
    commands = _doc_commands(REPO / "docs" / "labelmaps.md")
    assert len(commands) >= 5
    label, inst = scene(200, 360, seed=3)
    save(tmp_path / "masks" / "street.png", as_colours(label))
    save(tmp_path / "figs" / "test_label" / "s_gtFine_labelIds.png", label)
    save(tmp_path / "figs" / "test_inst" / "s_gtFine_instanceIds.png", inst.astype(np.uint16))
    for args in commands:
        args = [str(small_checkpoint) if a == "CHECKPOINT" else a for a in args]
        if args[0] == "python":
            args = args[1:]
        if args[0] == "benchmarks/labelmap_figures.py":  # its figures need the real samples: here, a small root
            args = [*args, "--dataroot", str(tmp_path / "figs"), "--phases", "test"]
        if args[0] == "pix2pixhd-deploy" and args[1] in ("run", "infer"):
            args += TORCH_CPU if args[1] == "run" else ["--device", "cpu"]
        run_cli(args, cwd=tmp_path)
    out = np.asarray(Image.open(tmp_path / "out" / "images" / "street_gtFine_labelIds_synthesized_image.png"))
    chain = np.asarray(Image.open(tmp_path / "pictures" / "street_gtFine_labelIds_0generated.png"))
    assert out.shape == (200, 360, 3) and np.array_equal(out, chain)
    assert json.loads((tmp_path / "labelmap_figures.json").read_text())["images"] == 1


def test_size_errors_name_both_sizes_exactly(tmp_path):
    """The numbers in the two size errors are the files' own (cosmic-ray left both wrong-number mutants alive)."""
    from pix2pixhd_deploy.data.labelmaps import Pair, fit_map, load_maps

    label, inst = tmp_path / "a_gtFine_labelIds.png", tmp_path / "a_gtFine_instanceIds.png"
    Image.fromarray(np.full((32, 64), 7, np.uint8)).save(label)
    Image.fromarray(np.full((24, 40), 7, np.uint16)).save(inst)
    with pytest.raises(UserError) as info:
        load_maps(Pair("a", label, inst))
    assert info.value.problem == f"the instance map is 40x24 but its label map {label.name} is 64x32"
    with pytest.raises(UserError) as info:
        fit_map(np.zeros((8, 40), np.uint8), 32, "resize", path=label)
    assert info.value.problem == "the image is 40x8, too small for the generator (needs at least 17 pixels each way)"
    with pytest.raises(UserError) as info:
        fit_map(np.zeros((8, 40), np.uint8), 64, "resize", path=label)
    assert "needs at least 33 pixels" in info.value.problem
