"""Load on ``pix2pixhd-deploy serve``: images/s and p50/p99 latency at concurrency 1, 4 and 8, with and without
dynamic batching, against ``run``'s images/s on the same maps on the same machine, interleaved.

For each model (a small generator at 64x128 and the label2city_1024p architecture at 512x1024, random weights of
the real layout; pictures are noise, speed is the point), this script:

1. writes N synthetic Cityscapes-like maps (synthetic.py) at the size (N = the requests per setting);
2. starts ``pix2pixhd-deploy serve --checkpoint CK --size H,W`` twice: with its defaults (batching:
   ``--max-batch 4``, ``--max-wait-ms 10``) and with ``--max-batch 1`` (none); the first start builds the CPU
   graph into the model cache, which ``run`` then uses too;
3. then, ``--repeats`` times, in turn:

   * ``pix2pixhd-deploy run --checkpoint CK --cityscapes SPLIT`` on the N maps (the default path, end to end:
     decode, compute, encode, write). Its steady rate is (N - 1) over the time from its first picture file to its
     last (the files' modification times), so its start-up (loading the graph, which the server pays once before
     it is ready) is left out; its whole-process images/s is kept beside it;
   * for each server and concurrency, N requests (label + instance, PNG back) from that many async httpx clients
     after one warm-up request: images/s = N / wall time, latency per request, and the engine's busy share (the
     compute seconds the answers report, ``X-Compute-Seconds`` over ``X-Batch-Size``, over the wall time).

The table gives the median of each figure over the repeats and the ratio of the medians (server / ``run``'s steady
rate). The clients run in this process on the same machine, so they take CPU from the server: the server's figures
are a floor.

    python benchmarks/serve_load.py --json serve_load.json
    python benchmarks/serve_load.py --models label2city_1024p --concurrency 8 --large-requests 32 --repeats 3
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
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
    from pix2pixhd_deploy.model.network import LABEL2CITY_1024P, GeneratorConfig, random_generator, save_checkpoint

    small = GeneratorConfig(input_nc=36, output_nc=3, ngf=8, netG="local", n_downsample_global=2,
                            n_blocks_global=1, n_local_enhancers=1, n_blocks_local=1)
    config = small if kind == "small" else LABEL2CITY_1024P
    return save_checkpoint(random_generator(config, seed=0), folder / kind / "latest_net_G.pth")


def run_rates(checkpoint: Path, split: Path, out: Path) -> dict:
    """``run`` on ``split``: its whole-process images/s and its steady rate (see the module docstring)."""
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    proc = subprocess.run(cli("run", "--checkpoint", checkpoint, "--cityscapes", split, "-o", out),
                          capture_output=True, text=True, env=env(), check=True)
    seconds = time.perf_counter() - start
    done = int(re.search(r"run: (\d+) pictures", proc.stdout).group(1))
    times = sorted(p.stat().st_mtime for p in (out / "images").glob("*_synthesized_image.*"))
    return {"images": done, "seconds": round(seconds, 2), "images_per_s": round(done / seconds, 3),
            "steady_images_per_s": round((len(times) - 1) / (times[-1] - times[0]), 3)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(checkpoint: Path, size, max_batch: int):
    import httpx

    port = free_port()
    proc = subprocess.Popen(cli("serve", "--checkpoint", checkpoint, "--size", f"{size[0]},{size[1]}", "--port",
                                port, "--max-batch", max_batch),
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

    latencies, batches, compute = [], [], []
    todo = iter(range(requests))

    async def client(http):
        for i in todo:
            files = bodies[i % len(bodies)]
            start = time.perf_counter()
            r = await http.post(f"{url}/v1/synthesize", files=files)
            r.raise_for_status()
            latencies.append(time.perf_counter() - start)
            batches.append(int(r.headers["X-Batch-Size"]))
            compute.append(float(r.headers["X-Compute-Seconds"]) / batches[-1])  # this picture's share

    async with httpx.AsyncClient(timeout=600) as http:
        await http.post(f"{url}/v1/synthesize", files=bodies[0])  # warm-up
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    lat = np.array(latencies)
    return {"concurrency": concurrency, "requests": requests, "images_per_s": round(requests / wall, 3),
            "p50_ms": round(float(np.percentile(lat, 50)) * 1000, 1),
            "p99_ms": round(float(np.percentile(lat, 99)) * 1000, 1), "mean_batch": round(float(np.mean(batches)), 2),
            "engine_busy": round(sum(compute) / wall, 3)}


def bench_model(kind: str, size, requests: int, concurrencies, repeats: int, root: Path) -> dict:
    from pix2pixhd_deploy.data.dataset import cityscapes_pairs
    from pix2pixhd_deploy.data.synthetic import write_cityscapes_split

    checkpoint = make_model(kind, root)
    split = root / f"{kind}_val"
    write_cityscapes_split(split, requests, height=size[0], width=size[1], city="bench")
    bodies = [{"label": p.label.read_bytes(), "instance": p.instance.read_bytes()} for p in cityscapes_pairs(split)]
    result = {"model": kind, "size": list(size), "maps": requests, "run": [], "serve": []}
    servers = {}
    try:
        for max_batch in (4, 1):  # the first start builds the graph into the cache
            servers[max_batch] = start_server(checkpoint, size, max_batch)
        for repeat in range(repeats):
            row = {"repeat": repeat, **run_rates(checkpoint, split, root / f"{kind}_run")}
            result["run"].append(row)
            print(json.dumps({"model": kind, "run": row}), flush=True)
            for max_batch, (_, url) in servers.items():
                for c in concurrencies:
                    row = {"repeat": repeat, "max_batch": max_batch, **asyncio.run(load(url, bodies, requests, c))}
                    result["serve"].append(row)
                    print(json.dumps({"model": kind, **row}), flush=True)
    finally:
        for proc, _ in servers.values():
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)
    return result


def _median(rows, key: str) -> float:
    return float(np.median([r[key] for r in rows]))


def table(results) -> str:
    lines = [("| model | size | batching | concurrency | images/s | p50 ms | p99 ms | mean batch | engine busy | "
              "vs run's steady rate |"), "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for res in results:
        steady = _median(res["run"], "steady_images_per_s")
        settings = dict.fromkeys((r["max_batch"], r["concurrency"]) for r in res["serve"])
        for max_batch, c in settings:
            rows = [r for r in res["serve"] if (r["max_batch"], r["concurrency"]) == (max_batch, c)]
            ips = _median(rows, "images_per_s")
            lines.append(f"| {res['model']} | {res['size'][1]}x{res['size'][0]} | "
                         f"{'max-batch 4' if max_batch > 1 else 'none'} | {c} | {ips:.3g} | "
                         f"{_median(rows, 'p50_ms'):.0f} | {_median(rows, 'p99_ms'):.0f} | "
                         f"{_median(rows, 'mean_batch'):.2f} | {_median(rows, 'engine_busy'):.0%} | "
                         f"{ips / steady:.2f} |")
    lines.append("")
    for res in results:
        lines.append(f"run, {res['model']} at {res['size'][1]}x{res['size'][0]}, {res['maps']} maps, median of "
                     f"{len(res['run'])}: {_median(res['run'], 'steady_images_per_s'):.3g} images/s steady, "
                     f"{_median(res['run'], 'images_per_s'):.3g} images/s for the whole process (start-up "
                     "included)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small-requests", type=int, default=64, help="requests per setting, small model (64)")
    parser.add_argument("--large-requests", type=int, default=16,
                        help="requests per setting, label2city_1024p at 512x1024 (16)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--repeats", type=int, default=2, help="rounds of run and every server setting (2)")
    parser.add_argument("--models", nargs="+", choices=("small", "label2city_1024p"),
                        default=["small", "label2city_1024p"])
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        root = Path(tmp)
        os.environ.setdefault("XDG_CACHE_HOME", str(root / "cache"))
        results = []
        if "small" in args.models:
            results.append(bench_model("small", (64, 128), args.small_requests, args.concurrency, args.repeats,
                                       root))
        if "label2city_1024p" in args.models:
            results.append(bench_model("label2city_1024p", (512, 1024), args.large_requests, args.concurrency,
                                       args.repeats, root))
    from pix2pixhd_deploy.provenance import machine

    report = {"machine": machine(), "results": results}
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
