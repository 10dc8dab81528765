"""End to end, PNG pairs in -> pictures out, whole process: ``pix2pixhd-deploy run`` against an upstream-equivalent
loop (NVIDIA's code from PyPI ``pix2pixhd``: eager fp32 torch, PIL, one image at a time, JPEG out, as test.py does).

Each side runs as its own process on the same N real samples at 2048x1024 with the same checkpoint (a seeded
random label2city_1024p unless --checkpoint is given), one after the other, in this one run; the figures are
wall-clock seconds of the whole process (start-up, model load, every image), its peak resident memory, and the bytes
it writes per image besides the synthesized picture. Prints a table and the ratios; ``--json`` saves them.

    .venv/bin/python benchmarks/run_vs_upstream.py -n 3
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

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "data" / "cityscapes_samples"


# ------------------------------------------------------------------------------ the upstream-equivalent loop

def upstream_loop(dataroot: Path, checkpoint: Path, out: Path, save_arrays: bool = False) -> None:
    """What ``test.py --name label2city_1024p --netG local --ngf 32 --resize_or_crop none`` does per image, on CPU.
    ``save_arrays``: also save each picture as a raw uint8 ``.npy`` (exact, for accuracy; about 10 ms an image)."""
    import types

    import torch
    from PIL import Image

    sys.path.insert(0, str(REPO / "src"))
    from pix2pixhd_deploy.model.upstream import import_upstream, to_tensor

    base_dataset = import_upstream("pix2pixhd.data.base_dataset")
    make_dataset = import_upstream("pix2pixhd.data.image_folder").make_dataset
    networks = import_upstream("pix2pixhd.models.networks")
    Pix2PixHDModel = import_upstream("pix2pixhd.models.pix2pixHD_model").Pix2PixHDModel
    util = import_upstream("pix2pixhd.util.util")

    make_power_2 = getattr(base_dataset, "__make_power_2")
    netG = networks.define_G(36, 3, 32, "local", 4, 9, 1, 3, "instance", gpu_ids=[])
    netG.load_state_dict(torch.load(checkpoint, weights_only=True))  # base_model.load_network, strict path
    model = Pix2PixHDModel.__new__(Pix2PixHDModel)
    torch.nn.Module.__init__(model)
    model.opt = types.SimpleNamespace(label_nc=35, data_type=32, no_instance=False)
    model.gpu_ids, model.Tensor, model.use_features, model.netG = [], torch.FloatTensor, False, netG
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    labels = sorted(make_dataset(str(dataroot / "test_label")))
    insts = sorted(make_dataset(str(dataroot / "test_inst")))
    for label_path, inst_path in zip(labels, insts):  # paired by sorted position, as upstream
        label = to_tensor(make_power_2(Image.open(label_path), 32, Image.NEAREST)) * 255.0
        inst = to_tensor(make_power_2(Image.open(inst_path), 32, Image.NEAREST))
        generated = model.inference(label[None], inst[None], None)
        name = Path(label_path).stem
        print(f"process image... ['{label_path}']", flush=True)
        util.save_image(util.tensor2label(label, 35), str(images / f"{name}_input_label.jpg"))
        picture = util.tensor2im(generated.data[0])
        util.save_image(picture, str(images / f"{name}_synthesized_image.jpg"))
        if save_arrays:
            import numpy as np

            np.save(images / f"{name}_synthesized_image.npy", picture)


# ------------------------------------------------------------------------------------------- measuring

def measured_child(cmd, env=None):
    helper = [sys.executable, __file__, "--measure-one", json.dumps(cmd)]
    proc = subprocess.run(helper, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_one(cmd) -> None:
    import resource

    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(proc.returncode)
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mib": rss}))


def side_bytes(out: Path) -> int:
    """Bytes written besides the synthesized pictures."""
    return sum(p.stat().st_size for p in out.rglob("*") if p.is_file() and "_synthesized_image" not in p.name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=3, help="real samples to process (default 3)")
    ap.add_argument("--samples", type=Path, default=SAMPLES, help="folder with test_label/ and test_inst/")
    ap.add_argument("--checkpoint", type=Path, help="latest_net_G.pth (default: seeded random label2city_1024p)")
    ap.add_argument("--backends", nargs="+", default=["openvino-stems-fast"],
                    help="our backends to measure: torch, onnxruntime or openvino (maps-input graph), "
                         "onnxruntime-stems or openvino-stems (stems graph); a -fast suffix adds --fast-convs "
                         "(run's for torch; export's, with --exact-norm, for a graph); default openvino-stems-fast, "
                         "the fastest")
    ap.add_argument("--streams", type=int, nargs="+", default=[1],
                    help="run's --streams values to measure for each backend (default 1)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--keep", type=Path, help="keep the work folder here")
    ap.add_argument("--upstream-loop", nargs=3, metavar=("DATAROOT", "CKPT", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--measure-one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.upstream_loop:
        upstream_loop(*map(Path, args.upstream_loop))
        return
    if args.measure_one:
        measure_one(json.loads(args.measure_one))
        return

    sys.path.insert(0, str(REPO / "src"))
    from pix2pixhd_deploy.model.network import LABEL2CITY_1024P, random_generator, save_checkpoint
    from pix2pixhd_deploy.provenance import machine

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-run-"))
    if not args.keep:  # removed however the run ends
        atexit.register(shutil.rmtree, work, ignore_errors=True)
    data = work / "data"
    for sub in ("test_label", "test_inst"):
        (data / sub).mkdir(parents=True, exist_ok=True)
        for p in sorted((args.samples / sub).glob("*.png"))[: args.n]:
            shutil.copy(p, data / sub / p.name)
    n = len(list((data / "test_label").iterdir()))
    ckpt = args.checkpoint
    if ckpt is None:
        ckpt = work / "latest_net_G.pth"
        if not ckpt.is_file():
            save_checkpoint(random_generator(LABEL2CITY_1024P, seed=0), ckpt)
    python = sys.executable
    results = {}

    print(f"{n} images of 2048x1024 from {args.samples}; checkpoint {ckpt}", flush=True)
    res = measured_child([python, __file__, "--upstream-loop", str(data), str(ckpt), str(work / "upstream")])
    results["upstream"] = {**res, "bytes_per_image": side_bytes(work / "upstream") / n}
    print(f"upstream-equivalent loop: {res['seconds'] / n:.2f} s/image", flush=True)

    for backend in args.backends:
        fast = ["--fast-convs"] if backend.endswith("-fast") else []
        model_args = ["--checkpoint", str(ckpt), *fast]
        graph_flags = fast + (["--exact-norm"] if fast else [])  # the README's CPU graph
        if backend.startswith(("onnxruntime", "openvino")):
            # RUNTIME: the maps-input graph; RUNTIME-stems: the stems graph (stems computed from the maps)
            fmt = "stems" if "-stems" in backend else "maps"
            graph = work / f"label2city_{fmt}_uint8{'_fastconvs_exactnorm' if fast else ''}.onnx"
            if not graph.is_file():
                subprocess.run([python, "-m", "pix2pixhd_deploy", "-q", "export", "--checkpoint", str(ckpt),
                                "--output", str(graph), "--input-format", fmt, "--output-format", "uint8",
                                "--static-batch", "1", *graph_flags], check=True)
            model_args = ["--model", str(graph), "--backend", backend.split("-")[0]]
        for streams in args.streams:
            key = f"{backend} --streams {streams}"
            out = work / f"run_{backend}_{streams}"
            shutil.rmtree(out, ignore_errors=True)
            res = measured_child([python, "-m", "pix2pixhd_deploy", "-q", "run", "--dataroot", str(data),
                                  *model_args, "--output", str(out), "--device", "cpu", "--streams", str(streams)])
            results[key] = {**res, "bytes_per_image": side_bytes(out) / n}
            print(f"run ({key}): {res['seconds'] / n:.2f} s/image", flush=True)

    seed_bytes = (36 + 3) * 1024 * 2048 * 4
    up = results["upstream"]["seconds"]
    print("\n| process | s/image | speed-up vs upstream | peak RSS MiB | bytes/image besides the picture |")
    print("|---|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name if name == 'upstream' else 'run ' + name} | {r['seconds'] / n:.2f} | "
              f"{up / r['seconds']:.2f}x | {r['peak_rss_mib']:.0f} | {r['bytes_per_image'] / 1024:.0f} KiB |")
    print(f"\nseed's file path writes {seed_bytes / 2**20:.0f} MiB per image besides the picture "
          f"(36x1024x2048 float32 in + 3x1024x2048 float32 out)")
    for name, r in results.items():
        if name != "upstream":
            print(f"run {name}: bytes besides the picture = 1/{seed_bytes / max(r['bytes_per_image'], 1):.0f} "
                  f"of the seed path")
    summary = {"images": n, "machine": machine(), "results": results, "seed_bytes_per_image": seed_bytes}
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
