#!/usr/bin/env bash
# The figures behind README's compare/bench section and modelzoo_level.txt, reproducible:
#
#   bash benchmarks/label2city_1024p.sh cpu [OUT]   # torch fp32 on the CPU, batch 1; our runtime vs NVIDIA's code
#   bash benchmarks/label2city_1024p.sh gpu [OUT]   # torch fp32/fp16, ONNX Runtime CUDA/TensorRT at batch 1, 4, 8
#
# CKPT: a folder with NVIDIA's latest_net_G.pth (default: seeded random weights of the same architecture, which
# time the same and compare the same, but make noise pictures). SAMPLES: a data root with test_label/ and
# test_inst/ (default: ../shared/data/cityscapes_samples); N of its label maps are compared (default 3).
set -euo pipefail
MODE=${1:-cpu}
OUT=${2:-bench_out}
BIN=${BIN:-.venv/bin}
CLI="$BIN/pix2pixhd-deploy"
CKPT=${CKPT:-$OUT/label2city_1024p}
SAMPLES=${SAMPLES:-../shared/data/cityscapes_samples}
N=${N:-3}
mkdir -p "$OUT"

if [ ! -f "$CKPT/latest_net_G.pth" ]; then
  "$BIN/python" -c 'import sys
from pix2pixhd_deploy.network import LABEL2CITY_1024P, random_generator, save_checkpoint
save_checkpoint(random_generator(LABEL2CITY_1024P, seed=0), sys.argv[1])' "$CKPT/latest_net_G.pth"
fi

# N real label maps (symlinked) -> preprocessed inputs -> our outputs
DATA="$OUT/data"
mkdir -p "$DATA/test_label" "$DATA/test_inst"
for f in $(ls "$SAMPLES/test_label" | head -n "$N"); do ln -sf "$(realpath "$SAMPLES/test_label/$f")" "$DATA/test_label/$f"; done
for f in $(ls "$SAMPLES/test_inst" | head -n "$N"); do ln -sf "$(realpath "$SAMPLES/test_inst/$f")" "$DATA/test_inst/$f"; done
"$CLI" preprocess "$DATA" "$OUT/prep"

case "$MODE" in
cpu)
  "$CLI" bench --model "$CKPT" --device cpu --batch-sizes 1 --loops 3 --e2e-batches 1 \
      --json "$OUT/bench_cpu.json" --chart "$OUT/bench_cpu.png"
  "$CLI" infer --model "$CKPT" --input "$OUT/prep" --output "$OUT/result" --output_dirname torch_cpu --device cpu
  "$CLI" compare "$OUT/result/torch_cpu" "$OUT/upstream" --reference upstream --checkpoint "$CKPT" \
      --dataroot "$DATA" --json "$OUT/compare_upstream.json" --report "$OUT/compare_upstream"
  ;;
gpu)
  "$CLI" export --load_pretrain "$CKPT" --output_file "$OUT/label2city_1024p.onnx"
  "$CLI" bench --model "$CKPT" --device cuda --batch-sizes 1 4 8 --json "$OUT/torch_fp32.json"
  "$CLI" bench --model "$CKPT" --device cuda --fp16 --batch-sizes 1 4 8 --json "$OUT/torch_fp16.json"
  "$CLI" bench --model "$OUT/label2city_1024p.onnx" --providers cuda --batch-sizes 1 4 8 --json "$OUT/ort_cuda.json"
  "$CLI" bench --model "$OUT/label2city_1024p.onnx" --providers tensorrt --batch-sizes 1 4 8 \
      --merge "$OUT/torch_fp32.json" "$OUT/torch_fp16.json" "$OUT/ort_cuda.json" \
      --json "$OUT/bench_gpu.json" --chart "$OUT/bench_gpu.png"
  # accuracy of each GPU runtime against torch fp32 on the CPU, and of torch fp32 on the GPU against NVIDIA's code
  "$CLI" infer --model "$CKPT" --input "$OUT/prep" --output "$OUT/result" --output_dirname torch_cpu --device cpu
  "$CLI" infer --model "$CKPT" --input "$OUT/prep" --output "$OUT/result" --output_dirname torch_cuda --device cuda
  "$CLI" infer --model "$CKPT" --input "$OUT/prep" --output "$OUT/result" --output_dirname torch_cuda_fp16 \
      --device cuda --fp16
  "$CLI" infer --model "$OUT/label2city_1024p.onnx" --input "$OUT/prep" --output "$OUT/result" \
      --output_dirname ort_cuda --providers cuda
  "$CLI" compare "$OUT/result/torch_cuda" "$OUT/result/torch_cpu" --json "$OUT/compare_torch_cuda.json" || true
  "$CLI" compare "$OUT/result/torch_cuda_fp16" "$OUT/result/torch_cpu" --preset fp16 \
      --json "$OUT/compare_torch_fp16.json" --report "$OUT/compare_fp16" || true
  "$CLI" compare "$OUT/result/ort_cuda" "$OUT/result/torch_cpu" --json "$OUT/compare_ort_cuda.json" || true
  "$CLI" compare "$OUT/result/torch_cuda" "$OUT/upstream" --reference upstream --checkpoint "$CKPT" \
      --dataroot "$DATA" --json "$OUT/compare_upstream.json" || true
  ;;
*)
  echo "usage: $0 cpu|gpu [OUT]" >&2
  exit 2
  ;;
esac
