"""Load on ``pix2pixhd-deploy serve``: images/s and p50/p99 latency at concurrency 1, 4 and 8, with and without
dynamic batching, against ``run``'s images/s on the same maps in the same session.

For each model (a small generator at 64x128 and the label2city_1024p architecture at 512x1024, random weights of
the real layout unless --checkpoint is given; pictures are noise, speed is the point), this script:

1. writes N synthetic Cityscapes-like maps (synthetic.py) at the size;
2. runs ``pix2pixhd-deploy run --checkpoint CK --cityscapes SPLIT`` on them (the default path: the CPU graph from
   the model cache) and reads its images/s (end to end: decode, compute, encode, write);
3. starts ``pix2pixhd-deploy serve --checkpoint CK --size H,W`` with ``--max-batch 4`` (batching) and
   ``--max-batch 1`` (none), and for each concurrency posts the maps from that many async httpx clients, each
   request label + instance, PNG back; images/s = requests / wall time, latency per request.

The clients run in this process on the same machine, so they take CPU from the server: the figures are a floor.

    python benchmarks/serve_load.py --json serve_load.json
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def cli(*args) -> list:
    return [sys.executable, "-m", "pix2pixhd_deploy", "--quiet", *map(str, args)]


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO / "src")}


def make_model(kind: str, folder: Path) -> Path:
    from pix2pixhd_deploy.network import LABEL2CITY_1024P, GeneratorConfig, random_generator, save_checkpoint

    small = GeneratorConfig(input_nc=36, output_nc=3, ngf=8, netG="local", n_downsample_global=2,
                            n_blocks_global=1, n_local_enhancers=1, n_blocks_local=1)
    config = small if kind == "small" else LABEL2CITY_1024P
    return save_checkpoint(random_generator(config, seed=0), folder / kind / "latest_net_G.pth")


def run_images_per_second(checkpoint: Path, split: Path, out: Path) -> float:
    proc = subprocess.run(cli("run", "--checkpoint", checkpoint, "--cityscapes", split, "-o", out),
                          capture_output=True, text=True, env=env(), check=True)
    return float(re.search(r"\(([\d.]+) images/s", proc.stdout).group(1))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(checkpoint: Path, size, max_batch: int):
    import httpx

    port = free_port()
    proc = subprocess.Popen(cli("serve", "--checkpoint", checkpoint, "--size", f"{size[0]},{size[1]}", "--port",
                                port, "--max-batch", max_batch, "--max-wait-ms", 20),
                            env=env(), stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(1200):
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("the server did not become ready")


async def load(url: str, bodies, requests: int, concurrency: int) -> dict:
    import httpx

    latencies, batches = [], []
    todo = iter(range(requests))

    async def client(http):
        for i in todo:
            files = bodies[i % len(bodies)]
            start = time.perf_counter()
            r = await http.post(f"{url}/v1/synthesize", files=files)
            r.raise_for_status()
            latencies.append(time.perf_counter() - start)
            batches.append(int(r.headers["X-Batch-Size"]))

    async with httpx.AsyncClient(timeout=600) as http:
        await http.post(f"{url}/v1/synthesize", files=bodies[0])  # warm-up
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    lat = np.array(latencies)
    return {"concurrency": concurrency, "requests": requests, "images_per_s": round(requests / wall, 3),
            "p50_ms": round(float(np.percentile(lat, 50)) * 1000, 1),
            "p99_ms": round(float(np.percentile(lat, 99)) * 1000, 1), "mean_batch": round(float(np.mean(batches)), 2)}


def bench_model(kind: str, size, requests: int, concurrencies, root: Path) -> dict:
    from pix2pixhd_deploy.dataset import cityscapes_pairs
    from pix2pixhd_deploy.synthetic import write_cityscapes_split

    checkpoint = make_model(kind, root)
    split = root / f"{kind}_val"
    write_cityscapes_split(split, max(8, min(requests, 16)), height=size[0], width=size[1], city="bench")
    pairs = cityscapes_pairs(split)
    bodies = [{"label": p.label.read_bytes(), "instance": p.instance.read_bytes()} for p in pairs]
    result = {"model": kind, "size": list(size), "run_images_per_s": None, "serve": []}
    for max_batch in (4, 1):
        proc, url = start_server(checkpoint, size, max_batch)  # the first start builds the graph into the cache
        try:
            for c in concurrencies:
                row = asyncio.run(load(url, bodies, requests, c))
                row["max_batch"] = max_batch
                result["serve"].append(row)
                print(json.dumps({"model": kind, **row}), flush=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)
    result["run_images_per_s"] = run_images_per_second(checkpoint, split, root / f"{kind}_run")
    print(json.dumps({"model": kind, "run_images_per_s": result["run_images_per_s"]}), flush=True)
    return result


def table(results) -> str:
    lines = ["| model | size | batching | concurrency | images/s | p50 ms | p99 ms | mean batch | run images/s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for res in results:
        for row in res["serve"]:
            lines.append(f"| {res['model']} | {res['size'][1]}x{res['size'][0]} | "
                         f"{'max-batch 4' if row['max_batch'] > 1 else 'none'} | {row['concurrency']} | "
                         f"{row['images_per_s']} | {row['p50_ms']} | {row['p99_ms']} | {row['mean_batch']} | "
                         f"{res['run_images_per_s']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small-requests", type=int, default=64, help="requests per setting, small model (64)")
    parser.add_argument("--large-requests", type=int, default=8,
                        help="requests per setting, label2city_1024p at 512x1024 (8)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--skip-large", action="store_true", help="only the small model")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        root = Path(tmp)
        os.environ.setdefault("XDG_CACHE_HOME", str(root / "cache"))
        results = [bench_model("small", (64, 128), args.small_requests, args.concurrency, root)]
        if not args.skip_large:
            results.append(bench_model("label2city_1024p", (512, 1024), args.large_requests, args.concurrency,
                                       root))
    from pix2pixhd_deploy.provenance import machine

    report = {"machine": machine(), "results": results}
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
