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

import logging
import time
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
from PIL import Image

from .choose import choose
from .dataset import convert_cityscapes, map_sizes
from .encoding import preprocess_dataset
from .errors import PathLike
from .fileio import ensure_output_dir, progress, stem_of
from .infer import run_inference
from .network import (
    CHECKPOINT_NAME,
    LABEL2CITY_1024P,
    random_generator,
    save_checkpoint,
)
from .pipeline import RunSettings, discover, open_runner, run
from .postprocess import output_image_name, postprocess_dir
from .report import IndexRow, write_index_html
from .runfolder import image_paths
from .runners import TorchRunner

log = logging.getLogger(__name__)

NOISE_NOTICE = ("These pictures come from RANDOM weights, so they are noise. Give a real label2city_1024p "
                "latest_net_G.pth with --checkpoint to get street photos.")


def _stage(name: str, timings: List[Tuple[str, float]]):
    class _Timer:
        def __enter__(self):
            log.info("%s ...", name)
            self.start = time.perf_counter()

        def __exit__(self, *exc):
            timings.append((name, time.perf_counter() - self.start))

    return _Timer()


def run_demo(output: PathLike = "demo_out", *, checkpoint: Optional[PathLike] = None,
             dataroot: Optional[PathLike] = None, cityscapes: Optional[PathLike] = None, num_images: int = 3,
             size: Tuple[int, int] = (1024, 2048), seed: int = 0, device: Optional[str] = None,
             batchsize: int = 1, instances: Optional[str] = None, fit: str = "resize") -> str:
    """Run the whole chain into ``output``; returns a short report (stages, timings, where to look).

    ``instances`` and ``fit`` as ``run`` takes them; with ``fit="pad"`` preprocess's sidecar makes postprocess crop
    the chain's pictures back too, so the two paths still agree pixel for pixel."""
    from .synthetic import write_cityscapes_split

    out = ensure_output_dir(output)
    timings: List[Tuple[str, float]] = []
    lines = []

    if dataroot is None:
        data = out / "pix2pixHD" / "datasets" / "cityscapes"
        split = Path(cityscapes) if cityscapes else out / "gtFine" / "val"
        if cityscapes is None:
            with _stage(f"synthesise {num_images} scenes ({size[1]}x{size[0]})", timings):
                write_cityscapes_split(split, num_images, height=size[0], width=size[1], seed=seed)
        with _stage("convert (datasets_deal.py)", timings):
            report = convert_cityscapes(split, data / "test_inst", data / "test_label",
                                        progress_fn=lambda k: progress(k, desc="convert"))
        lines.append(f"convert: {report.summary()}")
    else:
        data = Path(dataroot)

    if checkpoint is None:
        ckpt = out / "pix2pixHD" / "checkpoints" / "label2city_1024p" / CHECKPOINT_NAME
        if not ckpt.is_file():
            with _stage("make a random-weight label2city_1024p checkpoint", timings):
                save_checkpoint(random_generator(LABEL2CITY_1024P, seed=seed), ckpt)
        random_weights = True
    else:
        ckpt = Path(checkpoint)
        random_weights = False

    pairs, instances = discover(data, None, instances=instances)
    prep = out / "prep_datasets"
    with _stage("preprocess (pix2pixhd_preprocess.py)", timings):
        bins = preprocess_dataset(data, prep, instances=instances, fit=fit)
    with _stage("infer (torch)", timings):
        with TorchRunner(ckpt, device=device) as runner:
            result = run_inference(runner, inputs=str(prep), output=out / "result", output_dirname="bs1",
                                   batchsize=batchsize, warmup_count=0,
                                   argv=["pix2pixhd-deploy", "demo"])
        lines.append(f"infer: {runner.describe()}, {result.summary['NPU_compute_time']['mean']:.0f} ms per "
                     f"execution (batch {result.batch_size}), {result.throughput:.3f} images/s")
    with _stage("postprocess (pix2pixhd_postprocess.py)", timings):
        pictures = postprocess_dir(result.output_dir, out / "result" / "bs1generated")

    # the default path on the same data, as the README tells users: run --checkpoint (label maps in, pictures
    # out, nothing in between; on a CPU the CPU graph from the model cache, built on first use)
    with _stage("run (the default path)", timings):
        use_instance = instances != "none"
        choice = choose(ckpt, device=device, use_instance=use_instance, sizes=map_sizes(pairs, fit=fit))
        settings = RunSettings.from_choice(choice, device=device, batch_size=batchsize, use_instance=use_instance,
                                           instances=instances, fit=fit)
        report = run(pairs, out / "run", lambda: open_runner(settings, choice), settings, write_index=False,
                     choice=choice.describe())
    lines.append(f"run: {choice.reason}")
    lines.append(report.summary().splitlines()[0])
    by_stem = {stem_of(p): p for p in pictures}
    diffs = []
    rows = []
    for pair in pairs:
        chain_picture = by_stem[stem_of(output_image_name(f"{pair.name}_0.bin"))]
        picture, label_png = image_paths(out / "run", pair.name, settings.image_format)
        diffs.append(np.abs(np.asarray(Image.open(chain_picture), dtype=np.int16)
                            - np.asarray(Image.open(picture), dtype=np.int16)))
        rows.append(IndexRow(pair.name, [("input_label", label_png), ("synthesized_image", picture)]))
    lines.append(f"run vs the seed's chain (torch): largest difference {max(int(d.max()) for d in diffs)} level(s), "
                 f"{100 * np.mean([np.mean(d == 0) for d in diffs]):.3f}% of values identical")
    index = write_index_html(out / "index.html", rows, title="pix2pixhd-deploy demo: label2city_1024p",
                             notice=NOISE_NOTICE if random_weights else None)

    lines.append(f"{len(bins)} images; stages: " + ", ".join(f"{n.split(' (')[0]} {s:.1f}s" for n, s in timings))
    lines.append(f"pictures: {out / 'run' / 'images'} (and the seed chain's in {out / 'result' / 'bs1generated'})")
    lines.append(f"open {index} to see each label map beside its output")
    if random_weights:
        lines.append("NOTE: " + NOISE_NOTICE)
    return "\n".join(lines)
