"""Winograd F(2x2, 3x3) against F(4x4, 3x3) in the CPU graph: OpenVINO time per map (alternating, one process)
and the pictures against NVIDIA's code, on real maps at 2048x1024.

    python benchmarks/winograd_tile.py --checkpoint CK/latest_net_G.pth --dataroot ../shared/data/cityscapes_samples -n 3

Each graph is ``run``'s CPU recipe (:func:`choose.export_cpu_graph`: stems, fast convolutions, precise norms,
static batch 1) with the global generator's 18 residual-block convolutions as F(2x2, 3x3) (today's) or as
F(4x4, 3x3): 2.25 multiplications an output instead of 4, but transforms with coefficients up to 8 and 1/24, so a
float error about 20 times larger (2.8e-5 against 1.4e-6 for one 1024-channel layer against float64). The rule
(issue 20): keep it only if the pictures stay within one level of NVIDIA's on 99.9% of the values and it is faster.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from pix2pixhd_deploy.compare.metrics import compare_arrays  # noqa: E402
from pix2pixhd_deploy.data.dataset import find_pairs  # noqa: E402
from pix2pixhd_deploy.data.labelmaps import MapOptions, load_maps  # noqa: E402
from pix2pixhd_deploy.model import fastconv  # noqa: E402
from pix2pixhd_deploy.model.stems import StemComputer, StemWeights, sidecar_path  # noqa: E402
from pix2pixhd_deploy.provenance import machine, versions  # noqa: E402
from pix2pixhd_deploy.runners.choose import export_cpu_graph  # noqa: E402


def build(checkpoint: Path, folder: Path, tile: int, size) -> Path:
    fastconv.rewrite_for_cpu.__kwdefaults__["tile"] = tile  # the recipe's rewrite, with this tile
    try:
        start = time.perf_counter()
        export_cpu_graph(checkpoint, folder, *size, label_nc=35, use_instance=True, output_format="uint8")
        print(f"F({tile}x{tile}, 3x3): graph built in {time.perf_counter() - start:.0f} s", flush=True)
    finally:
        fastconv.rewrite_for_cpu.__kwdefaults__["tile"] = 2
    return folder / "model.onnx"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--dataroot", required=True, type=Path)
    parser.add_argument("-n", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="times each map goes through each graph")
    parser.add_argument("--work", type=Path, help="where the graphs go (default: a temporary folder)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    import openvino as ov

    from pix2pixhd_deploy.model.upstream import UpstreamGenerator

    pairs = find_pairs(args.dataroot)[: args.n]
    maps = [load_maps(p, MapOptions()) for p in pairs]
    size = maps[0][0].shape
    work = args.work or Path(tempfile.mkdtemp(prefix="winograd-"))
    graphs = {tile: build(args.checkpoint, work / f"tile{tile}", tile, size) for tile in (2, 4)}
    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    compiled = {t: core.compile_model(str(g), "CPU", config) for t, g in graphs.items()}
    requests = {t: c.create_infer_request() for t, c in compiled.items()}
    stems = StemComputer(StemWeights.load(sidecar_path(graphs[2])))
    names = [i.get_any_name() for i in compiled[2].inputs]
    seconds = {t: [] for t in graphs}
    pictures = {t: [] for t in graphs}
    for r in range(args.rounds):
        for k, (label, inst, _) in enumerate(maps):
            feeds = dict(zip(names, stems(label[None], inst[None])))
            for t in (2, 4) if (r + k) % 2 == 0 else (4, 2):  # alternating, each first in turn
                start = time.perf_counter()
                out = requests[t].infer(feeds)
                seconds[t].append(time.perf_counter() - start)
                if r == 0:
                    pictures[t].append(np.asarray(out[compiled[t].outputs[0]])[0].astype(np.uint8))
            print(f"round {r} {pairs[k].name}: F(2) {seconds[2][-1]:.2f} s, F(4) {seconds[4][-1]:.2f} s", flush=True)
    upstream = UpstreamGenerator(args.checkpoint)
    reference = [upstream.picture(label, inst) for label, inst, _ in maps]
    report = {"maps": [p.name for p in pairs], "size": list(size), "machine": machine(), "versions": versions(),
              "tiles": {}}
    print("\n| Winograd | s/map (median) | vs F(2x2) | PSNR vs NVIDIA (min) | >1 level (max) | largest |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for t in (2, 4):
        rows = [compare_arrays(p, ref, "levels", with_ssim=False)[0] for p, ref in zip(pictures[t], reference)]
        entry = {"seconds": seconds[t], "median_s": float(np.median(seconds[t])),
                 "psnr_db_min": min(r.psnr_db for r in rows),
                 "over_one_level_share_max": max(r.over_one_level_share for r in rows),
                 "differing_share_max": max(r.differing_share for r in rows),
                 "max_level_diff": max(r.max_level_diff for r in rows)}
        report["tiles"][t] = entry
        print(f"| F({t}x{t}, 3x3) | {entry['median_s']:.2f} | "
              f"{np.median(seconds[2]) / entry['median_s']:.3f}x | {entry['psnr_db_min']:.1f} | "
              f"{entry['over_one_level_share_max']:.4%} | {entry['max_level_diff']} |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
