"""How far the seed's default export is from PyTorch at full size on real maps, in ONNX Runtime CPU: the default
(precise instance norms) against ``--fused-norm``.

Each graph is made with the seed's command (``pix2pixhd_pth2onnx.py --load_pretrain CK --output_file X.onnx``, plus
``--fused-norm`` for the second), in a subprocess as a user runs it, from the same checkpoint (a seeded random
label2city_1024p unless --checkpoint is given). Then, for each of N real Cityscapes label/instance pairs at
2048x1024, the encoded maps go through PyTorch fp32 and through each graph in ONNX Runtime (CPU, all graph
optimisations); the figures are compare's (max abs and mean abs error in [-1, 1] units, share of picture values
more than one level apart). Prints a table; ``--json`` saves it with the machine and versions.

    .venv/bin/python benchmarks/export_accuracy.py -n 3
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "data" / "cityscapes_samples"
sys.path.insert(0, str(REPO / "src"))

from pix2pixhd_deploy.compare.metrics import compare_arrays  # noqa: E402
from pix2pixhd_deploy.data.dataset import cityscapes_pairs, find_pairs, load_pair  # noqa: E402
from pix2pixhd_deploy.export import run_onnxruntime_cpu  # noqa: E402
from pix2pixhd_deploy.model.encoding import encode_input  # noqa: E402
from pix2pixhd_deploy.model.network import LABEL2CITY_1024P, load_generator, random_generator, save_checkpoint  # noqa: E402
from pix2pixhd_deploy.provenance import machine, versions  # noqa: E402

GRAPHS = {"default (precise norms)": [], "--fused-norm": ["--fused-norm"]}


def export(checkpoint: Path, out: Path, extra) -> dict:
    report = out.with_suffix(".json")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(REPO / "pix2pixhd_pth2onnx.py"), "--load_pretrain", str(checkpoint),
                    "--output_file", str(out), "--report", str(report), *extra], check=True)
    return {**json.loads(report.read_text()), "wall_s": time.perf_counter() - t0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=3, help="real samples to check (default 3)")
    p.add_argument("--samples", type=Path, default=SAMPLES)
    p.add_argument("--checkpoint", type=Path, help="latest_net_G.pth (default: a seeded random label2city_1024p)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    import torch

    pairs = find_pairs(args.samples)[:args.n] if (args.samples / "test_label").is_dir() \
        else cityscapes_pairs(args.samples)[:args.n]
    with tempfile.TemporaryDirectory(prefix="export-accuracy-") as tmp:
        tmp = Path(tmp)
        checkpoint = args.checkpoint or save_checkpoint(random_generator(LABEL2CITY_1024P, seed=2),
                                                        tmp / "ck" / "latest_net_G.pth")
        model = load_generator(checkpoint).model
        exports = {name: export(checkpoint, tmp / f"g{i}.onnx", extra) for i, (name, extra) in enumerate(GRAPHS.items())}
        rows = []
        for pair in pairs:
            x = encode_input(*load_pair(pair))[None]
            with torch.inference_mode():
                ref = model(torch.from_numpy(x))[0].numpy()
            for i, name in enumerate(GRAPHS):
                got = run_onnxruntime_cpu((tmp / f"g{i}.onnx").read_bytes(), "input_concat", x)[0]
                figures, _ = compare_arrays(ref, got, "raw", name=pair.name, with_ssim=False)
                rows.append({"map": pair.name, "graph": name, "max_abs": figures.max_abs, "mean_abs": figures.mean_abs,
                             "over_one_level_share": figures.over_one_level_share,
                             "differing_share": figures.differing_share})
                print(f"{pair.name}  {name:24s} max abs {figures.max_abs:.3g}  mean abs {figures.mean_abs:.3g}  "
                      f"pictures: {figures.differing_share:.4%} of pixels differ, {figures.over_one_level_share:.4%} "
                      f"by more than one level", flush=True)
    for name, rep in exports.items():
        print(f"export {name}: own check on {rep['verify_input']}: max abs {rep['max_abs_error']:.3g} "
              f"({rep['tolerance_rule']}); {rep['wall_s']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "exports": {k: {key: v[key] for key in (
            "max_abs_error", "mean_abs_error", "verify_input", "tolerance", "tolerance_units", "wall_s", "ops")}
            for k, v in exports.items()}, "machine": machine(), "versions": versions()}, indent=2))


if __name__ == "__main__":
    main()
