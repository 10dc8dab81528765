"""One contract for every model form: every runner x (tensor, maps, stems) x (float, uint8), through the one adapter
that turns label/instance maps into a runner's feeds, with static batches split and padded and sizes checked."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from conftest import SMALL_LOCAL, run_cli
from PIL import Image

from pix2pixhd_deploy.data.synthetic import make_scene
from pix2pixhd_deploy.errors import UserError
from pix2pixhd_deploy.model.encoding import encode_input
from pix2pixhd_deploy.runners import make_runner
from pix2pixhd_deploy.runners.adapter import encoding_of, make_adapter
from pix2pixhd_deploy.seed.postprocess import tensor2im

H, W = 64, 128
FORMS = [(i, o) for i in ("tensor", "maps", "stems") for o in ("float", "uint8")]
GRAPH_BACKENDS = ["onnxruntime"] + (["openvino"] if importlib.util.find_spec("openvino") else [])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from pix2pixhd_deploy.model.network import random_generator, save_checkpoint

    return save_checkpoint(random_generator(SMALL_LOCAL, seed=1), tmp_path_factory.mktemp("ck") / "latest_net_G.pth")


@pytest.fixture(scope="module")
def graphs(tmp_path_factory, checkpoint):
    """Each form exported with a static batch of 2 and a static 64x128 size."""
    pytest.importorskip("onnxruntime", reason="ONNX Runtime is not installed (pip install onnxruntime)")
    from pix2pixhd_deploy.export import export_onnx

    folder = tmp_path_factory.mktemp("graphs")
    out = {}
    for form in FORMS:
        path = folder / f"{form[0]}_{form[1]}.onnx"
        export_onnx(checkpoint, path, batch=2, dynamic_batch=False, height=H, width=W, input_format=form[0],
                    output_format=form[1])
        out[form] = path
    return out


@pytest.fixture(scope="module")
def scenes():
    maps = [make_scene(H, W, seed=s) for s in range(3)]
    return (np.stack([m[0] for m in maps]).astype(np.uint8), np.stack([m[1] for m in maps]).astype(np.int32))


@pytest.fixture(scope="module")
def reference(checkpoint, scenes):
    """Pictures from the plain torch generator on upstream's encoding, one image at a time."""
    labels, insts = scenes
    with make_runner(checkpoint, device="cpu") as r:
        return np.stack([tensor2im(r.infer(encode_input(lab, ins)[None])[0]) for lab, ins in zip(labels, insts)])


def _runner(backend, form, checkpoint, graphs):
    if backend == "torch":
        return make_runner(checkpoint, device="cpu", input_format=form[0], output_format=form[1])
    return make_runner(graphs[form], backend=backend)


@pytest.mark.parametrize("form", FORMS, ids=["-".join(f) for f in FORMS])
@pytest.mark.parametrize("backend", ["torch"] + GRAPH_BACKENDS)
def test_every_runner_takes_every_form_through_the_adapter(backend, form, checkpoint, graphs, scenes, reference):
    labels, insts = scenes
    with _runner(backend, form, checkpoint, graphs) as runner:
        specs = runner.input_specs()
        assert runner.input_format == form[0] and runner.output_format == form[1]
        assert [s.name for s in specs] == {"tensor": ["input_concat"], "maps": ["label", "inst"],
                                           "stems": ["local_stem", "global_stem"]}[form[0]]
        out = runner.output_spec()
        assert out.dtype == ("uint8" if form[1] == "uint8" else "float32")
        assert encoding_of(runner) == (35, True)
        engine = make_adapter(runner, 35, True)
        # three maps: a graph's static batch of 2 runs them as 2 + (1 padded to 2)
        pictures, raw = engine(labels, insts, want_raw=form[1] == "float")
        assert pictures.shape == (3, H, W, 3) and pictures.dtype == np.uint8
        assert (raw is None) == (form[1] == "uint8")
        if raw is not None:
            assert raw.shape == (3, 3, H, W) and raw.dtype == np.float32
        # within one level of torch: another runtime or the stems sum in another order
        diff = np.abs(pictures.astype(int) - reference)
        assert diff.max() <= 1 and np.mean(diff > 0) < 1e-2
        if backend == "torch" and form[0] != "stems":  # one at a time, torch's own pixels
            one = np.concatenate([engine(labels[i:i + 1], insts[i:i + 1])[0] for i in range(3)])
            assert np.array_equal(one, reference)
        if backend != "torch":
            assert runner.input_specs()[0].batch == 2 and specs[0].spatial == (H, W)
            with pytest.raises(UserError, match=r"the map is 160x96 .* takes only 128x64"):
                engine(np.zeros((1, 96, 160), np.uint8), np.zeros((1, 96, 160), np.int32))


def test_the_contract_validates_feeds(checkpoint, scenes):
    labels, insts = scenes
    with make_runner(checkpoint, device="cpu", input_format="maps", output_format="uint8") as runner:
        with pytest.raises(ValueError, match="takes inputs"):
            runner.infer({"label": labels})
        with pytest.raises(ValueError, match="must be int32"):
            runner.infer({"label": labels, "inst": insts.astype(np.int64)})
        with pytest.raises(ValueError, match="batch sizes differ"):
            runner.infer({"label": labels, "inst": insts[:2]})
        with pytest.raises(ValueError, match="pass a dict"):
            runner.infer(labels)
        assert runner.infer({"label": labels, "inst": insts}).shape == (3, H, W, 3)


def test_a_model_for_other_maps_is_refused_once(checkpoint, scenes, graphs):
    labels, _ = scenes
    with make_runner(graphs[("maps", "uint8")]) as runner:
        with pytest.raises(UserError, match="takes instance maps, and this run has none"):
            make_adapter(runner, 35, False)
        engine = make_adapter(runner, 35, True)
        with pytest.raises(UserError, match="takes instance maps, but none were given"):
            engine(labels, None)
    with make_runner(graphs[("stems", "uint8")]) as runner:
        with pytest.raises(UserError, match="exported for label_nc=35, instance maps on"):
            make_adapter(runner, 20, True)


def test_run_any_batch_size_with_a_static_batch_graph(tmp_path, scene_dataroot, graphs, checkpoint):
    """--batch-size 3 on a batch-2 stems graph: split and padded; the pictures equal batch-size 1's."""
    outs = {}
    for bs in (1, 3):
        out = tmp_path / f"bs{bs}"
        run_cli(["pix2pixhd-deploy", "run", "--dataroot", scene_dataroot, "--model", graphs[("stems", "uint8")],
                 "--output", out, "--batch-size", str(bs)])
        outs[bs] = {p.name: np.asarray(Image.open(p)) for p in sorted((out / "images").glob("*_synthesized*"))}
    assert len(outs[1]) == 3 and outs[1].keys() == outs[3].keys()
    assert all(np.array_equal(outs[1][k], outs[3][k]) for k in outs[1])


def test_run_maps_of_another_size_than_the_graph_is_one_line(tmp_path, graphs):
    from pix2pixhd_deploy.fileio import atomic_save_image

    root = tmp_path / "data"
    label, inst = make_scene(96, 160, seed=0)
    for sub in ("test_label", "test_inst"):
        (root / sub).mkdir(parents=True)
    atomic_save_image(root / "test_label" / "a_000000_000000_gtFine_labelIds.png", label)
    atomic_save_image(root / "test_inst" / "a_000000_000000_gtFine_instanceIds.png", inst)
    out = tmp_path / "out"
    proc = run_cli(["pix2pixhd-deploy", "run", "--dataroot", root, "--model", graphs[("maps", "uint8")],
                    "--output", out], check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and "a_000000_000000_gtFine_labelIds.png" in lines[0]
    assert "160x96" in lines[0] and "128x64" in lines[0]
    assert not (out / "images").exists() or not list((out / "images").iterdir())
