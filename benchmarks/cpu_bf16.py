"""Is bf16 worth offering on the CPU? OpenVINO's default CPU graph in fp32 against two bf16 forms, on real maps:
speed (alternating, in one process) and accuracy against NVIDIA's own code (PSNR, share of pixels more than one
level apart, largest difference).

    python benchmarks/cpu_bf16.py --checkpoint CK/latest_net_G.pth --dataroot ../shared/data/cityscapes_samples -n 3

The graph is the one ``run --checkpoint`` builds and caches for 2048x1024 (built here if it is not cached). Forms:

* ``fp32``: ``INFERENCE_PRECISION_HINT f32``, what ``run`` uses;
* ``bf16``: ``INFERENCE_PRECISION_HINT bf16``, OpenVINO's own choice of what runs in bf16;
* ``bf16-convs``: bf16 only for the convolutions of the body; every other node (the instance norms' statistics,
  ReLU, the additions) and the whole tail (``/generator/back/``, the full-resolution convolutions and tanh) kept in
  fp32 with the ``disable_fp16_compression`` mark, which OpenVINO's CPU plugin also honours for bf16.

The issue's rule: offer it only if it is at least 1.3x faster at 45 dB or better against NVIDIA's pictures.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from pix2pixhd_deploy.compare.metrics import compare_arrays  # noqa: E402
from pix2pixhd_deploy.data.dataset import find_pairs  # noqa: E402
from pix2pixhd_deploy.data.labelmaps import MapOptions, load_maps  # noqa: E402
from pix2pixhd_deploy.model.stems import StemComputer, StemWeights, sidecar_path  # noqa: E402
from pix2pixhd_deploy.provenance import machine, versions  # noqa: E402
from pix2pixhd_deploy.runners.choose import choose  # noqa: E402

CONVS = {"Convolution", "GroupConvolution", "ConvolutionBackpropData"}
KEEP_FP32 = "disable_fp16_compression_0"


def compile_form(core, onnx: Path, form: str):
    model = core.read_model(str(onnx))
    if form == "bf16-convs":
        for node in model.get_ordered_ops():
            name = node.get_friendly_name()
            if node.get_type_name() not in CONVS or name.startswith("/generator/back/"):
                node.get_rt_info()[KEEP_FP32] = ""
    hint = "f32" if form == "fp32" else "bf16"
    start = time.perf_counter()
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY",
                                                 "PERF_COUNT": True})
    return compiled, time.perf_counter() - start


def exec_types(request) -> dict:
    """Seconds per kernel kind of the last inference (shows which layers ran in bf16)."""
    kinds: dict = {}
    for info in request.profiling_info:
        if info.status == info.Status.EXECUTED:
            kinds[info.exec_type] = kinds.get(info.exec_type, 0.0) + info.real_time.total_seconds()
    return dict(sorted(kinds.items(), key=lambda kv: -kv[1])[:8])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--dataroot", required=True, type=Path)
    parser.add_argument("-n", type=int, default=3)
    parser.add_argument("--forms", nargs="+", default=["fp32", "bf16", "bf16-convs"])
    parser.add_argument("--no-upstream", action="store_true", help="compare with the fp32 graph only")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    import openvino as ov

    pairs = find_pairs(args.dataroot)[: args.n]
    maps = [load_maps(p, MapOptions()) for p in pairs]
    choice = choose(str(args.checkpoint), sizes=[tuple(m[0].shape) for m in maps[:1]])
    onnx = Path(choice.model)
    stems = StemComputer(StemWeights.load(sidecar_path(onnx)))
    core = ov.Core()
    compiled, requests, report = {}, {}, {"forms": {}, "machine": machine(), "versions": versions(),
                                          "maps": [p.name for p in pairs], "graph": str(onnx)}
    for form in args.forms:
        compiled[form], seconds = compile_form(core, onnx, form)
        requests[form] = compiled[form].create_infer_request()
        report["forms"][form] = {"compile_s": seconds, "seconds": [], "pictures": []}
        print(f"{form}: compiled in {seconds:.0f} s", flush=True)
    names = [i.get_any_name() for i in compiled[args.forms[0]].inputs]
    for k, (label, inst, _) in enumerate(maps):  # alternating: each map through every form in turn
        local, glob = stems(label[None], inst[None])
        for form in args.forms:
            start = time.perf_counter()
            out = requests[form].infer(dict(zip(names, (local, glob))))
            seconds = time.perf_counter() - start
            picture = np.asarray(out[compiled[form].outputs[0]])[0].astype(np.uint8)
            entry = report["forms"][form]
            entry["seconds"].append(seconds)
            entry["pictures"].append(picture)
            entry["kernels"] = exec_types(requests[form])
            print(f"{pairs[k].name} {form}: {seconds:.2f} s", flush=True)
    references = {"fp32 graph": report["forms"]["fp32"]["pictures"]} if "fp32" in args.forms else {}
    if not args.no_upstream:
        from pix2pixhd_deploy.model.upstream import UpstreamGenerator

        upstream = UpstreamGenerator(args.checkpoint)
        references["NVIDIA's code"] = [upstream.picture(label, inst) for label, inst, _ in maps]
    base = report["forms"].get("fp32")
    print("\n| form | s/image (median) | vs fp32 | against | PSNR dB (min) | >1 level | max levels |")
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: |")
    for form, entry in report["forms"].items():
        median = float(np.median(entry["seconds"]))
        entry["median_s"] = median
        speed = float(np.median(base["seconds"]) / median) if base else None
        entry["speedup_vs_fp32"] = speed
        entry["accuracy"] = {}
        for ref_name, ref in references.items():
            rows = [compare_arrays(p, r, "levels", with_ssim=False)[0] for p, r in zip(entry["pictures"], ref)]
            acc = {"psnr_db_min": min(r.psnr_db for r in rows),
                   "over_one_level_share_max": max(r.over_one_level_share for r in rows),
                   "max_level_diff": max(r.max_level_diff for r in rows)}
            entry["accuracy"][ref_name] = acc
            print(f"| {form} | {median:.2f} | {speed or 0:.2f}x | {ref_name} | {acc['psnr_db_min']:.1f} | "
                  f"{acc['over_one_level_share_max']:.4%} | {acc['max_level_diff']} |")
        del entry["pictures"]
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
