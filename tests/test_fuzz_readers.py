"""The readers of untrusted files, fuzzed: label maps, instance maps, input .bin/.npy files and output .bin files.

Each reader either returns a correct array or raises :class:`UserError` (one clear line for the user); anything
else (a traceback) fails. The label-map reader takes every kind of :mod:`labelmaps` (random palettes and colours
are refused as unknown colours, random 16-bit values as ids out of range). Inputs: images of random modes (L, P, RGB, RGBA, LA, 1, I;16 as PNG; I, F as TIFF named
.png) and sizes (1x1 up, odd, below half the size multiple), then truncated at a random offset, with bytes flipped,
or replaced by random bytes; raw float32 files of right and wrong sizes with NaN and infinities; .npy files of other
dtypes, truncated or random. Bounded by ``max_examples`` (a few seconds in all); the number of examples tried is counted
in ``TRIED`` and printed at the end of the module.
"""
from __future__ import annotations

import io
import logging
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from pix2pixhd_deploy.data.labelmaps import read_instance_map, read_label_map
from pix2pixhd_deploy.errors import UserError
from pix2pixhd_deploy.seed.infer_files import read_input
from pix2pixhd_deploy.seed.postprocess import read_output_bin

TRIED: Counter = Counter()
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MODES = ["L", "P", "RGB", "RGBA", "LA", "1", "I;16", "I", "F"]


@pytest.fixture(scope="module", autouse=True)
def report_examples(request):
    yield
    line = "fuzzed readers, examples tried: " + ", ".join(f"{k} {v}" for k, v in sorted(TRIED.items()))
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def _image(mode: str, h: int, w: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    if mode == "I":
        return Image.fromarray(rng.integers(0, 65536, (h, w)).astype(np.int32))
    if mode == "F":
        return Image.fromarray(rng.standard_normal((h, w)).astype(np.float32))
    channels = {"L": 1, "P": 1, "1": 1, "LA": 2, "RGB": 3, "RGBA": 4}[mode]
    data = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
    img = Image.fromarray(data[:, :, 0] if channels == 1 else data, "L" if channels == 1 else None)
    if mode == "P":
        img = img.convert("P")
        img.putpalette(list(rng.integers(0, 256, 768, dtype=np.uint8)))
    return img.convert("1") if mode == "1" else img


@st.composite
def image_files(draw):
    """(mode, original pixels, file bytes, how they were damaged)."""
    mode = draw(st.sampled_from(MODES))
    h, w = draw(st.integers(1, 80)), draw(st.integers(1, 80))
    img = _image(mode, h, w, draw(st.integers(0, 2 ** 16)))
    buf = io.BytesIO()
    img.save(buf, format="TIFF" if mode in ("I", "F") else "PNG")  # Pillow's PNG takes neither; named .png still
    data = buf.getvalue()
    damage = draw(st.sampled_from(["none", "none", "truncated", "flipped", "random"]))
    if damage == "truncated":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif damage == "flipped":
        data = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= draw(st.integers(1, 255))
        data = bytes(data)
    elif damage == "random":
        data = draw(st.binary(max_size=400))
    return mode, np.asarray(img), data, damage


def _snapped(pixels: np.ndarray, base: int) -> np.ndarray:
    """Upstream's nearest resize to a multiple of ``base``, from the original pixels."""
    h, w = pixels.shape[:2]
    nh, nw = int(round(h / base) * base), int(round(w / base) * base)
    if (nh, nw) == (h, w):
        return pixels
    mode = "I" if pixels.dtype != np.uint8 else "L"
    return np.asarray(Image.fromarray(pixels.astype(np.int32) if mode == "I" else pixels, mode).resize(
        (nw, nh), Image.NEAREST))


def _read(reader, path, **kwargs):
    try:
        return reader(path, **kwargs)
    except UserError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
        return None


@FUZZ
@given(case=image_files(), base=st.sampled_from([1, 16, 32]))
def test_label_map_reader(case, base, scratch):
    TRIED["label maps"] += 1
    mode, pixels, data, damage = case
    path = scratch / "city_gtFine_labelIds.png"
    path.write_bytes(data)
    got = _read(read_label_map, path, base=base)
    # refused when too small (upstream's round(size / base) is 0 up to half a multiple: round(0.5) == 0), and the
    # other kinds when their random values are no ids (16-bit above 255) or no Cityscapes colours (RGB, palettes)
    if got is None:
        assert damage != "none" or mode != "L" or min(pixels.shape[:2]) <= base // 2
        return
    assert got.dtype == np.uint8 and got.ndim == 2 and got.shape[0] % base == 0 and got.shape[1] % base == 0
    if damage == "none":
        assert mode in ("L", "P", "I;16", "I", "RGB", "RGBA")
        if mode in ("L", "I;16", "I"):
            assert np.array_equal(got, _snapped(pixels, base).astype(np.uint8))


@FUZZ
@given(case=image_files(), base=st.sampled_from([1, 32]))
def test_instance_map_reader(case, base, scratch):
    TRIED["instance maps"] += 1
    mode, pixels, data, damage = case
    path = scratch / "city_gtFine_instanceIds.png"
    path.write_bytes(data)
    logging.disable(logging.WARNING)  # the 8-bit warning, many times over
    try:
        got = _read(read_instance_map, path, base=base)
    finally:
        logging.disable(logging.NOTSET)
    if got is None:  # too small: as above
        assert damage != "none" or mode not in ("L", "P", "I;16", "I") or min(pixels.shape[:2]) <= base // 2
        return
    assert got.dtype == np.int32 and got.ndim == 2 and got.shape[0] % base == 0 and got.shape[1] % base == 0
    if damage == "none" and mode in ("L", "P", "I;16", "I"):
        assert np.array_equal(got, _snapped(pixels, base).astype(np.int32))


@st.composite
def raw_files(draw, channels: int):
    """(file bytes, (H, W) the reader is told or None, (H, W) written or None when not a whole tensor): right-sized
    float32 with NaN/Inf, or any length."""
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    kind = draw(st.sampled_from(["right", "right", "nan", "cut", "longer", "random"]))
    a = np.random.default_rng(draw(st.integers(0, 2 ** 16))).uniform(-1, 1, (channels, h, w)).astype(np.float32)
    if kind == "nan":
        a.ravel()[draw(st.integers(0, a.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    data = a.tobytes()
    if kind == "cut":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif kind == "longer":
        data += draw(st.binary(min_size=1, max_size=64))
    elif kind == "random":
        data = draw(st.binary(max_size=2000))
    hw = (h, w) if draw(st.booleans()) else None
    return data, hw, ((h, w) if kind == "right" else None)


def _check_raw(got, data, shape):
    assert got.shape == shape and got.dtype == np.float32 and np.isfinite(got).all()
    assert got.tobytes() == data


@FUZZ
@given(case=raw_files(36))
def test_input_bin_reader(case, scratch):
    TRIED["input .bin"] += 1
    data, hw, written = case
    path = scratch / "city_gtFine_labelIds.bin"
    path.write_bytes(data)
    shape = (36, *(hw or (4, 8)))
    got = _read(read_input, path, shape=shape)
    if written is not None and written[0] * written[1] == shape[1] * shape[2]:  # a whole, finite tensor: read
        assert got is not None, (written, shape)
    if got is not None:
        _check_raw(got, data, shape)


@FUZZ
@given(dtype=st.sampled_from(["float32", "float64", "int32", "uint8"]), shape=st.tuples(
    st.integers(1, 36), st.integers(0, 6), st.integers(0, 6)), cut=st.one_of(st.none(), st.integers(0, 200)),
    bad=st.sampled_from([None, np.nan, np.inf]), scribble=st.one_of(st.none(), st.binary(max_size=200)))
@example(dtype="float32", shape=(36, 2, 3), cut=None, bad=None, scribble=None)  # the valid file, always tried
def test_input_npy_reader(dtype, shape, cut, bad, scribble, scratch):
    TRIED["input .npy"] += 1
    a = np.ones(shape, dtype)
    if bad is not None and a.size and a.dtype.kind == "f":
        a.ravel()[0] = bad
    buf = io.BytesIO()
    np.save(buf, a)
    data = scribble if scribble is not None else buf.getvalue()[:cut] if cut is not None else buf.getvalue()
    path = scratch / "x.npy"
    path.write_bytes(data)
    want = (36, 2, 3)
    got = _read(read_input, path, shape=want)
    whole = scribble is None and cut is None and (bad is None or a.dtype.kind != "f")
    if whole and shape == want and dtype == "float32":  # exactly what preprocess writes: read, values kept
        assert got is not None and np.array_equal(got, a)
    if got is not None:
        assert got.shape == want and got.dtype == np.float32 and np.isfinite(got).all()


@FUZZ
@given(case=raw_files(3))
def test_output_bin_reader(case, scratch):
    TRIED["output .bin"] += 1
    data, hw, written = case
    path = scratch / "city_gtFine_labelIds_0.bin"
    path.write_bytes(data)
    got = _read(read_output_bin, path, hw=hw)
    if written is not None and (hw is not None or written[1] == 2 * written[0]):  # a whole, finite output: read
        assert got is not None, (written, hw)
    if got is not None:
        h = got.shape[1]
        _check_raw(got, data, (3, *(hw or (h, 2 * h))))
