"""The default path, whole process: ``pix2pixhd-deploy run --checkpoint CK --dataroot D --output O`` (what a newcomer
types) against an upstream-equivalent loop (NVIDIA's code from PyPI ``pix2pixhd``: eager fp32 torch, PIL, one image
at a time, JPEG out, as test.py does), label PNGs in to pictures out, on N real samples at 2048x1024.

For each N (default 1, 3 and 15) the processes alternate in this one run: the upstream loop, then ``run`` with a
warm model cache (the CPU graph already built), then, for the N in ``--cold``, ``run`` with an empty cache (it builds
the graph first; the first such run fills the cache the warm runs use). Each figure is the wall clock of the whole process (start-up, model load, every image) and the
time from the command to the first picture on disk. The pictures of ``run`` are compared with the upstream loop's
(saved, besides its JPEGs, as raw uint8 arrays: about 10 ms an image, inside its timing): the share of values within
one level and the largest difference.

    .venv/bin/python benchmarks/default_path.py                 # N = 1, 3, 15; cold cache for N = 1
    .venv/bin/python benchmarks/default_path.py -n 3 --cold     # a quick look
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "data" / "cityscapes_samples"
sys.path.insert(0, str(REPO / "benchmarks"))
from run_vs_upstream import upstream_loop  # noqa: E402  (the same loop as the other benchmark)


def timed(cmd, pictures: Path, env=None) -> dict:
    """Run ``cmd``; its wall time and the time to the first ``*_synthesized_image.*`` under ``pictures``."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    first = None
    while proc.poll() is None:
        if first is None and pictures.is_dir() and any(pictures.glob("*_synthesized_image.*")):
            first = time.perf_counter() - start
        time.sleep(0.02)
    seconds = time.perf_counter() - start
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed:\n{err[-3000:]}")
    return {"seconds": seconds, "first_picture_s": first, "stderr_tail": err.strip().splitlines()[-3:]}


def filled(cache: Path) -> bool:
    return any(cache.glob("graphs/*/entry.json"))


def accuracy(run_images: Path, upstream_images: Path) -> dict:
    from PIL import Image

    diffs = []
    for ref in sorted(upstream_images.glob("*_synthesized_image.npy")):
        got = np.asarray(Image.open(run_images / ref.name.replace(".npy", ".png")), dtype=np.int16)
        diffs.append(np.abs(got - np.load(ref).astype(np.int16)))
    values = sum(d.size for d in diffs)
    return {"images": len(diffs), "max_level_difference": int(max(d.max() for d in diffs)),
            "share_within_one_level": float(sum(int((d <= 1).sum()) for d in diffs) / values),
            "share_identical": float(sum(int((d == 0).sum()) for d in diffs) / values)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, nargs="+", default=[1, 3, 15], help="image counts (default 1 3 15)")
    ap.add_argument("--cold", type=int, nargs="*", default=[1],
                    help="counts also measured with an empty model cache (default 1; --cold alone: every count)")
    ap.add_argument("--samples", type=Path, default=SAMPLES, help="folder with test_label/ and test_inst/")
    ap.add_argument("--checkpoint", type=Path, help="latest_net_G.pth (default: seeded random label2city_1024p)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--work", type=Path, help="work folder (kept; default a temporary one, removed)")
    ap.add_argument("--upstream-loop", nargs=3, metavar=("DATAROOT", "CKPT", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.upstream_loop:
        upstream_loop(*map(Path, args.upstream_loop), save_arrays=True)
        return
    cold = set(args.n if args.cold == [] else args.cold)

    sys.path.insert(0, str(REPO / "src"))
    from pix2pixhd_deploy.model.network import LABEL2CITY_1024P, random_generator, save_checkpoint
    from pix2pixhd_deploy.provenance import machine

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-default-"))
    if not args.work:  # removed however the run ends (the caches in it hold gigabytes)
        atexit.register(shutil.rmtree, work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    ckpt = args.checkpoint or work / "latest_net_G.pth"
    if not ckpt.is_file():
        save_checkpoint(random_generator(LABEL2CITY_1024P, seed=0), ckpt)
    warm_cache = work / "cache-warm"
    python = sys.executable
    results = []
    for n in args.n:
        data = work / f"data{n}"
        for sub in ("test_label", "test_inst"):
            (data / sub).mkdir(parents=True, exist_ok=True)
            for p in sorted((args.samples / sub).glob("*.png"))[:n]:
                shutil.copy(p, data / sub / p.name)
        row = {"images": n}
        up = work / f"upstream{n}"
        shutil.rmtree(up, ignore_errors=True)
        row["upstream"] = timed([python, __file__, "--upstream-loop", str(data), str(ckpt), str(up)], up / "images")
        # a cold run first where asked (the first one fills the warm cache), then the warm one
        sides = ([("cold", warm_cache if not filled(warm_cache) else work / f"cache-cold{n}")] if n in cold else [])
        if not sides and not filled(warm_cache):  # filled outside the timing
            shutil.rmtree(work / "fill", ignore_errors=True)  # run refuses a folder of another graph's pictures
            subprocess.run([python, "-m", "pix2pixhd_deploy", "-q", "run", "--dataroot", str(data), "--checkpoint",
                            str(ckpt), "--output", str(work / "fill"), "--cache-dir", str(warm_cache)], check=True)
            os.sync()  # the new graph's 1.5 GB written out now, not while the timed run loads it (that cost 3 s once)
        for label, cache in sides + [("warm", warm_cache)]:
            if label == "cold" and cache != warm_cache:
                shutil.rmtree(cache, ignore_errors=True)
            out = work / f"run_{label}{n}"
            shutil.rmtree(out, ignore_errors=True)
            row[label] = timed([python, "-m", "pix2pixhd_deploy", "run", "--dataroot", str(data), "--checkpoint",
                                str(ckpt), "--output", str(out), "--cache-dir", str(cache)], out / "images")
            row[label]["speed_up"] = row["upstream"]["seconds"] / row[label]["seconds"]
            row[label]["accuracy"] = accuracy(out / "images", up / "images")
        results.append(row)
        row["load_average"] = os.getloadavg()
        print(json.dumps(row, indent=1), flush=True)

    print(f"\nmachine: {machine()}")
    print("\n| images | upstream loop s | run, warm cache s | speed-up | first picture s | run, cold cache s | "
          "values within one level of upstream | largest difference |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        cold_s = f"{r['cold']['seconds']:.1f} ({r['cold']['speed_up']:.2f}x)" if "cold" in r else "-"
        acc = r["warm"]["accuracy"]
        print(f"| {r['images']} | {r['upstream']['seconds']:.1f} | {r['warm']['seconds']:.1f} | "
              f"{r['warm']['speed_up']:.2f}x | {r['warm']['first_picture_s']:.1f} | {cold_s} | "
              f"{100 * acc['share_within_one_level']:.3f}% | {acc['max_level_difference']} |")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
