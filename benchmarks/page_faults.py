"""Memory first touched per image: minor page faults, system and user time of each image of a run of the default
CPU path (the CPU graph from the model cache, through ``Model.compute``: the stems, the runtime, the picture), from
``getrusage`` around each image in this process. On a virtual machine each fresh 4 KB page costs the host a fault
(about 6 us here), so the faults of every image after the first are memory given back and taken again.

Page faults are counts, not timings: they barely move with the machine's load, so a change can be judged on a busy
machine. The model is label2city_1024p with seeded random weights at ``--size`` (default 512x1024; the graph is
built into a private cache first, outside the figures).

    python benchmarks/page_faults.py --size 512,1024 --images 4
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="512,1024")
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--cache-dir", default=None, help="model cache (default: a private temporary one)")
    p.add_argument("--json", default=None)
    p.add_argument("--model", choices=("label2city_1024p", "small"), default="label2city_1024p",
                   help="small: a tiny generator, for a quick check of the script itself")
    args = p.parse_args(argv)
    h, w = (int(v) for v in args.size.split(","))

    import numpy as np

    import pix2pixhd_deploy as p2p
    from pix2pixhd_deploy.data.synthetic import make_scene
    from pix2pixhd_deploy.model.network import LABEL2CITY_1024P, GeneratorConfig, random_generator, save_checkpoint

    work = Path(tempfile.mkdtemp(prefix="faults-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)  # the checkpoint and the cache it builds
    config = LABEL2CITY_1024P if args.model == "label2city_1024p" else GeneratorConfig(
        input_nc=36, ngf=8, netG="local", n_downsample_global=2, n_blocks_global=1, n_local_enhancers=1,
        n_blocks_local=1)
    checkpoint = save_checkpoint(random_generator(config, seed=1), work / "ck" / "latest_net_G.pth")
    model = p2p.load(checkpoint, size=(h, w), cache_dir=args.cache_dir or work / "cache")
    scenes = [make_scene(h, w, seed=i) for i in range(args.images)]
    rows = []
    for i, (label, inst) in enumerate(scenes):
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        model.compute(label[None], inst[None].astype(np.int32))
        after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - start
        rows.append({"image": i + 1, "wall_s": wall, "minor_faults": after.ru_minflt - before.ru_minflt,
                     "sys_s": after.ru_stime - before.ru_stime, "user_s": after.ru_utime - before.ru_utime,
                     "peak_rss_mb": after.ru_maxrss / 1024})
    backend = model.describe()["engines"][0]["backend"]
    model.close()
    print(f"{args.model} at {w}x{h}, {backend}, load {os.getloadavg()[0]:.1f}")
    print("| image | wall s | minor page faults | system s | user s | peak RSS MB |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['image']} | {r['wall_s']:.2f} | {r['minor_faults']} | {r['sys_s']:.2f} | {r['user_s']:.2f} | "
              f"{r['peak_rss_mb']:.0f} |")
    later = [r["minor_faults"] for r in rows[1:]]
    if later:
        print(f"later images' faults: {max(later) / max(rows[0]['minor_faults'], 1):.1%} of the first's at most")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
