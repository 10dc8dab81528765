"""The CPU graph's two forms of instance norm, measured: the two-stage norm (the export default) and the row-moment
norm (the CPU graph's, with --fast-convs), each followed by its ReLU as in the generator.

Time: each form alone through ONNX in OpenVINO (fp32), at label2city_1024p's full-size (32 channels at 1024x2048)
and half-size (64 at 512x1024) norms. Error: each form in float32 torch against the norm in float64, on synthetic
channels from a centred normal to one whose mean squared is 10,000 times its variance. docs/cpu.md quotes both.

    .venv/bin/python benchmarks/norm_forms.py                       # about a minute
    .venv/bin/python benchmarks/norm_forms.py --sizes 4,32,64 --error-size 64,128 --repeats 2 --json out.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def error_cases(h: int, w: int):
    """(name, input) pairs of 8 channels each, seeded."""
    import torch

    torch.manual_seed(0)
    yield "normal(0, 1)", torch.randn(1, 8, h, w)
    yield "normal(3, 1)", torch.randn(1, 8, h, w) + 3
    regions = torch.zeros(1, 1, h, w, dtype=torch.long)  # label-like regions, as a stem's output has
    regions[..., : h // 3, :] = 1
    regions[..., h // 2:, w // 3:] = 2
    flat = torch.tensor([1.0, 1.2, 0.9])[regions].expand(1, 8, h, w)
    yield "regions of 0.9, 1.0 and 1.2, noise 1e-3", flat + 0.001 * torch.randn(1, 8, h, w)
    yield "normal(10, 0.1)", torch.randn(1, 8, h, w) * 0.1 + 10
    yield "normal(100, 1)", torch.randn(1, 8, h, w) + 100


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["32,1024,2048", "64,512,1024"], help="C,H,W to time")
    ap.add_argument("--error-size", default="512,1024", help="H,W of the error cases (8 channels)")
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    import numpy as np
    import openvino as ov
    import torch
    from torch import nn

    from pix2pixhd_deploy.export import torch_onnx_export
    from pix2pixhd_deploy.export.rewrites import RowMomentsInstanceNorm, TwoStageInstanceNorm
    from pix2pixhd_deploy.provenance import machine, versions

    forms = {"two-stage": TwoStageInstanceNorm, "row moments": RowMomentsInstanceNorm}
    result = {"machine": machine(), "versions": versions(), "timing": [], "errors": []}
    core = ov.Core()
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        for size in args.sizes:
            c, h, w = (int(v) for v in size.split(","))
            x = torch.randn(1, c, h, w) * 0.3 + torch.linspace(-2, 2, c).view(1, c, 1, 1)
            exact = torch.relu(nn.functional.instance_norm(x.double())).numpy()
            row = {"size": [c, h, w]}
            for name, form in forms.items():
                path = Path(tmp) / "norm.onnx"
                with path.open("wb") as fh:
                    torch_onnx_export(nn.Sequential(form(nn.InstanceNorm2d(c)), nn.ReLU()), x, fh, opset_version=17,
                                      input_names=["x"])
                compiled = core.compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                                 "PERFORMANCE_HINT": "LATENCY"})
                request, feed = compiled.create_infer_request(), x.numpy()
                times = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    out = request.infer({0: feed}, share_inputs=True)[0]
                    times.append(time.perf_counter() - start)
                row[name] = {"best_s": min(times), "median_s": float(np.median(times)),
                             "max_error": float(np.abs(out - exact).max())}
            result["timing"].append(row)
        h, w = (int(v) for v in args.error_size.split(","))
        for case, x in error_cases(h, w):
            exact = nn.functional.instance_norm(x.double())
            ratio = float((x.double().mean((2, 3)) ** 2 / x.double().var((2, 3))).max())
            result["errors"].append({"input": case, "mean2_over_var": ratio, **{
                name: float((form(nn.InstanceNorm2d(8))(x).double() - exact).abs().max())
                for name, form in forms.items()}})
    print(f"OpenVINO {ov.__version__}, fp32, {machine().get('cpu')} ({machine().get('cpu_count')} cores), "
          f"best of {args.repeats}:")
    print("| channels at HxW | two-stage | row moments |\n| --- | ---: | ---: |")
    for r in result["timing"]:
        print(f"| {r['size'][0]} at {r['size'][1]}x{r['size'][2]} | {r['two-stage']['best_s'] * 1e3:.1f} ms | {r['row moments']['best_s'] * 1e3:.1f} ms |")
    print(f"\nlargest error against float64, 8 channels at {h}x{w}, float32 torch:")
    print("| input | mean^2 / variance | two-stage | row moments |\n| --- | ---: | ---: | ---: |")
    for r in result["errors"]:
        print(f"| {r['input']} | {r['mean2_over_var']:.3g} | {r['two-stage']:.1e} | {r['row moments']:.1e} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
