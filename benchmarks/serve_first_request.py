"""``serve``'s first request against its tenth: the latency of ten requests, one after another, right after
``/readyz`` says ready, with the warm-up the server does before it is ready, and without it (the same server with
``Model.warm_up`` made a no-op, as before the warm-up existed), interleaved over ``--repeats`` rounds.

The model is the label2city_1024p architecture with seeded random weights (pictures are noise; speed is the point)
at ``--size`` (default 512x1024), served in this process by uvicorn; the client is httpx in this process too. The
CPU graph is built into a private model cache once, before the first round. Prints one table and writes one JSON.

    python benchmarks/serve_first_request.py --size 512,1024 --repeats 2 --json serve_first_request.json
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_round(checkpoint: Path, size, files, warm: bool, requests: int):
    import httpx
    import uvicorn

    from pix2pixhd_deploy.runners.open import Model, ModelOptions
    from pix2pixhd_deploy.serve.app import create_app
    from pix2pixhd_deploy.serve.options import ServeLimits
    from pix2pixhd_deploy.serve.state import ServeState

    real = Model.warm_up
    if not warm:
        Model.warm_up = lambda self: {}
    try:
        state = ServeState(ModelOptions(model=str(checkpoint), sizes=(size,)), ServeLimits(max_batch=1))
        start = time.perf_counter()
        state.load()
        ready_s = time.perf_counter() - start
    finally:
        Model.warm_up = real
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(state), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    latencies = []
    try:
        with httpx.Client(timeout=600) as client:
            for _ in range(requests):
                t = time.perf_counter()
                r = client.post(f"http://127.0.0.1:{port}/v1/synthesize", files=files)
                r.raise_for_status()
                latencies.append(time.perf_counter() - t)
    finally:
        server.should_exit = True
        thread.join(60)
        state.close()
    return {"warm_up": warm, "ready_s": ready_s, "latencies_s": latencies,
            "first_over_tenth": latencies[0] / latencies[-1]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="512,1024", help="H,W of the maps (default 512,1024)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--requests", type=int, default=10)
    p.add_argument("--model", choices=("label2city_1024p", "small"), default="label2city_1024p")
    p.add_argument("--json", default="serve_first_request.json")
    args = p.parse_args(argv)
    h, w = (int(v) for v in args.size.split(","))

    import io

    from PIL import Image

    from pix2pixhd_deploy.data.synthetic import make_scene
    from pix2pixhd_deploy.model.network import LABEL2CITY_1024P, GeneratorConfig, random_generator, save_checkpoint
    from pix2pixhd_deploy.provenance import machine, versions

    work = Path(tempfile.mkdtemp(prefix="serve-first-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)  # the checkpoint and the cache it builds
    os.environ["XDG_CACHE_HOME"] = str(work / "cache")
    config = LABEL2CITY_1024P if args.model == "label2city_1024p" else GeneratorConfig(
        input_nc=36, ngf=8, netG="local", n_downsample_global=2, n_blocks_global=1, n_local_enhancers=1,
        n_blocks_local=1)
    checkpoint = save_checkpoint(random_generator(config, seed=1), work / "ck" / "latest_net_G.pth")
    label, inst = make_scene(h, w, seed=3)
    files = {}
    for name, array in (("label", label), ("instance", inst)):
        buf = io.BytesIO()
        Image.fromarray(array).save(buf, format="PNG")
        files[name] = (f"{name}.png", buf.getvalue())
    one_round(checkpoint, (h, w), files, True, 1)  # builds the CPU graph into the cache, outside the figures
    rounds = []
    for _ in range(args.repeats):
        for warm in (False, True):
            rounds.append(one_round(checkpoint, (h, w), files, warm, args.requests))
    print(f"serve, {args.model} at {w}x{h}, {args.requests} requests one after another after /readyz, "
          f"{machine().get('cpu')}:")
    print("| warm-up | ready after (s) | first request (s) | tenth (s) | first / tenth |")
    print("| --- | --- | --- | --- | --- |")
    for r in rounds:
        print(f"| {'yes' if r['warm_up'] else 'no'} | {r['ready_s']:.1f} | {r['latencies_s'][0]:.2f} | "
              f"{r['latencies_s'][-1]:.2f} | {r['first_over_tenth']:.2f} |")
    Path(args.json).write_text(json.dumps({"rounds": rounds, "machine": machine(), "versions": versions(),
                                           "size": [h, w], "model": args.model}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
