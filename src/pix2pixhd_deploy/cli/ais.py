"""``infer``'s own flags: ais_bench's (``python3 -m ais_bench ...``), spelled as ais_bench spells them, so the seed's
command works with the program renamed; the flags infer shares with other commands (--model, --device, --fp16,
--providers...) are the groups of :mod:`cliargs`. ais_bench flags infer does not implement are refused, each in one
line that says why.
"""
from __future__ import annotations

import argparse
from typing import Dict

from ..errors import UserError
from .args import BATCH_SIZE, KEEP_GOING, ArgGroup, parse_hw

#: ais_bench flags this command does not implement, and why (each refused in one line when given)
AIS_BENCH_FLAGS_LEFT_OUT = {
    "--dymDims": "the exported graphs have no dynamic dims",
    "--dymShape": "the exported graphs have no dynamic shapes",
    "--outputSize": "it is for dynamic-shape OMs",
    "--auto_set_dymshape_mode": "it is for dynamic-shape OMs",
    "--auto_set_dymdims_mode": "it is for dynamic-dims OMs",
    "--dymShape_range": "it is for dynamic-shape OMs",
    "--profiler": "profiling needs the Ascend msprof tools; run python3 -m ais_bench for it",
    "--dump": "dumping needs acl.json on an NPU; run python3 -m ais_bench for it",
    "--acl_json_path": "it configures ACL on an NPU; run python3 -m ais_bench for it",
    "--run_mode": "inputs are always read into host arrays (ais_bench's default, array)",
    "--energy_consumption": "it reads NPU power counters; run python3 -m ais_bench for it",
    "--npu_id": "it reads NPU power counters; run python3 -m ais_bench for it",
    "--backend_trtexec": "it is not an ais_bench flag of the OM tool",
    "--perf": "it is not an ais_bench flag of the OM tool",
    "--pipeline": "inputs are read in this process (no C++ pipeline)",
    "--threads": "inputs are read in this process (no C++ pipeline)",
}


def _bool01(text: str) -> bool:
    """ais_bench's boolean flags: 1/0, true/false."""
    if text.lower() in ("1", "true"):
        return True
    if text.lower() in ("0", "false"):
        return False
    raise argparse.ArgumentTypeError(f"expected 1 or 0, got {text!r}")


class AisBenchArgs(ArgGroup):
    """ais_bench's inputs, output layout, timing and summary flags, parsed into :func:`infer.run_inference`'s
    options."""

    key, title = "ais", "ais_bench"

    def add_arguments(self, g) -> None:
        g.add_argument("--input", "-i", help="one folder (or file) per model input, comma-separated; a one-input "
                                             "model also takes a list of .bin files; omit for pure inference")
        g.add_argument("--output_dirname", help="subfolder of --output for the outputs (default: a timestamp)")
        g.add_argument("--outfmt", "--format", dest="outfmt", default="BIN", type=str.upper,
                       choices=("BIN", "NPY", "TXT"), help="the outputs' file format (default BIN)")
        BATCH_SIZE.add(g, "--batchsize", default=None)
        g.add_argument("--loop", "-l", type=int, default=1, help="executions per batch (timed)")
        g.add_argument("--warmup_count", type=int, default=1, help="untimed executions first (ais_bench default 1)")
        g.add_argument("--dymHW", type=parse_hw, help="input HEIGHT,WIDTH (default: from the file size, 1:2 aspect)")
        KEEP_GOING.add(g)
        g.add_argument("--debug", dest="ais_debug", type=int, choices=(0, 1), default=0, metavar="{0,1}",
                       help="ais_bench's --debug: 1 logs the model's inputs and output and each execution's time")
        g.add_argument("--display_all_summary", type=_bool01, nargs="?", const=True, default=False,
                       help="also print the H2D/D2H lines (shown as not measured: the runners time the execution)")
        g.add_argument("--output_batchsize_axis", type=int, default=0,
                       help="the output axis split into one file per sample (default 0)")
        g.add_argument("--pure_data_type", choices=("zero", "random"), default=None, help=argparse.SUPPRESS)
        for flag in AIS_BENCH_FLAGS_LEFT_OUT:
            g.add_argument(flag, dest="left_out_" + flag.lstrip("-"), nargs="?", const="", default=None,
                           help=argparse.SUPPRESS)

    def parse(self, args) -> Dict[str, object]:
        refuse_left_out_flags(args)
        return dict(inputs=args.input, output=args.output, output_dirname=args.output_dirname, outfmt=args.outfmt,
                    batchsize=args.batch_size, loop=args.loop, warmup_count=args.warmup_count, hw=args.dymHW,
                    keep_going=args.keep_going, output_batchsize_axis=args.output_batchsize_axis,
                    debug=bool(args.ais_debug))


def refuse_left_out_flags(args) -> None:
    for flag, why in AIS_BENCH_FLAGS_LEFT_OUT.items():
        if getattr(args, "left_out_" + flag.lstrip("-"), None) is not None:
            raise UserError(f"{flag} is an ais_bench flag that pix2pixhd-deploy infer does not take: {why}",
                            fix=f"drop {flag}")
    if args.pure_data_type not in (None, "zero"):
        raise UserError(f"--pure_data_type {args.pure_data_type} is not supported: pure inference runs on zeros "
                        "(ais_bench's default)", fix="drop --pure_data_type or pass zero")
