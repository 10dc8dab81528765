"""One 3x3 convolution as the CPU graph runs it: direct, Winograd F(2x2, 3x3) and F(4x4, 3x3), through ONNX in
OpenVINO (fp32), timed, with each one's largest error against the convolution in float64.

The default is label2city_1024p's residual-block layer at 2048x1024: 1024 channels in and out, 32x64 plus the
reflection pad. docs/cpu.md quotes its figures.

    .venv/bin/python benchmarks/winograd_tile.py                       # about a minute
    .venv/bin/python benchmarks/winograd_tile.py --channels 64 --size 18,34 --repeats 3 --json out.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--channels", type=int, default=1024)
    ap.add_argument("--size", default="34,66", help="H,W of the padded input (default 34,66)")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    import openvino as ov
    import torch
    from torch import nn

    from pix2pixhd_deploy.model.fastconv import WinogradConv3x3

    h, w = (int(v) for v in args.size.split(","))
    torch.manual_seed(0)
    conv = nn.Conv2d(args.channels, args.channels, 3).requires_grad_(False)
    x = torch.randn(1, args.channels, h, w)
    with torch.no_grad():
        exact = torch.nn.functional.conv2d(x.double(), conv.weight.double(), conv.bias.double()).numpy()
    core, rows = ov.Core(), []
    with tempfile.TemporaryDirectory() as tmp:
        for name, module in (("direct", conv), ("F(2x2, 3x3)", WinogradConv3x3(conv, 2)),
                             ("F(4x4, 3x3)", WinogradConv3x3(conv, 4))):
            path = Path(tmp) / "layer.onnx"
            with torch.no_grad():
                torch.onnx.export(module, (x,), str(path), opset_version=17, dynamo=False)
            compiled = core.compile_model(str(path), "CPU", {"PERFORMANCE_HINT": "LATENCY",
                                                             "INFERENCE_PRECISION_HINT": "f32"})
            request = compiled.create_infer_request()
            out = request.infer({0: x.numpy()})[0]
            seconds = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                request.infer({0: x.numpy()})
                seconds.append(time.perf_counter() - start)
            rows.append({"form": name, "median_ms": 1000 * float(np.median(seconds)),
                         "min_ms": 1000 * min(seconds), "max_abs_error": float(np.abs(out - exact).max()),
                         "graph_mb": path.stat().st_size / 1e6})
    print(f"one {args.channels}-channel 3x3 convolution on {h}x{w}, OpenVINO {ov.__version__} fp32")
    print("| form | median | fastest | max error against float64 | graph |\n|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['form']} | {r['median_ms']:.1f} ms | {r['min_ms']:.1f} ms | {r['max_abs_error']:.2e} | "
              f"{r['graph_mb']:.0f} MB |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
