#!/usr/bin/env bash
# The one GPU check (benchmarks/gpu_check.py): bash benchmarks/gpu_check.sh [--dry-run] [--out DIR]
# From the checkout's root, with the torch that is installed there and nothing from the network. Python packages
# the GPU machine lacks travel as wheels in the checkout's ignored .whl/ folder (docs/gpu.md says how to fill it);
# they are installed into a private folder, never over what the machine has.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if ! "$PY" -c "import cityscapesscripts, fastapi, uvicorn, multipart" >/dev/null 2>&1 && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/p2p-site .whl/*.whl
  export PYTHONPATH="/tmp/p2p-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$PY" benchmarks/gpu_check.py "$@"
