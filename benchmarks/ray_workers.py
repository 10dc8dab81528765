"""Images/s of ``run --engine ray`` with 1 and 2 model workers on this machine, beside the local engine.

Generated Cityscapes-style label/instance maps (``synthetic.make_scene``) of ``--size``, a generator with seeded
random weights (``--arch small``: the tests' small LocalEnhancer; ``label2city``: the real label2city_1024p
architecture, 182.9 M parameters) or ``--checkpoint``, fp32 torch on the CPU, batch 1, PNG out. One single-node Ray
cluster is started for all the Ray rows, with ``--cluster-cpus`` logical CPUs (default: the cores + 1, so that two
one-CPU workers leave a slot for the decoding tasks).

Two figures per row, kept apart:

* end to end: pictures / wall-clock seconds of the whole ``run`` call (for Ray: planning, starting the actors,
  loading the model in each, decoding, compute, writing);
* steady (Ray rows): pictures / seconds from the first batch any worker started to the last picture written (actor
  start-up and model loading excluded), the rate a long run tends to.

The machine, its load average before and after, and the versions are printed with the table (``--json`` saves it).

    .venv/bin/python benchmarks/ray_workers.py -n 8 --size 256x512 --arch small
    .venv/bin/python benchmarks/ray_workers.py -n 6 --size 256x512 --arch label2city
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from pix2pixhd_deploy.data.dataset import cityscapes_pairs  # noqa: E402
from pix2pixhd_deploy.data.synthetic import write_cityscapes_split  # noqa: E402
from pix2pixhd_deploy.model.network import LABEL2CITY_1024P, GeneratorConfig, random_generator, save_checkpoint  # noqa: E402
from pix2pixhd_deploy.provenance import machine, versions  # noqa: E402
from pix2pixhd_deploy.run.local import run  # noqa: E402
from pix2pixhd_deploy.run.settings import RunSettings  # noqa: E402
from pix2pixhd_deploy.runners.open import runner_for_run  # noqa: E402

#: the tests' small LocalEnhancer (tests/conftest.py SMALL_LOCAL)
SMALL = GeneratorConfig(input_nc=36, output_nc=3, ngf=8, netG="local", n_downsample_global=2, n_blocks_global=1,
                        n_local_enhancers=1, n_blocks_local=1)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def bench(args) -> dict:
    import ray

    from pix2pixhd_deploy.run.ray import run_ray

    work = Path(tempfile.mkdtemp(prefix="ray_workers_"))
    try:
        h, w = (int(v) for v in args.size.lower().split("x"))
        write_cityscapes_split(work / "val", args.n, height=h, width=w, city="bench")
        pairs = cityscapes_pairs(work / "val")
        checkpoint = args.checkpoint or save_checkpoint(
            random_generator(SMALL if args.arch == "small" else LABEL2CITY_1024P, seed=0),
            work / "ckpt" / "latest_net_G.pth")

        def settings():
            return RunSettings(model=str(checkpoint), backend="torch", device="cpu", batch_size=1)

        rows = []
        load_before = load_average()
        for streams in (1, 2):  # the local engine: one process, all cores, 1 or 2 batches at once
            s = settings()
            s.streams = streams
            t = time.perf_counter()
            report = run(pairs, work / f"local_{streams}", runner_for_run(checkpoint, device="cpu", streams=streams),
                         s, show_progress=False, write_index=False)
            rows.append({"engine": f"local, --streams {streams}", "workers": 1, "cpus_per_worker": os.cpu_count(),
                         "images": report.done, "end_to_end": report.done / (time.perf_counter() - t),
                         "steady": None})
        cluster_cpus = args.cluster_cpus or (os.cpu_count() or 1) + 1
        ray.init(num_cpus=cluster_cpus, include_dashboard=False, object_store_memory=300 * 1024 ** 2,
                 log_to_driver=False, configure_logging=False)
        try:
            for workers, cpus in [(1, 1.0), (2, 1.0), (1, float(os.cpu_count() or 1))]:
                out = work / f"ray_{workers}x{cpus:g}"
                t = time.perf_counter()
                r = run_ray(pairs, out, settings(), num_workers=workers, cpus_per_worker=cpus, show_progress=False,
                            write_index=False)
                wall = time.perf_counter() - t
                first = min(s.first_start for s in r.workers.values())
                last = max(s.last_end for s in r.workers.values())
                rows.append({"engine": "ray", "workers": workers, "cpus_per_worker": cpus, "images": r.done,
                             "end_to_end": r.done / wall, "steady": r.done / (last - first),
                             "per_worker": {k: round(s.images_per_second, 3) for k, s in r.workers.items()}})
        finally:
            ray.shutdown()
        return {"rows": rows, "images": args.n, "size": [h, w], "arch": args.arch if not args.checkpoint else
                str(args.checkpoint), "cluster_cpus": cluster_cpus, "machine": machine(), "versions": {
                    **versions(), "ray": ray.__version__}, "load_average_before": load_before,
                "load_average_after": load_average()}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def format_table(result: dict) -> str:
    lines = [f"{result['images']} images of {result['size'][1]}x{result['size'][0]}, {result['arch']}, fp32 torch, "
             f"batch 1, on {result['machine']['cpu']} ({result['machine']['cpu_count']} cores); Ray cluster of "
             f"{result['cluster_cpus']} logical CPUs; load average {result['load_average_before']} before, "
             f"{result['load_average_after']} after",
             f"{'engine':34} {'workers':>7} {'cpus/worker':>11} {'end to end img/s':>17} {'steady img/s':>13}"]
    for r in result["rows"]:
        steady = "-" if r["steady"] is None else f"{r['steady']:.3f}"
        lines.append(f"{r['engine']:34} {r['workers']:>7} {r['cpus_per_worker']:>11g} {r['end_to_end']:>17.3f} "
                     f"{steady:>13}")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=8, help="images (default 8)")
    p.add_argument("--size", default="256x512", help="HEIGHTxWIDTH of the label maps (default 256x512)")
    p.add_argument("--arch", choices=("small", "label2city"), default="small", help="random-weight generator")
    p.add_argument("--checkpoint", type=Path, help="a real latest_net_G.pth instead of random weights")
    p.add_argument("--cluster-cpus", type=int, help="logical CPUs of the local Ray cluster (default cores + 1)")
    p.add_argument("--json", type=Path, help="save the figures here")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    result = bench(args)
    print(format_table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
