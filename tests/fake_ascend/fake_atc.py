"""A fake ``atc`` for tests: checks an ``atc`` command line the way ATC would and writes a JSON "OM" for the fakes.

It takes exactly the flags ``pix2pixhd-deploy export`` prints (``--framework=5 --model --input_format
--input_shape --output --log --soc_version [--dynamic_batch_size]``) and refuses, with ATC-like errors, what the
ATC docs rule out (ASCEND.md §3): an opset above 13 (CANN 6), an input name the graph lacks or an input left out,
a rank or a static dimension that differs from the graph, ``-1`` outside the batch axis or without
``--dynamic_batch_size``, gears outside 1..2048, and [inf] ``--input_format=NCHW`` for inputs that are not 4-D.

Usage: ``python fake_atc.py <the atc arguments>`` (as printed, after ``atc``). Writes ``<output>.om``.
"""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

MAX_OPSET = 13  # CANN 5.0.4 / 6.0.x: ONNX opset v9-v13


def parse(argv):
    flags = {}
    for arg in argv:
        if not arg.startswith("--") or "=" not in arg:
            raise SystemExit(f"ATC E10001: unexpected argument {arg!r}")
        key, value = arg[2:].split("=", 1)
        flags[key] = value
    return flags


def compile_om(argv) -> Path:
    import onnx

    f = parse(argv)
    for key in ("framework", "model", "input_format", "input_shape", "output", "soc_version"):
        if key not in f:
            raise SystemExit(f"ATC E10004: --{key} is required")
    if f["framework"] != "5":
        raise SystemExit("ATC E10001: --framework must be 5 (ONNX) for an .onnx model")
    model = onnx.load(f["model"], load_external_data=False)
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset > MAX_OPSET:
        raise SystemExit(f"ATC E16005: the model's opset {opset} is not supported (v9-v{MAX_OPSET})")
    graph_inputs = {i.name: [d.dim_value if d.HasField("dim_value") else -1 for d in i.type.tensor_type.shape.dim]
                    for i in model.graph.input}
    gears = [int(g) for g in f["dynamic_batch_size"].split(",")] if "dynamic_batch_size" in f else None
    if gears is not None and not (2 <= len(gears) <= 100 and all(1 <= g <= 2048 for g in gears)):
        raise SystemExit("ATC E10035: --dynamic_batch_size takes 2 to 100 gears in [1, 2048]")
    inputs = []
    for part in f["input_shape"].split(";"):
        name, _, dims = part.rpartition(":")
        shape = [int(d) for d in dims.split(",")]
        if name not in graph_inputs:
            raise SystemExit(f"ATC E10016: input {name!r} in --input_shape is not an input of the model")
        want = graph_inputs[name]
        if len(shape) != len(want) or any(w > 0 and w != s for w, s in zip(want, shape)):
            raise SystemExit(f"ATC E10011: --input_shape {name}:{dims} does not fit the model's input {want}")
        if any(d == -1 for d in shape[1:]) or (shape[0] == -1) != (gears is not None):
            raise SystemExit("ATC E10018: -1 only on the batch axis, and only with --dynamic_batch_size")
        if f["input_format"] == "NCHW" and len(shape) != 4:
            raise SystemExit(f"ATC E10001: --input_format=NCHW but input {name!r} is {len(shape)}-D")
        inputs.append({"name": name, "shape": shape})
    if sorted(i["name"] for i in inputs) != sorted(graph_inputs):
        raise SystemExit(f"ATC E10016: --input_shape must give every input: {sorted(graph_inputs)}")
    om = Path(f["output"] + ".om")
    om.write_text(json.dumps({"onnx": str(Path(f["model"]).resolve()), "inputs": inputs, "dynamic_batch": gears,
                              "input_format": f["input_format"], "soc_version": f["soc_version"]}))
    return om


def run_command(command: str) -> Path:
    """Compile from a whole printed line (``atc --framework=5 ...``)."""
    argv = shlex.split(command)
    if argv[0] != "atc":
        raise ValueError(f"not an atc command: {command}")
    return compile_om(argv[1:])


if __name__ == "__main__":
    print(compile_om(sys.argv[1:]))
