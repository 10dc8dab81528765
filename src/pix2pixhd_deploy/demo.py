"""The demo, and what ``make demo`` runs: the seed's whole chain through the same functions as its scripts.

Without arguments it makes its own data and model: Cityscapes-like scenes written as a gtFine split
(:mod:`synthetic`) and a seeded random-weight checkpoint of the real label2city_1024p architecture (its pictures are
noise). Then: convert (``datasets_deal.py``) -> preprocess (``pix2pixhd_preprocess.py``) -> infer (``ais_bench``'s
flags, torch runner) -> postprocess (``pix2pixhd_postprocess.py``), and the same data through the default path a user
types (``run --checkpoint``: on a CPU the CPU graph from the model cache), whose pictures are compared with the
chain's value for value -> ``index.html`` with each coloured label map beside its output. With ``checkpoint`` and ``dataroot`` (or ``cityscapes``) it runs on real data.

Layout under the output folder mirrors the seed's guide::

    gtFine/val/<city>/...                       synthetic scenes (only without --dataroot/--cityscapes)
    pix2pixHD/datasets/cityscapes/test_{label,inst}/
    pix2pixHD/checkpoints/label2city_1024p/latest_net_G.pth   (random weights, only without --checkpoint)
    prep_datasets/<stem>.bin
    result/bs1/<stem>_0.bin, result/bs1_summary.json
    result/bs1generated/<stem>_0generated.png
    run/images/<stem>_synthesized_image.png, <stem>_input_label.png, run/manifest.json
    index.html
"""
from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
from PIL import Image

from .compare.page import IndexRow, write_index_html
from .data.dataset import convert_cityscapes, map_sizes
from .errors import PathLike
from .fileio import CHECKPOINT_NAME, ensure_output_dir, progress, stem_of
from .model.network import LABEL2CITY_1024P, random_generator, save_checkpoint
from .run.folder import image_paths
from .run.local import discover, run
from .run.settings import RunSettings
from .runners import TorchRunner
from .runners.choose import choose
from .runners.open import open_runner
from .seed.infer import run_inference
from .seed.postprocess import output_image_name, postprocess_dir
from .seed.preprocess import preprocess_dataset

log = logging.getLogger(__name__)

NOISE_NOTICE = ("These pictures come from RANDOM weights, so they are noise. Give a real label2city_1024p "
                "latest_net_G.pth with --checkpoint to get street photos.")


class _Steps:
    """The demo's steps: each one's time (:meth:`step`) and the report's lines."""

    def __init__(self):
        self.timings: List[Tuple[str, float]] = []
        self.lines: List[str] = []

    @contextlib.contextmanager
    def step(self, name: str):
        log.info("%s ...", name)
        start = time.perf_counter()
        yield
        self.timings.append((name, time.perf_counter() - start))


def run_demo(output: PathLike = "demo_out", *, checkpoint: Optional[PathLike] = None,
             dataroot: Optional[PathLike] = None, cityscapes: Optional[PathLike] = None, num_images: int = 3,
             size: Tuple[int, int] = (1024, 2048), seed: int = 0, device: Optional[str] = None,
             batchsize: int = 1, instances: Optional[str] = None, fit: str = "resize") -> str:
    """Run the whole chain into ``output``; returns a short report (stages, timings, where to look).

    ``instances`` and ``fit`` as ``run`` takes them; with ``fit="pad"`` preprocess's sidecar makes postprocess crop
    the chain's pictures back too, so the two paths still agree pixel for pixel."""
    out = ensure_output_dir(output)
    steps = _Steps()
    data = Path(dataroot) if dataroot is not None else _gather_data(out, cityscapes, num_images, size, seed, steps)
    ckpt, random_weights = _checkpoint(out, checkpoint, seed, steps)
    pairs, instances = discover(data, None, instances=instances)
    bins, pictures = _seed_chain(out, data, ckpt, steps, device=device, batchsize=batchsize, instances=instances,
                                 fit=fit)
    settings = _default_path(out, ckpt, pairs, steps, device=device, batchsize=batchsize, instances=instances,
                             fit=fit)
    steps.lines.append(_agreement(out, pairs, pictures, settings.image_format))
    index = write_index_html(out / "index.html", _index_rows(out, pairs, settings.image_format),
                             title="pix2pixhd-deploy demo: label2city_1024p",
                             notice=NOISE_NOTICE if random_weights else None)
    steps.lines.append(f"{len(bins)} images; stages: " + ", ".join(f"{n.split(' (')[0]} {s:.1f}s"
                                                                   for n, s in steps.timings))
    steps.lines.append(f"pictures: {out / 'run' / 'images'} (and the seed chain's in "
                       f"{out / 'result' / 'bs1generated'})")
    steps.lines.append(f"open {index} to see each label map beside its output")
    if random_weights:
        steps.lines.append("NOTE: " + NOISE_NOTICE)
    return "\n".join(steps.lines)


def _gather_data(out: Path, cityscapes: Optional[PathLike], num_images: int, size: Tuple[int, int], seed: int,
                 steps: _Steps) -> Path:
    """The data root of the chain: a gtFine split (synthetic scenes without ``cityscapes``) converted as
    ``datasets_deal.py`` does."""
    from .data.synthetic import write_cityscapes_split

    data = out / "pix2pixHD" / "datasets" / "cityscapes"
    split = Path(cityscapes) if cityscapes else out / "gtFine" / "val"
    if cityscapes is None:
        with steps.step(f"synthesise {num_images} scenes ({size[1]}x{size[0]})"):
            write_cityscapes_split(split, num_images, height=size[0], width=size[1], seed=seed)
    with steps.step("convert (datasets_deal.py)"):
        report = convert_cityscapes(split, data / "test_inst", data / "test_label",
                                    progress_fn=lambda k: progress(k, desc="convert"))
    steps.lines.append(f"convert: {report.summary()}")
    return data


def _checkpoint(out: Path, checkpoint: Optional[PathLike], seed: int, steps: _Steps) -> Tuple[Path, bool]:
    """The checkpoint given, or a seeded random-weight label2city_1024p one (made once); and whether it is random."""
    if checkpoint is not None:
        return Path(checkpoint), False
    ckpt = out / "pix2pixHD" / "checkpoints" / "label2city_1024p" / CHECKPOINT_NAME
    if not ckpt.is_file():
        with steps.step("make a random-weight label2city_1024p checkpoint"):
            save_checkpoint(random_generator(LABEL2CITY_1024P, seed=seed), ckpt)
    return ckpt, True


def _seed_chain(out: Path, data: Path, ckpt: Path, steps: _Steps, *, device: Optional[str], batchsize: int,
                instances: str, fit: str):
    """The seed's chain: preprocess -> infer (torch, ais_bench's flags) -> postprocess; the .bin inputs and the
    pictures."""
    prep = out / "prep_datasets"
    with steps.step("preprocess (pix2pixhd_preprocess.py)"):
        bins = preprocess_dataset(data, prep, instances=instances, fit=fit)
    with steps.step("infer (torch)"):
        with TorchRunner(ckpt, device=device) as runner:
            result = run_inference(runner, inputs=str(prep), output=out / "result", output_dirname="bs1",
                                   batchsize=batchsize, warmup_count=0,
                                   argv=["pix2pixhd-deploy", "demo"])
        steps.lines.append(f"infer: {runner.describe()}, {result.summary['NPU_compute_time']['mean']:.0f} ms per "
                           f"execution (batch {result.batch_size}), {result.throughput:.3f} images/s")
    with steps.step("postprocess (pix2pixhd_postprocess.py)"):
        pictures = postprocess_dir(result.output_dir, out / "result" / "bs1generated")
    return bins, pictures


def _default_path(out: Path, ckpt: Path, pairs, steps: _Steps, *, device: Optional[str], batchsize: int,
                  instances: str, fit: str) -> RunSettings:
    """The default path on the same data, as the README tells users: run --checkpoint (label maps in, pictures
    out, nothing in between; on a CPU the CPU graph from the model cache, built on first use)."""
    with steps.step("run (the default path)"):
        use_instance = instances != "none"
        choice = choose(ckpt, device=device, use_instance=use_instance, sizes=map_sizes(pairs, fit=fit))
        settings = RunSettings.from_choice(choice, device=device, batch_size=batchsize, use_instance=use_instance,
                                           instances=instances, fit=fit)
        report = run(pairs, out / "run", lambda: open_runner(settings, choice), settings, write_index=False,
                     choice=choice.describe())
    steps.lines.append(f"run: {choice.reason}")
    steps.lines.append(report.summary().splitlines()[0])
    return settings


def _agreement(out: Path, pairs, pictures, image_format: str) -> str:
    """How far run's pictures are from the seed chain's, in levels."""
    by_stem = {stem_of(p): p for p in pictures}
    diffs = []
    for pair in pairs:
        chain_picture = by_stem[stem_of(output_image_name(f"{pair.name}_0.bin"))]
        picture, _ = image_paths(out / "run", pair.name, image_format)
        diffs.append(np.abs(np.asarray(Image.open(chain_picture), dtype=np.int16)
                            - np.asarray(Image.open(picture), dtype=np.int16)))
    return (f"run vs the seed's chain (torch): largest difference {max(int(d.max()) for d in diffs)} level(s), "
            f"{100 * np.mean([np.mean(d == 0) for d in diffs]):.3f}% of values identical")


def _index_rows(out: Path, pairs, image_format: str) -> List[IndexRow]:
    rows = []
    for pair in pairs:
        picture, label_png = image_paths(out / "run", pair.name, image_format)
        rows.append(IndexRow(pair.name, [("input_label", label_png), ("synthesized_image", picture)]))
    return rows
