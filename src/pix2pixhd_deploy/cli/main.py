"""The ``pix2pixhd-deploy`` command: argument parsing only; every subcommand calls one library function.

A subcommand is a list of argument groups (:mod:`cliargs`: model, device, runtime options, label maps, engine,
output; infer's ais_bench flags in :mod:`cliargs_ais`) plus its own few flags; its ``cmd_*`` function reads the
parsed groups (``args.opt``) and calls the library. A :class:`~pix2pixhd_deploy.errors.UserError` becomes one line on
stderr and exit status 2 (a traceback only with ``--debug``); Ctrl-C exits 130 and leaves only complete files behind.
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from ..errors import UserError
from ..version import __version__
from .ais import AisBenchArgs
from .args import (
    ATOL,
    BATCH_SIZE,
    HEIGHT,
    IMAGE_FORMAT,
    JSON,
    KEEP_GOING,
    MIN_PSNR,
    RAW_SIZE,
    SEED,
    WIDTH,
    ArgGroup,
    DataArgs,
    DeviceArgs,
    EngineArgs,
    ExportArgs,
    ModelArgs,
    OutputArgs,
    RuntimeArgs,
    parse_groups,
    parse_hw,
)

log = logging.getLogger("pix2pixhd_deploy")


# ------------------------------------------------------------------------------------------ subcommands

def cmd_convert(args) -> int:
    from ..data.dataset import convert_cityscapes
    from ..fileio import progress

    if args.from_colour and args.link:
        raise UserError("--link cannot be used with --from-colour: the label maps are converted, not copied",
                        fix="drop --link")
    report = convert_cityscapes(args.split_dir, args.inst_dir, args.label_dir, link=args.link,
                                from_colour=args.from_colour, progress_fn=lambda keys: progress(keys, desc="convert"))
    print(f"convert: {report.summary()} -> {args.label_dir}, {args.inst_dir}")
    return 0


def cmd_preprocess(args) -> int:
    from ..seed.preprocess import preprocess_dataset

    data = args.opt.data
    outs = preprocess_dataset(data.dataroot, args.out_dir, label_nc=data.label_nc, instances=data.instances,
                              fit=data.fit, base=args.size_multiple, phase=args.phase, keep_going=args.keep_going)
    print(f"preprocess: {len(outs)} input tensors in {args.out_dir}")
    return 0


def cmd_infer(args) -> int:
    from ..runners import make_runner
    from ..seed.infer import format_summary, run_inference, run_on_devices

    o = args.opt
    runner_args = dict(model=o.model.path, backend=o.model.backend, fp16=o.device.fp16, **o.runtime.runner_options(),
                       **_precision(o.device))
    argv = [Path(sys.argv[0]).name] + list(args._argv)
    if len(o.device.devices) > 1:
        results = run_on_devices(o.device.devices, runner_args, o.ais, argv, display_all=args.display_all_summary)
        for i, r in enumerate(results):
            print(r["summary_text"])
            print(f"[INFO] i:{i} device_{r['device']} throughput:{r['throughput']:.4f} "
                  f"start_time:{r['start_time']:.4f} end_time:{r['end_time']:.4f}")
        print(f"[INFO] summary throughput:{sum(r['throughput'] for r in results):.4f}")
        return 0
    with make_runner(device=o.device.device, **runner_args) as runner:
        result = run_inference(runner, argv=argv, **o.ais)
    print(format_summary(result, display_all=args.display_all_summary))
    if result.output_dir is not None:
        print(f"infer: {len(result.outputs)} outputs in {result.output_dir}, summary {result.summary_path}")
    else:
        print(f"infer: {result.samples} samples run; nothing saved (no --output, as ais_bench)")
    return 0


def cmd_export(args) -> int:
    import json

    from ..export import export_onnx
    from ..fileio import atomic_write_text

    o = args.opt
    report = export_onnx(o.model.path, o.output.path, o.export)
    print("\n".join(report.lines()))
    if o.output.json:
        atomic_write_text(o.output.json, json.dumps(report.to_dict(), indent=2))
    return 0


def cmd_postprocess(args) -> int:
    from ..seed.postprocess import postprocess_dir

    outs = postprocess_dir(args.bin_dir, args.out_dir, fmt=args.format, hw=args.size, sizes=args.sizes)
    print(f"postprocess: {len(outs)} pictures in {args.out_dir}")
    return 0


def _precision(device) -> dict:
    """--precision bf16 as the runner option that carries it (torch's; another backend refuses it by name)."""
    return {"precision": "bf16"} if device.bf16 else {}


def cmd_run(args) -> int:
    from ..data.dataset import map_sizes
    from ..run.local import discover, run
    from ..run.settings import RunSettings
    from ..runners import check_options
    from ..runners.choose import choose
    from ..runners.open import open_runner

    o = args.opt
    if o.engine.engine == "ray" and (args.profile or args.encoders):
        flag = "--profile" if args.profile else "--encode-threads"
        raise UserError(f"{flag} applies to the local engine only (Ray's actors encode their own pictures)",
                        fix=f"drop {flag} or --engine ray")
    if o.engine.engine != "ray":
        from .allocator import hold_freed_memory

        hold_freed_memory()  # this process computes picture after picture: freed memory is reused, not re-faulted
    pairs, instances = discover(o.data.dataroot, o.data.cityscapes, instances=o.data.instances)
    use_instance = instances != "none"
    common = dict(device=o.device.device, fp16=o.device.fp16, bf16=o.device.bf16,
                  fast_convs=o.runtime.fast_convs, save_raw=o.output.save_raw, label_nc=o.data.label_nc,
                  use_instance=use_instance, cache_dir=o.model.cache_dir)
    choice = choose(o.model.path, backend=o.model.backend, sizes=map_sizes(pairs, fit=o.data.fit), **common)
    check_options(choice.backend, {"fast_convs": o.runtime.fast_convs, **_precision(o.device)})  # before any work
    log.info("%s", choice.reason)
    settings = RunSettings.from_choice(choice, batch_size=args.batch_size, image_format=o.output.image_format,
                                       streams=args.streams, instances=instances, fit=o.data.fit,
                                       profile=args.profile, encoders=args.encoders, **common)
    if o.engine.engine == "ray":
        from ..run.ray import run_ray

        report = run_ray(pairs, o.output.path, settings, keep_going=args.keep_going, **o.engine.ray_options())
    else:
        report = run(pairs, o.output.path, lambda: open_runner(settings, choice), settings,
                     keep_going=args.keep_going, workers=args.workers, choice=choice.describe())
    print(report.summary())
    return 0


def cmd_serve(args) -> int:
    from .serve import parse_serve_arguments

    options, limits, ray = parse_serve_arguments(args)
    if ray is not None:
        from ..serve.ray_serve import serve_ray

        serve_ray(options, limits, ray, host=args.host, port=args.port)
    else:
        from .allocator import hold_freed_memory
        from ..serve.server import serve

        hold_freed_memory()  # a long-lived process computing picture after picture, as run does
        serve(options, limits, host=args.host, port=args.port)
    return 0


def cmd_cache(args) -> int:
    from ..cache import cache_root, clear, list_entries
    from ..fileio import format_bytes
    from ..runners.choose import stale_reason

    root = cache_root(args.opt.model.cache_dir)
    if args.action in ("clear", "prune"):
        # prune: another version's graphs, incomplete entries and what interrupted builds left (never used)
        freed = clear(root, only=(lambda key: not key or stale_reason(key) is not None)
                      if args.action == "prune" else None)
        print(f"cache: {format_bytes(freed)} freed in {root}")
        return 0
    entries = list_entries(root)
    stale = 0
    for e in entries:
        key = e["key"]
        what = (f"{key.get('runtime')} {key.get('width')}x{key.get('height')} {key.get('output_format')}, checkpoint "
                f"{str(key.get('checkpoint_sha256'))[:12]}" if key else "incomplete entry")
        why = stale_reason(key) if key else None
        stale += int(e["bytes"]) if why else 0
        note = f"  (stale: {why}; never used by this version)" if why else "" if e["usable"] else \
            "  (unusable: rebuilt on use)"
        print(f"{e['folder']}  {format_bytes(e['bytes'])}  {what}{note}")
    print(f"cache: {len(entries)} graphs, {format_bytes(sum(e['bytes'] for e in entries))} in {root}"
          + (f"; {format_bytes(stale)} of them stale (`pix2pixhd-deploy cache prune` frees it)" if stale else ""))
    return 0


def cmd_demo(args) -> int:
    from ..demo import run_demo

    o = args.opt
    print(run_demo(o.output.path, checkpoint=o.model.path, dataroot=o.data.dataroot, cityscapes=o.data.cityscapes,
                   num_images=args.num_images, size=args.size, seed=args.seed, device=o.device.device,
                   batchsize=args.batch_size, instances=o.data.instances, fit=o.data.fit))
    return 0


def cmd_compare(args) -> int:
    import json
    import tempfile

    from ..compare.compare import compare_dirs
    from ..fileio import atomic_write_text

    o = args.opt
    folder_b, scratch = args.b, None
    if args.reference == "upstream":
        if folder_b is None:
            scratch = tempfile.TemporaryDirectory(prefix="pix2pixhd-upstream-")
            folder_b = scratch.name
        _make_upstream_reference(o, folder_b, args.reference_format)
    elif folder_b is None:
        raise UserError("compare needs two folders", fix="pass A and B, or --reference upstream with --checkpoint "
                                                         "and --dataroot")
    report = None
    if args.report:
        from ..compare.html import CompareReport, label_maps

        report = CompareReport(args.report, labels=label_maps(o.data.dataroot) if o.data.dataroot else None,
                               amplify=args.amplify)
    try:
        result = compare_dirs(args.a, folder_b, preset=args.preset, atol=args.atol, min_psnr=args.min_psnr,
                              min_ssim=args.min_ssim, max_diff_share=args.max_diff_share, size=args.size,
                              allow_missing=args.allow_missing, on_image=report.add if report else None)
    finally:
        if scratch is not None:
            scratch.cleanup()
    print("\n".join(result.lines()))
    if args.json:
        atomic_write_text(args.json, json.dumps(result.to_dict(), indent=2) + "\n")
        print(f"figures: {args.json}")
    if report is not None:
        print(f"report: {report.finish(result)}")
    return 0 if result.passed else 1


def _make_upstream_reference(o, folder_b: str, fmt: str) -> None:
    """compare --reference upstream: folder B made by NVIDIA's own code."""
    from ..model.upstream import make_upstream_outputs

    if not o.model.path or not o.data.dataroot:
        raise UserError("--reference upstream needs --checkpoint and --dataroot",
                        fix="pass the checkpoint and the data root (with test_label/) that folder A was made from")
    made = make_upstream_outputs(o.model.path, o.data.dataroot, folder_b, fmt=fmt, instances=o.data.instances,
                                 fit=o.data.fit)
    print(f"upstream reference: {len(made)} pictures made by NVIDIA's code in {folder_b}")


def cmd_bench(args) -> int:
    import json

    from ..bench import draw_chart, format_tables, run_bench
    from ..fileio import atomic_write_text

    o = args.opt
    if not o.model.path and not args.merge:
        raise UserError("nothing to benchmark", fix="pass --model M (and --merge earlier --json files to combine)")
    report = None
    if o.model.path:
        report = run_bench(o.model.path, backend=o.model.backend, device=o.device.device, fp16=o.device.fp16,
                           batch_sizes=args.batch_size, loops=args.loops, warmup=args.warmup, height=args.height,
                           width=args.width, dataroot=o.data.dataroot, e2e_batches=args.e2e_batches, seed=args.seed,
                           **o.runtime.runner_options(), **_precision(o.device))
    if args.merge:
        report = _merge_bench_files(report, args.merge)
    print(format_tables(report))
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
        print(f"figures: {args.json}")
    if args.chart:
        print(f"chart: {draw_chart(report, args.chart)}")
    return 0


def _merge_bench_files(report, paths: Sequence[str]):
    """bench --merge: earlier --json files put beside this run's report."""
    import json

    from ..bench import merge_reports

    others = []
    for path in paths:
        try:
            others.append((path, json.loads(Path(path).read_text())))
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read this bench JSON ({exc})", path=path,
                            fix="pass files written by pix2pixhd-deploy bench --json") from exc
    return merge_reports(report, others)


# ------------------------------------------------------------------------------ each command's own flags

def _convert_flags(p) -> None:
    p.add_argument("inst_dir", help="output folder for *_gtFine_instanceIds.png (e.g. DATAROOT/test_inst)")
    p.add_argument("label_dir", help="output folder for *_gtFine_labelIds.png (e.g. DATAROOT/test_label)")
    p.add_argument("split_dir", help="a gtFine split folder whose subfolders are cities (e.g. gtFine/val)")
    p.add_argument("--link", action="store_true", help="symlink instead of copying")
    p.add_argument("--from-colour", "--from-color", action="store_true",
                   help="the label maps are Cityscapes colour maps (the split's *_gtFine_color.png, or any folder "
                        "of painted masks): write them as *_gtFine_labelIds.png ids; instance maps are copied "
                        "when there are any")


def _preprocess_flags(p) -> None:
    p.add_argument("out_dir", help="folder for <label stem>.bin")
    p.add_argument("--phase", default="test", help="reads <phase>_label and <phase>_inst (default test)")
    p.add_argument("--size-multiple", type=int, default=32,
                   help="snap sizes to a multiple of this, as upstream (32 for netG local, 16 for global)")
    KEEP_GOING.add(p)


def _postprocess_flags(p) -> None:
    p.add_argument("bin_dir", help="folder of output .bin files (e.g. ./result/bs1)")
    p.add_argument("out_dir", help="folder for <stem>generated.png")
    IMAGE_FORMAT.add(p)
    RAW_SIZE.add(p)
    p.add_argument("--sizes", metavar="pix2pixhd_sizes.json",
                   help="the sidecar preprocess wrote beside the .bin inputs: each output's size, cropped back to its "
                        "label map's with --fit pad (default: found through BIN_DIR's _summary.json)")


def _run_flags(p) -> None:
    BATCH_SIZE.add(p)
    KEEP_GOING.add(p)
    p.add_argument("--decode-threads", "--workers", dest="workers", type=int, default=2,
                   help="threads decoding PNGs ahead of the compute (default 2; --num-workers is Ray's actors)")
    p.add_argument("--streams", type=int, default=1,
                   help="batches computed at once, the CPU cores shared among them (default 1)")
    p.add_argument("--encode-threads", dest="encoders", type=int, default=0, metavar="N",
                   help="threads encoding and writing the pictures (default: 1 when the CPU computes them, else the "
                        "cores the other stages leave)")
    p.add_argument("--profile", action="store_true",
                   help="print where the seconds and page faults went, image by image, and the runtime's slowest "
                        "layers (OpenVINO's counters), and write them to OUTPUT/profile.json")


def _serve_flags(p) -> None:
    from .serve import add_serve_arguments

    add_serve_arguments(p)


def _cache_flags(p) -> None:
    p.add_argument("action", choices=("list", "prune", "clear"),
                   help="list: each graph, its size and key; prune: remove the graphs made by another version of "
                        "this tool, torch or the runtime, and incomplete ones (never used by this one); clear: "
                        "remove all")


def _demo_flags(p) -> None:
    p.add_argument("--num-images", type=int, default=3, help="synthetic scenes to make (default 3)")
    p.add_argument("--size", type=parse_hw, default=(1024, 2048), metavar="H,W",
                   help="synthetic scene HEIGHT,WIDTH (1024,2048)")
    SEED.add(p)
    BATCH_SIZE.add(p, "--batchsize")


def _compare_flags(p) -> None:
    p.add_argument("a", help="folder A: raw outputs (.bin/.npy from infer or ais_bench) or pictures (.png/.jpg)")
    p.add_argument("b", nargs="?", help="folder B, the reference; with --reference upstream, the folder NVIDIA's "
                                        "outputs are written to (default: a temporary one)")
    p.add_argument("--reference", choices=("upstream",),
                   help="make B with NVIDIA's own code (pip install --no-deps pix2pixhd==1.0) from --checkpoint "
                        "and --dataroot")
    p.add_argument("--reference-format", choices=("png", "jpg"), default="png",
                   help="--reference upstream: png (lossless, default) or jpg (test.py's JPEG q75)")
    p.add_argument("--preset", choices=("fp32", "fp16", "jpeg"),
                   help="tolerances (default: jpeg if any JPEG, else fp32)")
    ATOL.add(p)
    MIN_PSNR.add(p)
    p.add_argument("--min-ssim", type=float, help="least SSIM")
    p.add_argument("--max-diff-share", type=float, help="largest share (0..1) of pixels more than one level off")
    RAW_SIZE.add(p)
    p.add_argument("--allow-missing", action="store_true", help="compare the pairs there are; unpaired files only "
                                                                "warn")
    JSON.add(p)
    p.add_argument("--report", metavar="DIR_OR_HTML", help="write the HTML report (a folder, or a .html file)")
    p.add_argument("--amplify", type=float, default=10.0, help="difference-map gain (default 10)")


def _bench_flags(p) -> None:
    BATCH_SIZE.add(p, "--batch-sizes", nargs="+", default=[1])
    p.add_argument("--loops", type=int, default=20, help="timed executions per batch size (default 20, the seed's)")
    p.add_argument("--warmup", type=int, default=1, help="untimed executions first (default 1, as ais_bench)")
    HEIGHT.add(p)
    WIDTH.add(p)
    p.add_argument("--e2e-batches", type=int, default=2, help="end-to-end batches per batch size (0: skip; 2)")
    SEED.add(p)
    JSON.add(p)
    p.add_argument("--chart", metavar="FILE.png", help="draw images/s by runtime and batch size")
    p.add_argument("--merge", nargs="+", metavar="FILE.json",
                   help="earlier bench --json files to put in the same table, JSON and chart")


# ------------------------------------------------------------------------------------------------ parser

@dataclass
class Command:
    """A subcommand: its groups of shared flags, its own flags and the function that calls the library."""

    name: str
    help: str
    func: Callable
    groups: Sequence[ArgGroup] = ()
    flags: Optional[Callable] = None


def commands() -> List[Command]:
    return [
        Command("convert", "gather a Cityscapes gtFine split into test_label/ and test_inst/ (datasets_deal.py)",
                cmd_convert, flags=_convert_flags),
        Command("preprocess", "label/instance PNGs -> 36-channel float32 .bin files (pix2pixhd_preprocess.py)",
                cmd_preprocess, [DataArgs(positional=True, label_nc=True)], _preprocess_flags),
        Command("infer", "run a model over .bin inputs with ais_bench's flags and file layout", cmd_infer,
                [ModelArgs("--model", "--backend", required=True, short=True), AisBenchArgs(),
                 OutputArgs("output root folder"), DeviceArgs(short=True, several=True),
                 RuntimeArgs(dym_batch=True)]),
        Command("export", "checkpoint -> ONNX, checked against PyTorch, with the atc commands (pix2pixhd_pth2onnx.py)",
                cmd_export, [ModelArgs("--checkpoint", required=True, seed_names=True),
                             OutputArgs("the .onnx file to write", required=True, aliases=("--output_file",),
                                        json=True, json_aliases=("--report",)), ExportArgs()]),
        Command("postprocess", "output .bin files -> pictures (pix2pixhd_postprocess.py)", cmd_postprocess,
                flags=_postprocess_flags),
        Command("run", "label maps in, photos out, in one streaming command (no .bin files)", cmd_run,
                [ModelArgs(required=True), DataArgs(label_nc=True), DeviceArgs(),
                 RuntimeArgs(providers=False, fast_convs=True),
                 OutputArgs("folder for the pictures, manifest.json and index.html", required=True,
                            image_format=True, save_raw=True), EngineArgs()], _run_flags),
        Command("serve", "the generator behind an HTTP endpoint (FastAPI): dynamic batching, a page to paint maps, "
                         "Prometheus metrics; --engine ray for Ray Serve replicas", cmd_serve,
                [ModelArgs(required=True), DeviceArgs(),
                 DataArgs(sources=(), label_nc=True, fit=False, maps=False, no_instance=True)], _serve_flags),
        Command("cache", "the model cache run --checkpoint fills: list its graphs, or clear it", cmd_cache,
                [ModelArgs("--cache-dir")], _cache_flags),
        Command("demo", "the whole chain on generated (or your) data, with an index.html", cmd_demo,
                [OutputArgs("folder for everything the demo makes", default="demo_out"),
                 ModelArgs("--checkpoint", checkpoint_default="; default: random weights"),
                 DataArgs(description="your data (default: synthetic scenes)"), DeviceArgs(fp16=False)],
                _demo_flags),
        Command("compare", "two folders of outputs compared with numbers (errors, PSNR, SSIM) and a verdict; an HTML "
                           "report", cmd_compare,
                [ModelArgs("--checkpoint"),
                 DataArgs(sources=("--dataroot",), description="the maps the outputs were made from: label maps for "
                                                               "the report, inputs for --reference upstream")],
                _compare_flags),
        Command("bench", "images/s per batch size: ais_bench's device-only figure and end-to-end, latency, memory, "
                         "JSON and a chart", cmd_bench,
                [ModelArgs("--model", "--backend", short=True), DeviceArgs(short=True), RuntimeArgs(),
                 DataArgs(sources=("--dataroot",), fit=False, maps=False,
                          description="end-to-end inputs (default: synthetic scenes)")], _bench_flags),
    ]


def build_parser(prog: str = "pix2pixhd-deploy") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="pix2pixHD label2city inference: Cityscapes label maps in, street photos out.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    seed_script = prog.endswith(".py")  # a seed script: its usage line names the script, not "script.py convert"
    for command in commands():
        p = sub.add_parser(command.name, help=command.help, **({"prog": prog} if seed_script else {}))
        for group in command.groups:
            group.add_to(p)
        if command.flags is not None:
            command.flags(p)
        p.set_defaults(func=command.func, groups=command.groups)
    return parser


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(prog or "pix2pixhd-deploy")
    args = parser.parse_args(argv)
    args._argv = argv
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        args.opt = parse_groups(args)
        return int(args.func(args) or 0)
    except UserError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("interrupted: finished outputs are kept and no partial file is left; run the same command again to "
              "complete the rest", file=sys.stderr)
        return 130


def run_script(command: str, script: str, argv: Optional[List[str]] = None) -> int:
    """Entry for the seed-compatible scripts: ``python datasets_deal.py ...`` == ``pix2pixhd-deploy convert ...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return main([command, *argv], prog=script)
