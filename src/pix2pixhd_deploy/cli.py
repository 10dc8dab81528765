"""The ``pix2pixhd-deploy`` command: argument parsing only; every subcommand calls one library function.

A :class:`~pix2pixhd_deploy.errors.UserError` becomes one line on stderr and exit status 2 (a traceback only with
``--debug``); Ctrl-C exits 130 and leaves only complete files behind.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional, Tuple

from . import __version__
from .errors import UserError

log = logging.getLogger("pix2pixhd_deploy")


def _hw(text: str) -> Tuple[int, int]:
    """``H,W`` (ais_bench's --dymHW) or ``HxW``."""
    for sep in (",", "x", "X"):
        if sep in text:
            h, w = text.split(sep, 1)
            try:
                return int(h), int(w)
            except ValueError:
                break
    raise argparse.ArgumentTypeError(f"expected HEIGHT,WIDTH (e.g. 1024,2048), got {text!r}")


def add_map_arguments(p: argparse.ArgumentParser, *, fit: bool = True) -> None:
    """How label maps are read (:mod:`labelmaps`): the instance maps' source and, with ``fit``, the size fit."""
    p.add_argument("--instances", choices=("files", "labels", "none"), default=None,
                   help="instance maps: files (the <phase>_inst/ PNGs), labels (derived from the label maps: each "
                        "connected object of a thing class is one instance) or none (a model trained with "
                        "--no_instance). Default: files when there are instance maps, else labels")
    p.add_argument("--no-instance", action="store_true", help="the same as --instances none (upstream --no_instance)")
    if fit:
        p.add_argument("--fit", choices=("resize", "pad"), default="resize",
                       help="sizes that are not a multiple of 32: resize (upstream's nearest resize, the default) or "
                            "pad (edge-replicate the maps to the next multiple, crop the picture back: the picture "
                            "has the map's size)")


def instances_arg(args) -> Optional[str]:
    """--instances, with --no-instance as its alias for none (None: decided from the data)."""
    if args.no_instance and args.instances not in (None, "none"):
        raise UserError(f"--no-instance contradicts --instances {args.instances}",
                        fix="pass one of them (--no-instance is --instances none)")
    return "none" if args.no_instance else args.instances


# ------------------------------------------------------------------------------------------ subcommands

def cmd_convert(args) -> int:
    from .dataset import convert_cityscapes
    from .fileio import progress

    if args.from_colour and args.link:
        raise UserError("--link cannot be used with --from-colour: the label maps are converted, not copied",
                        fix="drop --link")
    report = convert_cityscapes(args.split_dir, args.inst_dir, args.label_dir, link=args.link,
                                from_colour=args.from_colour, progress_fn=lambda keys: progress(keys, desc="convert"))
    print(f"convert: {report.summary()} -> {args.label_dir}, {args.inst_dir}")
    return 0


def cmd_preprocess(args) -> int:
    from .encoding import preprocess_dataset

    outs = preprocess_dataset(args.dataroot, args.out_dir, label_nc=args.label_nc, instances=instances_arg(args),
                              fit=args.fit, base=args.size_multiple, phase=args.phase, keep_going=args.keep_going)
    print(f"preprocess: {len(outs)} input tensors in {args.out_dir}")
    return 0


def cmd_infer(args) -> int:
    from .infer import format_summary, parse_devices, run_inference, run_on_devices
    from .runners import make_runner

    _refuse_ais_bench_flags(args)
    hw = args.dymHW
    runner_args = dict(model=args.model, backend=args.backend, fp16=args.fp16, **_runtime_options(args),
                       **({"height": hw[0], "width": hw[1]} if hw and args.static_hw else {}))
    options = dict(inputs=args.input, output=args.output, output_dirname=args.output_dirname, outfmt=args.outfmt,
                   batchsize=args.batchsize, loop=args.loop, warmup_count=args.warmup_count, hw=hw,
                   keep_going=args.keep_going, output_batchsize_axis=args.output_batchsize_axis,
                   debug=bool(args.ais_debug))
    argv = [Path(sys.argv[0]).name] + list(args._argv)
    devices = parse_devices(args.device)
    if len(devices) > 1:
        results = run_on_devices(devices, runner_args, options, argv, display_all=args.display_all_summary)
        for i, r in enumerate(results):
            print(r["summary_text"])
            print(f"[INFO] i:{i} device_{r['device']} throughput:{r['throughput']:.4f} "
                  f"start_time:{r['start_time']:.4f} end_time:{r['end_time']:.4f}")
        print(f"[INFO] summary throughput:{sum(r['throughput'] for r in results):.4f}")
        return 0
    with make_runner(device=args.device, **runner_args) as runner:
        result = run_inference(runner, argv=argv, **options)
    print(format_summary(result, display_all=args.display_all_summary))
    if result.output_dir is not None:
        print(f"infer: {len(result.outputs)} outputs in {result.output_dir}, summary {result.summary_path}")
    else:
        print(f"infer: {result.samples} samples run; nothing saved (no --output, as ais_bench)")
    return 0


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


def _refuse_ais_bench_flags(args) -> None:
    for flag, why in AIS_BENCH_FLAGS_LEFT_OUT.items():
        if getattr(args, "left_out_" + flag.lstrip("-"), None) is not None:
            raise UserError(f"{flag} is an ais_bench flag that pix2pixhd-deploy infer does not take: {why}",
                            fix=f"drop {flag}")
    if args.pure_data_type not in (None, "zero"):
        raise UserError(f"--pure_data_type {args.pure_data_type} is not supported: pure inference runs on zeros "
                        "(ais_bench's default)", fix="drop --pure_data_type or pass zero")


def _runtime_options(args) -> dict:
    """The runtime-specific infer flags as ``make_runner`` options (None: not given)."""
    from .runners.onnxruntime_runner import parse_provider_option

    provider_options: dict = {}
    for text in getattr(args, "provider_option", None) or []:
        provider, key, value = parse_provider_option(text)
        provider_options.setdefault(provider, {})[key] = value
    providers = [p for p in (args.providers or "").split(",") if p.strip()] or None
    if provider_options and providers is None:
        providers = list(provider_options) + (["cpu"] if "cpu" not in provider_options else [])
    return {"providers": providers, "provider_options": provider_options or None,
            "intra_op_threads": args.intra_op_threads, "dym_batch": args.dymBatch}


def cmd_export(args) -> int:
    import json

    from .export import ExportOptions, export_onnx
    from .fileio import atomic_write_text

    options = ExportOptions(
        opset=args.opset, dynamic_batch=args.static_batch is None, batch=args.static_batch or 1, height=args.height,
        width=args.width, dynamic_hw=args.dynamic_hw, input_name=args.input_name, output_name=args.output_name,
        input_format=args.input_format, output_format=args.output_format, use_instance=not args.no_instance,
        fp16=args.fp16, rewrite_avgpool=args.rewrite_avgpool, fast_convs=args.fast_convs, exact_norm=args.exact_norm,
        tolerance=args.tolerance, min_psnr=args.min_psnr, seed=args.seed, check_map=args.check_map,
        check_inst=args.check_inst, soc_version=args.soc_version)
    report = export_onnx(args.load_pretrain, args.output_file, options)
    print("\n".join(report.lines()))
    if args.report:
        atomic_write_text(args.report, json.dumps(report.to_dict(), indent=2))
    return 0


def cmd_postprocess(args) -> int:
    from .postprocess import postprocess_dir

    outs = postprocess_dir(args.bin_dir, args.out_dir, fmt=args.format, hw=args.size, sizes=args.sizes)
    print(f"postprocess: {len(outs)} pictures in {args.out_dir}")
    return 0


def cmd_run(args) -> int:
    from .choose import choose
    from .dataset import map_sizes
    from .pipeline import RunSettings, discover, open_runner, run
    from .runners import check_options

    model = args.checkpoint or args.model
    if model is None:
        raise UserError("no model given", fix="pass --checkpoint latest_net_G.pth (or --model X.onnx|X.om)")
    ray_flags = [flag for flag, given in (("--address", args.address is not None),
                                          ("--num-workers", args.num_workers != 1),
                                          ("--gpus-per-worker", args.gpus_per_worker != 0),
                                          ("--cpus-per-worker", args.cpus_per_worker != 1)) if given]
    if args.engine == "local" and ray_flags:
        raise UserError(f"{', '.join(ray_flags)} apply only to --engine ray", fix="add --engine ray, or drop them")
    pairs, instances = discover(args.dataroot, args.cityscapes, instances=instances_arg(args))
    use_instance = instances != "none"
    choice = choose(model, backend=args.backend, device=args.device, fp16=args.fp16, fast_convs=args.fast_convs,
                    save_raw=args.save_raw, label_nc=args.label_nc, use_instance=use_instance,
                    sizes=map_sizes(pairs, fit=args.fit), cache_dir=args.cache_dir)
    check_options(choice.backend, {"fast_convs": args.fast_convs})  # before any work, for the Ray engine too
    log.info("%s", choice.reason)
    settings = RunSettings.from_choice(choice, device=args.device, fp16=args.fp16, batch_size=args.batch_size,
                                       image_format=args.format, save_raw=args.save_raw, label_nc=args.label_nc,
                                       use_instance=use_instance, streams=args.streams,
                                       fast_convs=args.fast_convs, cache_dir=args.cache_dir, instances=instances,
                                       fit=args.fit)
    if args.engine == "ray":
        from .ray_engine import run_ray

        report = run_ray(pairs, args.output, settings, address=args.address, num_workers=args.num_workers,
                         gpus_per_worker=args.gpus_per_worker, cpus_per_worker=args.cpus_per_worker,
                         keep_going=args.keep_going)
        print(report.summary())
        return 0
    report = run(pairs, args.output, lambda: open_runner(settings, choice), settings, keep_going=args.keep_going,
                 workers=args.workers, choice=choice.describe())
    print(report.summary())
    return 0


def cmd_serve(args) -> int:
    from .serve.options import parse_serve_arguments

    options, limits, ray = parse_serve_arguments(args)
    if ray is not None:
        from .serve.ray_serve import serve_ray

        serve_ray(options, limits, ray, host=args.host, port=args.port)
    else:
        from .serve.server import serve

        serve(options, limits, host=args.host, port=args.port)
    return 0


def cmd_cache(args) -> int:
    from .cache import cache_root, clear, list_entries
    from .fileio import format_bytes

    root = cache_root(args.cache_dir)
    if args.action == "clear":
        print(f"cache: {format_bytes(clear(root))} freed in {root}")
        return 0
    entries = list_entries(root)
    for e in entries:
        key = e["key"]
        what = (f"{key.get('runtime')} {key.get('width')}x{key.get('height')} {key.get('output_format')}, checkpoint "
                f"{str(key.get('checkpoint_sha256'))[:12]}" if key else "incomplete entry")
        print(f"{e['folder']}  {format_bytes(e['bytes'])}  {what}{'' if e['usable'] else '  (unusable: rebuilt on use)'}")
    print(f"cache: {len(entries)} graphs, {format_bytes(sum(e['bytes'] for e in entries))} in {root}")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    report = run_demo(args.output, checkpoint=args.checkpoint, dataroot=args.dataroot, cityscapes=args.cityscapes,
                      num_images=args.num_images, size=args.size, seed=args.seed, device=args.device,
                      batchsize=args.batchsize, instances=instances_arg(args), fit=args.fit)
    print(report)
    return 0


def cmd_compare(args) -> int:
    import json
    import tempfile

    from .compare import compare_dirs
    from .fileio import atomic_write_text

    folder_b, scratch = args.b, None
    if args.reference == "upstream":
        from .upstream import make_upstream_outputs

        if not args.checkpoint or not args.dataroot:
            raise UserError("--reference upstream needs --checkpoint and --dataroot",
                            fix="pass the checkpoint and the data root (with test_label/) that folder A was made from")
        if folder_b is None:
            scratch = tempfile.TemporaryDirectory(prefix="pix2pixhd-upstream-")
            folder_b = scratch.name
        made = make_upstream_outputs(args.checkpoint, args.dataroot, folder_b, fmt=args.reference_format,
                                     instances=instances_arg(args), fit=args.fit)
        print(f"upstream reference: {len(made)} pictures made by NVIDIA's code in {folder_b}")
    elif folder_b is None:
        raise UserError("compare needs two folders", fix="pass A and B, or --reference upstream with --checkpoint "
                                                         "and --dataroot")
    report = None
    if args.report:
        from .compare_report import CompareReport, label_maps

        report = CompareReport(args.report, labels=label_maps(args.dataroot) if args.dataroot else None,
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


def cmd_bench(args) -> int:
    import json

    from .bench import draw_chart, format_tables, merge_reports, run_bench
    from .fileio import atomic_write_text

    if not args.model and not args.merge:
        raise UserError("nothing to benchmark", fix="pass --model M (and --merge earlier --json files to combine)")
    report = None
    if args.model:
        report = run_bench(args.model, backend=args.backend, device=args.device, fp16=args.fp16,
                           batch_sizes=args.batch_sizes, loops=args.loops, warmup=args.warmup, height=args.height,
                           width=args.width, dataroot=args.dataroot, e2e_batches=args.e2e_batches, seed=args.seed,
                           **_runtime_options(args))
    if args.merge:
        others = []
        for path in args.merge:
            try:
                others.append((path, json.loads(Path(path).read_text())))
            except (OSError, ValueError) as exc:
                raise UserError(f"cannot read this bench JSON ({exc})", path=path,
                                fix="pass files written by pix2pixhd-deploy bench --json") from exc
        report = merge_reports(report, others)
    print(format_tables(report))
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
        print(f"figures: {args.json}")
    if args.chart:
        print(f"chart: {draw_chart(report, args.chart)}")
    return 0


# ------------------------------------------------------------------------------------------------ parser

def _bool01(text: str) -> bool:
    """ais_bench's boolean flags: 1/0, true/false."""
    if text.lower() in ("1", "true"):
        return True
    if text.lower() in ("0", "false"):
        return False
    raise argparse.ArgumentTypeError(f"expected 1 or 0, got {text!r}")


def add_infer_arguments(p: argparse.ArgumentParser) -> None:
    """ais_bench's flags (``python3 -m ais_bench ...``), so the seed's command works with the program renamed."""
    p.add_argument("--model", "-m", required=True,
                   help="model: .pth (or a folder with latest_net_G.pth), .onnx (ONNX Runtime) or .om (ais_bench)")
    p.add_argument("--input", "-i", help="one folder (or file) per model input, comma-separated; a one-input model "
                                         "also takes a list of .bin files; omit for pure inference")
    p.add_argument("--output", "-o", help="output root folder")
    p.add_argument("--output_dirname", help="subfolder of --output for the outputs (default: a timestamp)")
    p.add_argument("--outfmt", default="BIN", type=str.upper, choices=("BIN", "NPY", "TXT"))
    p.add_argument("--batchsize", type=int, help="inputs per execution for a dynamic-batch model (default 1)")
    p.add_argument("--loop", "-l", type=int, default=1, help="executions per batch (timed)")
    p.add_argument("--warmup_count", type=int, default=1, help="untimed executions first (ais_bench default 1)")
    p.add_argument("--device", "-d", default=None,
                   help="cpu, cuda, cuda:N, or a device number as ais_bench takes it (default: GPU if any); a list "
                        "such as 0,1 runs one process per device, outputs in OUTPUT_DIRNAME/device<N>")
    p.add_argument("--dymHW", type=_hw, help="input HEIGHT,WIDTH (default: from the file size, 1:2 aspect)")
    p.add_argument("--backend", default=None, help="runtime; default from the model file's suffix")
    p.add_argument("--fp16", action="store_true", help="half precision (torch on CUDA; TensorRT for .onnx)")
    p.add_argument("--dymBatch", type=int, help="ais_bench: the batch gear of an OM built with --dynamic_batch_size")
    p.add_argument("--providers", help="onnxruntime: providers in priority order, comma-separated, from cpu, "
                                       "cuda, tensorrt, cann (default cpu; cuda with --device cuda)")
    p.add_argument("--provider-option", action="append", metavar="PROVIDER:KEY=VALUE",
                   help="onnxruntime: a provider option, repeatable, e.g. cuda:device_id=1, "
                        "tensorrt:trt_fp16_enable=True, cann:precision_mode=force_fp32")
    p.add_argument("--intra-op-threads", type=int, help="onnxruntime: CPU threads per operator (default: all)")
    p.add_argument("--keep-going", action="store_true",
                   help="do not stop at a bad input: skip it, report the bad ones at the end and exit non-zero")
    p.add_argument("--debug", dest="ais_debug", type=int, choices=(0, 1), default=0, metavar="{0,1}",
                   help="ais_bench's --debug: 1 logs the model's inputs and output and each execution's time")
    p.add_argument("--display_all_summary", type=_bool01, nargs="?", const=True, default=False,
                   help="also print the H2D/D2H lines (shown as not measured: the runners time the execution)")
    p.add_argument("--output_batchsize_axis", type=int, default=0,
                   help="the output axis split into one file per sample (default 0)")
    p.add_argument("--pure_data_type", choices=("zero", "random"), default=None, help=argparse.SUPPRESS)
    for flag in AIS_BENCH_FLAGS_LEFT_OUT:
        p.add_argument(flag, dest="left_out_" + flag.lstrip("-"), nargs="?", const="", default=None,
                       help=argparse.SUPPRESS)
    p.set_defaults(static_hw=False)


def build_parser(prog: str = "pix2pixhd-deploy") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="pix2pixHD label2city inference: Cityscapes label maps in, street photos out.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if prog.endswith(".py"):  # a seed script: its usage line names the script, not "script.py convert"
        add = sub.add_parser
        sub.add_parser = lambda name, **kw: add(name, **{"prog": prog, **kw})  # type: ignore[method-assign]

    p = sub.add_parser("convert", help="gather a Cityscapes gtFine split into test_label/ and test_inst/ "
                                       "(datasets_deal.py)")
    p.add_argument("inst_dir", help="output folder for *_gtFine_instanceIds.png (e.g. DATAROOT/test_inst)")
    p.add_argument("label_dir", help="output folder for *_gtFine_labelIds.png (e.g. DATAROOT/test_label)")
    p.add_argument("split_dir", help="a gtFine split folder whose subfolders are cities (e.g. gtFine/val)")
    p.add_argument("--link", action="store_true", help="symlink instead of copying")
    p.add_argument("--from-colour", "--from-color", action="store_true",
                   help="the label maps are Cityscapes colour maps (the split's *_gtFine_color.png, or any folder "
                        "of painted masks): write them as *_gtFine_labelIds.png ids; instance maps are copied "
                        "when there are any")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("preprocess", help="label/instance PNGs -> 36-channel float32 .bin files "
                                          "(pix2pixhd_preprocess.py)")
    p.add_argument("dataroot", help="folder holding test_label/ and test_inst/")
    p.add_argument("out_dir", help="folder for <label stem>.bin")
    p.add_argument("--label-nc", type=int, default=35, help="one-hot channels (upstream --label_nc, default 35)")
    add_map_arguments(p)
    p.add_argument("--phase", default="test", help="reads <phase>_label and <phase>_inst (default test)")
    p.add_argument("--size-multiple", type=int, default=32,
                   help="snap sizes to a multiple of this, as upstream (32 for netG local, 16 for global)")
    p.add_argument("--keep-going", action="store_true",
                   help="do not stop at a bad pair: write no .bin for it, report the bad ones at the end and exit "
                        "non-zero")
    p.set_defaults(func=cmd_preprocess)

    p = sub.add_parser("infer", help="run a model over .bin inputs with ais_bench's flags and file layout")
    add_infer_arguments(p)
    p.set_defaults(func=cmd_infer)

    p = sub.add_parser("export", help="checkpoint -> ONNX, checked against PyTorch, with the atc commands "
                                      "(pix2pixhd_pth2onnx.py)")
    p.add_argument("--load_pretrain", "--checkpoint", required=True,
                   help="latest_net_G.pth or the folder holding it (the architecture is read from the file)")
    p.add_argument("--output_file", "--output", "-o", required=True, help="the .onnx file to write")
    p.add_argument("--opset", type=int, default=11, help="ONNX opset, 11 (default, the seed's) to 18; atc of CANN 5/6 takes 9-13 only, "
                                                      "14+ needs CANN 7")
    p.add_argument("--static-batch", type=int, metavar="N",
                   help="a static batch of N (default: a dynamic batch axis, as the seed)")
    p.add_argument("--height", type=int, default=1024, help="input height (default 1024)")
    p.add_argument("--width", type=int, default=2048, help="input width (default 2048)")
    p.add_argument("--dynamic-hw", action="store_true", help="dynamic height and width (default: static)")
    p.add_argument("--input-name", default="input_concat", help="graph input name (default input_concat)")
    p.add_argument("--output-name", default="fake_image", help="graph output name (default fake_image)")
    p.add_argument("--fp16", action="store_true",
                   help="fp16 weights and compute, InstanceNormalization and the I/O kept float32")
    p.add_argument("--rewrite-avgpool", action="store_true",
                   help="replace AveragePool(count_include_pad=0), which ATC lacks, by an exact Conv + Div")
    p.add_argument("--fast-convs", action="store_true",
                   help="CPU speed: the 3x3 convolutions with 256+ channels as Winograd F(2x2,3x3) and the output "
                        "convolution as row sums, same arithmetic to float rounding (needs a static size)")
    norms = p.add_mutually_exclusive_group()
    norms.add_argument("--exact-norm", dest="exact_norm", action="store_const", const=True, default=None,
                       help="require precise instance norms (two-stage sums; the default for fp32 graphs of a static "
                            "size, so OpenVINO and ONNX Runtime CPU match torch's accuracy at full size)")
    norms.add_argument("--fused-norm", dest="exact_norm", action="store_const", const=False,
                       help="keep the fused InstanceNormalization op, for toolchains that want it: about 10%% faster "
                            "on a CPU, but ONNX Runtime and OpenVINO's one-pass float32 sums put the output up to "
                            "about a level (7.6e-3) from PyTorch at full size; checked to within one level")
    p.add_argument("--tolerance", type=float, default=None,
                   help="max abs error allowed against PyTorch for fp32 (default: compare's fp32 preset, 1e-4)")
    p.add_argument("--min-psnr", type=float, default=None,
                   help="least PSNR in dB for --fp16 (default: compare's fp16 preset, 40)")
    p.add_argument("--check-map", metavar="LABEL.png",
                   help="check the graph on this label map (of the export's size) instead of a synthetic street "
                        "scene")
    p.add_argument("--check-inst", metavar="INST.png", help="the instance map of --check-map")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic street scene of the check (default 0)")
    p.add_argument("--soc_version", "--soc-version", default="Ascend310P3",
                   help="chip for the printed atc commands, from npu-smi info (default Ascend310P3)")
    p.add_argument("--input-format", choices=("tensor", "maps", "stems"), default="tensor",
                   help="tensor: the 36-channel float input (the seed's); maps: the uint8 label map and int32 "
                        "instance map (inputs 'label', 'inst'), encoded inside the graph; stems: the outputs of "
                        "the two stem convolutions, which run computes from the maps (fastest on a CPU; writes "
                        "FILE.onnx.stems.npz beside the graph)")
    p.add_argument("--output-format", choices=("float", "uint8"), default="float",
                   help="float: the [-1, 1] output (the seed's); uint8: the picture, (N, H, W, 3), as tensor2im")
    p.add_argument("--no-instance", action="store_true",
                   help="with --input-format maps: the model has no edge channel (upstream --no_instance)")
    p.add_argument("--report", metavar="FILE.json", help="also write the export report as JSON")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("postprocess", help="output .bin files -> pictures (pix2pixhd_postprocess.py)")
    p.add_argument("bin_dir", help="folder of output .bin files (e.g. ./result/bs1)")
    p.add_argument("out_dir", help="folder for <stem>generated.png")
    p.add_argument("--format", default="png", choices=("png", "jpg", "jpeg"),
                   help="png (lossless, default) or jpg (upstream test.py's JPEG q75)")
    p.add_argument("--size", type=_hw, help="HEIGHT,WIDTH of the outputs (default: from the sizes sidecar, else from "
                                            "the file size, 1:2)")
    p.add_argument("--sizes", metavar="pix2pixhd_sizes.json",
                   help="the sidecar preprocess wrote beside the .bin inputs: each output's size, cropped back to its "
                        "label map's with --fit pad (default: found through BIN_DIR's _summary.json)")
    p.set_defaults(func=cmd_postprocess)

    p = sub.add_parser("run", help="label maps in, photos out, in one streaming command (no .bin files)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--dataroot", help="a folder with test_label/ and test_inst/")
    src.add_argument("--cityscapes", help="a Cityscapes gtFine split folder (e.g. gtFine/val)")
    p.add_argument("--checkpoint", help="latest_net_G.pth or the folder that holds it")
    p.add_argument("--model", help="a model file: .pth, .onnx or .om (instead of --checkpoint)")
    p.add_argument("--output", "-o", required=True, help="folder for the pictures, manifest.json and index.html")
    p.add_argument("--backend", default=None, choices=("torch", "onnxruntime", "openvino", "ais_bench"),
                   help="the runtime (default: the fastest exact path here: for a checkpoint on a CPU, a graph built "
                        "once into the model cache, run with OpenVINO, else ONNX Runtime; torch on a GPU; for a "
                        ".onnx or .om file, from its suffix)")
    p.add_argument("--cache-dir", default=None,
                   help="the model cache (default $XDG_CACHE_HOME/pix2pixhd-deploy, else ~/.cache/pix2pixhd-deploy)")
    p.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default 1)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or a device number (default: GPU if any)")
    p.add_argument("--fp16", action="store_true", help="half precision (torch on CUDA)")
    p.add_argument("--format", default="png", choices=("png", "jpg", "jpeg"), help="picture format (png)")
    p.add_argument("--save-raw", action="store_true", help="also write raw outputs as OUTPUT/raw/<name>_0.bin")
    p.add_argument("--keep-going", action="store_true",
                   help="do not stop at a bad image: report the bad ones at the end and exit non-zero")
    p.add_argument("--workers", type=int, default=2, help="threads decoding PNGs ahead of the compute (2)")
    p.add_argument("--streams", type=int, default=1,
                   help="batches computed at once, the CPU cores shared among them (default 1)")
    p.add_argument("--fast-convs", action="store_true",
                   help="torch: the 1024-channel 3x3 convolutions as Winograd F(2x2,3x3) and the output convolution "
                        "as row sums, faster on CPUs, equal to float rounding (an ONNX graph gets them from "
                        "export --fast-convs)")
    p.add_argument("--label-nc", type=int, default=35, help="one-hot channels (upstream --label_nc, default 35)")
    add_map_arguments(p)
    eng = p.add_argument_group("engine", "where the work runs: this process (local, the default) or a Ray cluster "
                                         "(needs pip install 'pix2pixhd-deploy[ray]')")
    eng.add_argument("--engine", choices=("local", "ray"), default="local",
                     help="local: threads in this process (default); ray: a pool of model actors on a Ray cluster")
    eng.add_argument("--address", default=None,
                     help="ray: the cluster, auto or HOST:PORT (default: RAY_ADDRESS, else a local cluster)")
    eng.add_argument("--num-workers", type=int, default=1,
                     help="ray: model actors, each loads the model once (default 1; --workers is decode threads)")
    eng.add_argument("--gpus-per-worker", type=float, default=0.0, help="ray: GPUs per model actor (default 0)")
    eng.add_argument("--cpus-per-worker", type=float, default=1.0,
                     help="ray: CPUs per model actor, also its torch threads (default 1)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("serve", help="the generator behind an HTTP endpoint (FastAPI): dynamic batching, a page to "
                                     "paint maps, Prometheus metrics; --engine ray for Ray Serve replicas")
    from .serve.options import add_serve_arguments

    add_serve_arguments(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("cache", help="the model cache run --checkpoint fills: list its graphs, or clear it")
    p.add_argument("action", choices=("list", "clear"), help="list: each graph, its size and key; clear: remove all")
    p.add_argument("--cache-dir", default=None, help="the cache folder (default: run's default)")
    p.set_defaults(func=cmd_cache)

    p = sub.add_parser("demo", help="the whole chain on generated (or your) data, with an index.html")
    p.add_argument("--output", default="demo_out", help="folder for everything the demo makes (default demo_out)")
    p.add_argument("--checkpoint", help="a real latest_net_G.pth (or its folder); default: random weights")
    p.add_argument("--dataroot", help="your data: a folder with test_label/ and test_inst/")
    p.add_argument("--cityscapes", help="your data: a Cityscapes gtFine split folder (e.g. gtFine/val)")
    p.add_argument("--num-images", type=int, default=3, help="synthetic scenes to make (default 3)")
    p.add_argument("--size", type=_hw, default=(1024, 2048), help="synthetic scene HEIGHT,WIDTH (1024,2048)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: GPU if any)")
    p.add_argument("--batchsize", type=int, default=1)
    add_map_arguments(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("compare", help="two folders of outputs compared with numbers (errors, PSNR, SSIM) and a "
                                       "verdict; an HTML report")
    p.add_argument("a", help="folder A: raw outputs (.bin/.npy from infer or ais_bench) or pictures (.png/.jpg)")
    p.add_argument("b", nargs="?", help="folder B, the reference; with --reference upstream, the folder NVIDIA's "
                                        "outputs are written to (default: a temporary one)")
    p.add_argument("--reference", choices=("upstream",),
                   help="make B with NVIDIA's own code (pip install --no-deps pix2pixhd==1.0) from --checkpoint "
                        "and --dataroot")
    p.add_argument("--checkpoint", help="--reference upstream: latest_net_G.pth or its folder")
    p.add_argument("--dataroot", help="the folder with test_label/ (and test_inst/) the outputs were made from: "
                                      "label maps for the report, inputs for --reference upstream")
    p.add_argument("--reference-format", choices=("png", "jpg"), default="png",
                   help="--reference upstream: png (lossless, default) or jpg (test.py's JPEG q75)")
    add_map_arguments(p)
    p.add_argument("--preset", choices=("fp32", "fp16", "jpeg"),
                   help="tolerances (default: jpeg if any JPEG, else fp32)")
    p.add_argument("--atol", type=float, help="largest max abs error (raw units, or levels for pictures)")
    p.add_argument("--min-psnr", type=float, help="least PSNR in dB")
    p.add_argument("--min-ssim", type=float, help="least SSIM")
    p.add_argument("--max-diff-share", type=float, help="largest share (0..1) of pixels more than one level off")
    p.add_argument("--size", type=_hw, help="HEIGHT,WIDTH of raw outputs (default: the paired picture's, else 1:2)")
    p.add_argument("--allow-missing", action="store_true", help="compare the pairs there are; unpaired files only "
                                                                "warn")
    p.add_argument("--json", metavar="FILE.json", help="write every figure as JSON")
    p.add_argument("--report", metavar="DIR_OR_HTML", help="write the HTML report (a folder, or a .html file)")
    p.add_argument("--amplify", type=float, default=10.0, help="difference-map gain (default 10)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("bench", help="images/s per batch size: ais_bench's device-only figure and end-to-end, "
                                     "latency, memory, JSON and a chart")
    p.add_argument("--model", "-m", help="model: .pth (or its folder), .onnx or .om")
    p.add_argument("--backend", default=None, help="runtime; default from the model file's suffix")
    p.add_argument("--device", "-d", default=None, help="cpu, cuda, cuda:N or a device number (default: GPU if any)")
    p.add_argument("--fp16", action="store_true", help="half precision (torch on CUDA; TensorRT for .onnx)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1], metavar="N", help="e.g. 1 4 8 (default 1)")
    p.add_argument("--loops", type=int, default=20, help="timed executions per batch size (default 20, the seed's)")
    p.add_argument("--warmup", type=int, default=1, help="untimed executions first (default 1, as ais_bench)")
    p.add_argument("--height", type=int, help="input height (default: the model's, the data's, or 1024)")
    p.add_argument("--width", type=int, help="input width (default: the model's, the data's, or 2048)")
    p.add_argument("--dataroot", help="end-to-end inputs: a folder with test_label/ and test_inst/ (default: "
                                      "synthetic scenes)")
    p.add_argument("--e2e-batches", type=int, default=2, help="end-to-end batches per batch size (0: skip; 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic scenes")
    p.add_argument("--json", metavar="FILE.json", help="write every figure, the machine, versions and settings")
    p.add_argument("--chart", metavar="FILE.png", help="draw images/s by runtime and batch size")
    p.add_argument("--merge", nargs="+", metavar="FILE.json",
                   help="earlier bench --json files to put in the same table, JSON and chart")
    p.add_argument("--providers", help="onnxruntime: providers in priority order, e.g. tensorrt,cuda")
    p.add_argument("--provider-option", action="append", metavar="PROVIDER:KEY=VALUE",
                   help="onnxruntime: a provider option, repeatable")
    p.add_argument("--intra-op-threads", type=int, help="onnxruntime: CPU threads per operator (default: all)")
    p.set_defaults(func=cmd_bench, dymBatch=None)
    return parser


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(prog or "pix2pixhd-deploy")
    args = parser.parse_args(argv)
    args._argv = argv
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
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
