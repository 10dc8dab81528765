"""The stems fast path: the two stem convolutions computed from the maps equal torch's convolutions."""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch
from conftest import SMALL_LOCAL

from pix2pixhd_deploy.export import seeded_maps
from pix2pixhd_deploy.model import stems as st
from pix2pixhd_deploy.model.encoding import encode_input_torch
from pix2pixhd_deploy.model.network import random_generator


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


#: label2city_1024p's stem widths (32 local and 64 global outputs, for which the C loops have their own code)
STEM_WIDTHS = dataclasses.replace(SMALL_LOCAL, ngf=32)


@pytest.mark.parametrize("config", [SMALL_LOCAL, STEM_WIDTHS], ids=["ngf8", "ngf32"])
@pytest.mark.parametrize("hw", [(64, 128), (38, 54), (32, 32)])
def test_stems_equal_the_convolutions(computer_kind, hw, config):
    gen = random_generator(config, seed=4)
    labels, insts = seeded_maps(2, *hw, seed=5)
    labels[0, :5, :7] = 33  # a small region at the corner: borders, reflection and short pool windows
    insts[1, -3:, -4:] = 26001
    comp = st.StemComputer(st.StemWeights.from_generator(gen))
    local, glob = comp(labels, insts)
    ref_local, ref_glob = reference_stems(gen, labels, insts)
    assert local.shape == ref_local.shape and glob.shape == ref_glob.shape
    assert np.abs(local - ref_local).max() <= 1e-5
    assert np.abs(glob - ref_glob).max() <= 1e-5


def test_kept_buffers_and_scratch_give_the_same_stems(computer_kind):
    """``reuse`` (run's and serve's way): the stems, the codes and the C loops' scratch memory are kept for the
    next map of the same size, so a later map finds the last one's values in them and must not depend on them."""
    gen = random_generator(STEM_WIDTHS, seed=4)
    comp = st.StemComputer(st.StemWeights.from_generator(gen), reuse=True)
    kept = []
    for seed, hw in enumerate([(64, 128), (64, 128), (38, 54), (64, 128)]):
        labels, insts = seeded_maps(1, *hw, seed=20 + seed)
        local, glob = comp(labels, insts)
        ref_local, ref_glob = reference_stems(gen, labels, insts)
        assert np.abs(local - ref_local).max() <= 1e-5 and np.abs(glob - ref_glob).max() <= 1e-5
        if computer_kind == "c":
            work = comp._buffers.global_work
            assert work.size == comp.lib.global_stem_work(*hw) > 0
            kept.append((hw, work.ctypes.data, comp._buffers.code.ctypes.data))
    if computer_kind == "c":
        assert kept[0][1:] == kept[1][1:]  # the same size: the same memory, nothing taken afresh


def test_stems_on_real_maps(samples):
    from pix2pixhd_deploy.data.dataset import find_pairs
    from pix2pixhd_deploy.data.labelmaps import load_maps

    if st.load_library() is None:
        pytest.skip("no C compiler here")
    gen = random_generator(SMALL_LOCAL, seed=6)
    label, inst, _ = load_maps(find_pairs(samples)[4])
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


# ------------------------------------------------------------------------------- bounds and the C library

@pytest.fixture
def fresh_library(monkeypatch, tmp_path):
    """load_library as on first use, with its cache in a folder of the test."""
    monkeypatch.setattr(st, "_LIB", None)
    monkeypatch.setattr(st, "_TRIED", False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    if st.compiler() is None:
        pytest.skip("no C compiler here")
    return tmp_path / "cache" / "pix2pixhd-deploy"


def test_the_c_functions_return_an_error_code_on_bad_input(fresh_library):
    lib = st.load_library()
    assert lib is not None
    w = st.StemWeights.from_generator(random_generator(SMALL_LOCAL))
    table, wsum, bias = w.tables("local")
    o = table.shape[1]
    out = np.empty((o, 16, 16), np.float32)
    p = lambda a: a.ctypes.data  # noqa: E731

    def call(fn, code, ncodes=w.n_codes, outputs=o):
        code = np.ascontiguousarray(code, np.int32)
        return fn(p(code), code.shape[0], code.shape[1], p(table), p(wsum), p(bias), ncodes, outputs, p(out), 1, None)

    good = np.zeros((16, 16), np.int32)
    for fn in (lib.local_stem, lib.global_stem):
        assert call(fn, good) == 0
        for bad in (-1, w.n_codes, 2 ** 31 - 1):  # below 0, just beyond the table, far beyond
            code = good.copy()
            code[9, 3] = bad
            assert call(fn, code) == 2, bad
        assert call(fn, np.zeros((6, 16))) == 3  # too small for the reflection padding at half size
        assert call(fn, np.zeros((16, 6))) == 3  # a narrow map: the width is checked as well as the height
        assert call(fn, np.zeros((7, 7))) == 0  # the smallest map the padding takes
        assert call(fn, good, ncodes=0) == 3
        out[...] = 123.0
        assert call(fn, good, outputs=0) == 3 and (out == 123.0).all()  # no outputs: refused, nothing written


def test_the_python_side_refuses_what_the_c_side_would(computer_kind):
    from pix2pixhd_deploy.errors import UserError

    gen = random_generator(SMALL_LOCAL)
    comp = st.StemComputer(st.StemWeights.from_generator(gen))
    labels, insts = seeded_maps(1, 32, 32, seed=1)
    with pytest.raises(UserError, match="label ids 35 \\(1024 px\\) are outside"):
        comp(np.full_like(labels, 35), insts)
    with pytest.raises(UserError, match="label id -3 is negative"):
        comp(np.full((1, 32, 32), -3, np.int32), insts)
    with pytest.raises(UserError, match="instance maps were not given to stem weights exported with them"):
        comp(labels, None)
    with pytest.raises(UserError, match="do not match the label maps"):
        comp(labels, insts[:, :16])
    with pytest.raises(UserError, match="at least 7x7"):
        comp(labels[:, :6], insts[:, :6])
    weights = st.StemWeights.from_generator(gen)
    weights.use_instance = False  # a table built without the edge channel
    weights.local_weight, weights.global_weight = weights.local_weight[:, :35], weights.global_weight[:, :35]
    no_inst = st.StemComputer(weights)
    with pytest.raises(UserError, match="instance maps were given to stem weights exported without them"):
        no_inst(labels, insts)


def test_a_stems_file_with_bad_shapes_is_refused(tmp_path):
    from pix2pixhd_deploy.errors import UserError

    w = st.StemWeights.from_generator(random_generator(SMALL_LOCAL))
    w.local_weight = w.local_weight[:, :20]  # fewer channels than label_nc + 1: the tables would be read beyond
    w.save(tmp_path / "g.onnx.stems.npz")
    with pytest.raises(UserError, match="unexpected shapes"):
        st.StemWeights.load(tmp_path / "g.onnx.stems.npz")


def test_the_cache_is_private_and_keyed_by_cpu_and_compiler(fresh_library, monkeypatch, tmp_path):
    assert st.load_library() is not None
    built = list(fresh_library.glob("stems-*.so"))
    assert len(built) == 1 and (fresh_library.stat().st_mode & 0o777) == 0o700
    cc, flags = st.compiler(), st.compiler_flags()
    key = st.build_key(cc, flags)
    assert built[0].name == f"stems-{key}.so"
    monkeypatch.setattr(st, "cpu_flags", lambda: "fpu sse2")  # another CPU sharing this home folder
    assert st.build_key(cc, flags) != key
    monkeypatch.undo()
    assert st.build_key(cc, [*flags, "-g"]) != key
    assert st.build_key(["env", *cc], flags) != key


def test_a_cache_others_can_write_is_not_used(fresh_library, monkeypatch, caplog):
    import logging

    fresh_library.mkdir(parents=True)
    os.chmod(fresh_library, 0o777)  # e.g. planted by another user in a shared XDG_CACHE_HOME
    with caplog.at_level(logging.WARNING, logger="pix2pixhd_deploy.model.stems"):
        assert st.load_library() is not None  # built in a private temporary folder instead
    assert "not a private folder" in caplog.text
    assert not list(fresh_library.iterdir())
    assert st.cache_dir() is None


def test_a_cache_folder_that_is_a_link_is_not_used(fresh_library, tmp_path):
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    fresh_library.parent.mkdir(parents=True)
    fresh_library.symlink_to(tmp_path / "elsewhere")
    assert st.cache_dir() is None


def test_cc_with_arguments_and_a_broken_compiler(fresh_library, monkeypatch, caplog):
    import logging
    import shutil

    gcc = shutil.which("gcc") or shutil.which("cc")
    monkeypatch.setenv("CC", f"env {gcc}")  # as `ccache gcc`: a command with arguments
    assert st.load_library() is not None
    monkeypatch.setattr(st, "_LIB", None)
    monkeypatch.setattr(st, "_TRIED", False)
    monkeypatch.setenv("CC", "false --no-such-compiler")
    with caplog.at_level(logging.WARNING, logger="pix2pixhd_deploy.model.stems"):
        assert st.load_library() is None  # one line, and the torch convolutions take over
    assert "could not compile stems.c with false --no-such-compiler" in caplog.text
    assert not [p for p in fresh_library.iterdir() if p.name.startswith(".tmp-")]
