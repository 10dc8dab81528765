"""One GPU check: label2city_1024p on one NVIDIA GPU in a few minutes, with nothing from the network.

What it measures (seeded random weights of the real layout: pictures are noise, speed and agreement are the point;
street scenes generated here, so nothing from ``../shared`` is needed):

1. device-only images/s for ``fp32`` (exact: TF32 off), ``fp16`` and ``bf16`` (norms and the last layer in fp32) at
   batch 1, 2, 4 and 8: the maps form (uint8 maps in, the encoding and ``tensor2im`` on the GPU, uint8 pictures out),
   inputs already on the device, CUDA synchronised around each forward; peak GPU memory of each precision; then
   the GPU tunings (channels-last, cudnn.benchmark) at the two largest batches, each a row of its own, so that a
   tuning becomes a default only where this table shows it faster;
2. the accuracy of each precision against the CPU's fp32 pictures of the same maps (max abs, the share of values
   within one level, PSNR), computed by the same runner on the CPU;
3. ``pix2pixhd-deploy run`` end to end on ``--maps`` maps (PNG and ``--format jpg``), images/s from its summary;
4. ``pix2pixhd-deploy serve`` at concurrency 8: images/s over ``--requests`` requests.

It prints one table and writes ``OUT/gpu_check.json`` with the card, the versions and every figure.
``--dry-run`` runs the same steps on the CPU with a small generator at 64x128 (CI runs it, so the script cannot rot
between uses of a GPU). Run it from the checkout's root: ``bash benchmarks/gpu_check.sh --out DIR``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

PRECISIONS = ("fp32", "fp16", "bf16")


def log(message: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {message}", flush=True)


def cli(*args) -> list:
    return [sys.executable, "-m", "pix2pixhd_deploy", *map(str, args)]


def env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}


# ------------------------------------------------------------------------------------------------ setup

def make_inputs(out: Path, dry: bool, maps: int, size):
    from pix2pixhd_deploy.data.synthetic import write_cityscapes_split
    from pix2pixhd_deploy.model.network import LABEL2CITY_1024P, GeneratorConfig, random_generator, save_checkpoint

    config = (GeneratorConfig(input_nc=36, ngf=8, netG="local", n_downsample_global=2, n_blocks_global=1,
                              n_local_enhancers=1, n_blocks_local=1) if dry else LABEL2CITY_1024P)
    checkpoint = save_checkpoint(random_generator(config, seed=1), out / "checkpoint" / "latest_net_G.pth")
    split = out / "data" / "val"
    write_cityscapes_split(split, maps, height=size[0], width=size[1], city="gpucheck")
    return checkpoint, split


def batch_of(split: Path, n: int):
    import numpy as np

    from pix2pixhd_deploy.data.dataset import cityscapes_pairs
    from pix2pixhd_deploy.data.labelmaps import MapOptions, load_maps

    pairs = cityscapes_pairs(split)
    maps = [load_maps(pairs[i % len(pairs)], MapOptions()) for i in range(n)]
    return np.stack([m.label for m in maps]), np.stack([m.inst for m in maps])


# ------------------------------------------------------------------------------------------------ device

#: (name, precision, tunings): the three precisions as run uses them, then the GPU tunings each kept only where
#: this check shows them faster (cudnn.benchmark is process-wide, so its rows come last)
VARIANTS = (
    ("fp32", "fp32", {}), ("fp16", "fp16", {}), ("bf16", "bf16", {}),
    ("fp32 channels-last", "fp32", {"channels_last": True}),
    ("fp16 channels-last", "fp16", {"channels_last": True}),
    ("fp16 cudnn.benchmark", "fp16", {"cudnn_benchmark": True}),
    ("fp16 channels-last cudnn.benchmark", "fp16", {"channels_last": True, "cudnn_benchmark": True}),
    ("fp32 cudnn.benchmark", "fp32", {"cudnn_benchmark": True}),
)


def device_only(checkpoint, split, device, batches, iters, size):
    import torch

    from pix2pixhd_deploy.runners import make_runner

    rows, pictures = [], {}
    for name, precision, tunings in VARIANTS:
        runner = make_runner(checkpoint, backend="torch", device=device, precision=precision, input_format="maps",
                             output_format="uint8", **tunings)
        try:
            runner.activate()
        except Exception as exc:  # noqa: BLE001 - a precision this card or build lacks is a row, not the end
            rows.append({"precision": name, "error": f"{type(exc).__name__}: {exc}"})
            continue
        try:
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            labels, insts = batch_of(split, 2)
            pictures[name] = runner.infer({"label": labels, "inst": insts})
            for batch in (batches if not tunings else batches[-2:]):  # a tuning: the batches that matter
                labels, insts = batch_of(split, batch)
                feeds = {"label": labels, "inst": insts}
                row = {"precision": name, "batch": batch, "describe": runner.describe()}
                try:
                    runner.infer(feeds)  # warm-up: cuDNN's choice, the allocator's pool
                    times = []
                    for _ in range(iters):
                        runner.infer(feeds)
                        times.append(runner.inference_time)
                    mean = sum(times) / len(times)
                    row.update(images_per_s=batch / mean, mean_ms=1000 * mean, runs=len(times))
                except torch.cuda.OutOfMemoryError as exc:  # the batch that fits is the figure
                    row["error"] = f"out of GPU memory ({str(exc).splitlines()[0][:120]})"
                    torch.cuda.empty_cache()
                rows.append(row)
                log(f"device-only {name} batch {batch}: {row.get('images_per_s', 0):.2f} images/s "
                    f"{row.get('error', '')}")
            if device.startswith("cuda"):
                peak = torch.cuda.max_memory_allocated() / 2 ** 30
                for row in rows:
                    if row.get("precision") == name:
                        row["peak_gib"] = peak
        finally:
            runner.deactivate()
    return rows, pictures


def accuracy(checkpoint, split, pictures):
    import numpy as np

    from pix2pixhd_deploy.runners import make_runner

    labels, insts = batch_of(split, 2)
    with make_runner(checkpoint, backend="torch", device="cpu", input_format="maps", output_format="uint8") as cpu:
        want = cpu.infer({"label": labels, "inst": insts}).astype(np.int64)
    rows = []
    for precision, got in pictures.items():
        diff = np.abs(got.astype(np.int64) - want)
        mse = float(np.mean(diff.astype(np.float64) ** 2))
        rows.append({"precision": precision, "max_abs_levels": int(diff.max()),
                     "within_one_level": float(np.mean(diff <= 1)), "identical": float(np.mean(diff == 0)),
                     "psnr_db": float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))})
    return rows


# ------------------------------------------------------------------------------------------------ end to end

def run_end_to_end(checkpoint, split, out: Path, device, fmt, dry):
    cmd = cli("run", "--checkpoint", checkpoint.parent, "--cityscapes", split, "--output", out / f"run_{fmt}",
              "--format", fmt, "--cache-dir", out / "cache", "--profile")
    if not dry:
        cmd += ["--device", device]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=600)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return {"format": fmt, "error": proc.stderr.strip().splitlines()[-1][:300] if proc.stderr.strip() else "?"}
    found = re.search(r"run: (\d+) pictures in ([\d.]+) s \(([\d.]+) images/s, compute ([\d.]+) s\)", proc.stdout)
    choice = next((line.split(": ", 1)[-1] for line in proc.stderr.splitlines() if "runs" in line), "")
    row = {"format": fmt, "process_s": wall, "choice": choice[:200]}
    if found:
        row.update(pictures=int(found.group(1)), seconds=float(found.group(2)),
                   images_per_s=float(found.group(3)), compute_s=float(found.group(4)))
    row.update(limiting_stage(out / f"run_{fmt}" / "profile.json", "cpu" if dry else "cuda"))
    log(f"run --format {fmt}: {row.get('images_per_s', 0):.2f} images/s, limited by {row.get('limit', '?')} "
        f"({choice[:80]})")
    return row


def limiting_stage(profile_json: Path, device_kind: str) -> dict:
    """Which stage of ``run`` bounds its rate, from ``run --profile``'s steady medians: each stage's seconds a
    picture divided by the threads that share it (decoders, the compute thread, the encoder pool)."""
    from pix2pixhd_deploy.run.stream import default_encoders

    if not profile_json.is_file():
        return {}
    profile = json.loads(profile_json.read_text())
    steady = profile.get("steady") or profile.get("first") or {}
    threads = {"decode": 2, "compute": 1, "encode and write": default_encoders(device_kind)}
    per_picture = {"decode": steady.get("decode_s", 0.0),
                   "compute": steady.get("compute_s", 0.0),
                   "encode and write": steady.get("encode_s", 0.0) + steady.get("write_s", 0.0)}
    bound = {stage: seconds / threads[stage] for stage, seconds in per_picture.items()}
    return {"stage_s": per_picture, "stage_bound_s": bound, "limit": max(bound, key=bound.get),
            "steady_s_per_picture": profile.get("steady_wall_s_per_image")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_load(checkpoint, split, out: Path, device, size, requests, dry):
    try:
        import httpx
    except ImportError as exc:
        return {"error": f"httpx is missing ({exc})"}
    port = free_port()
    cmd = cli("serve", "--checkpoint", checkpoint.parent, "--size", f"{size[0]},{size[1]}", "--port", port,
              "--cache-dir", out / "cache")
    if not dry:
        cmd += ["--device", device]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env())
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 300
        while time.monotonic() < end and proc.poll() is None:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            return {"error": f"the server did not become ready ({proc.poll()})"}
        label = sorted(split.rglob("*_labelIds.png"))[0]
        files = {"label": (label.name, label.read_bytes()),
                 "instance": (label.name, label.with_name(label.name.replace("labelIds", "instanceIds")).read_bytes())}

        async def burst():
            limits = asyncio.Semaphore(8)
            async with httpx.AsyncClient(timeout=600) as client:
                async def one():
                    async with limits:
                        r = await client.post(f"{url}/v1/synthesize", files=files)
                        r.raise_for_status()
                        return int(r.headers.get("X-Batch-Size", 1))
                await one()  # the first request, outside the figure
                start = time.perf_counter()
                batches = await asyncio.gather(*(one() for _ in range(requests)))
                return time.perf_counter() - start, batches

        seconds, batches = asyncio.run(burst())
        row = {"concurrency": 8, "requests": requests, "images_per_s": requests / seconds,
               "mean_batch": sum(batches) / len(batches)}
        log(f"serve at concurrency 8: {row['images_per_s']:.2f} images/s, mean batch {row['mean_batch']:.1f}")
        return row
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


# ------------------------------------------------------------------------------------------------ report

def table(report) -> str:
    lines = [f"GPU check on {report['device_name']} ({report['size'][1]}x{report['size'][0]}, "
             f"{'dry run' if report['dry_run'] else 'label2city_1024p'}), torch {report['versions'].get('torch')}",
             "", "| precision | batch | device-only images/s | mean ms | peak GiB |", "| --- | --- | --- | --- | --- |"]
    for r in report["device_only"]:
        if "batch" in r:
            figure = f"{r['images_per_s']:.2f}" if "images_per_s" in r else r.get("error", "")
            lines.append(f"| {r['precision']} | {r['batch']} | {figure} | {r.get('mean_ms', 0):.1f} | "
                         f"{r.get('peak_gib', 0):.2f} |")
        else:
            lines.append(f"| {r['precision']} | - | {r.get('error')} | | |")
    lines += ["", "| precision | max abs (levels) | within one level | identical | PSNR dB |",
              "| --- | --- | --- | --- | --- |"]
    for r in report["accuracy"]:
        lines.append(f"| {r['precision']} | {r['max_abs_levels']} | {100 * r['within_one_level']:.3f}% | "
                     f"{100 * r['identical']:.3f}% | {r['psnr_db']:.2f} |")
    lines += ["", "| end to end | images/s | pictures | note |", "| --- | --- | --- | --- |"]
    for r in report["run"]:
        note = r.get("error") or f"limited by {r.get('limit', '?')}; {r.get('choice', '')}"
        lines.append(f"| run --format {r['format']} | {r.get('images_per_s', 0):.2f} | {r.get('pictures', '')} | "
                     f"{note[:110]} |")
    s = report["serve"]
    lines.append(f"| serve, concurrency 8 | {s.get('images_per_s', 0):.2f} | {s.get('requests', '')} | "
                 f"{s.get('error', 'mean batch %.1f' % s.get('mean_batch', 0))} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="gpu_check_out", help="folder for the table, the JSON and the work files")
    p.add_argument("--dry-run", action="store_true", help="the same steps on the CPU, small and fast (CI)")
    p.add_argument("--maps", type=int, default=None, help="maps for run (default 32; dry run 4)")
    p.add_argument("--requests", type=int, default=None, help="serve's requests (default 32; dry run 8)")
    p.add_argument("--iters", type=int, default=None, help="timed forwards per batch (default 10; dry run 2)")
    p.add_argument("--skip", default="", help="comma-separated steps to leave out: device, run, serve")
    args = p.parse_args(argv)
    dry = args.dry_run
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("XDG_CACHE_HOME", str(out / "xdg-cache"))

    import torch

    from pix2pixhd_deploy.provenance import machine, versions

    if not dry and not torch.cuda.is_available():
        print("error: torch sees no CUDA device here. fix: run on a machine with an NVIDIA GPU, or pass --dry-run",
              file=sys.stderr)
        return 2
    device = "cpu" if dry else "cuda:0"
    size = (64, 128) if dry else (1024, 2048)
    maps = args.maps or (4 if dry else 32)
    skip = set(filter(None, args.skip.split(",")))
    started = time.perf_counter()
    log(f"{'dry run on the CPU' if dry else torch.cuda.get_device_name(0)}: {maps} maps at {size[1]}x{size[0]}")
    checkpoint, split = make_inputs(out, dry, maps, size)
    batches = (1, 2) if dry else (1, 2, 4, 8)
    device_rows, pictures = ([], {}) if "device" in skip else device_only(
        checkpoint, split, device, batches, args.iters or (2 if dry else 10), size)
    report = {
        "dry_run": dry, "size": list(size), "device": device,
        "device_name": "CPU (dry run)" if dry else torch.cuda.get_device_name(0),
        "machine": machine(), "versions": versions(), "maps": maps,
        "device_only": device_rows,
        "accuracy": accuracy(checkpoint, split, pictures) if pictures else [],
        "run": [] if "run" in skip else [run_end_to_end(checkpoint, split, out, device, fmt, dry)
                                           for fmt in ("jpg", "png")],
        "serve": {} if "serve" in skip else serve_load(checkpoint, split, out, device, size,
                                                       args.requests or (8 if dry else 32), dry),
    }
    report["seconds"] = time.perf_counter() - started
    text = table(report)
    print(text)
    (out / "gpu_check.md").write_text(text + "\n")
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    log(f"done in {report['seconds']:.0f} s: {out / 'gpu_check.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
