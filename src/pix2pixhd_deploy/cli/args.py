"""The flags of ``pix2pixhd-deploy``, each defined once, in groups (after Polygraphy's ``tools/args/``).

A group adds its flags to a subcommand's parser and parses them into one object (``args.opt.<key>``); a subcommand
(:mod:`cli`) is a list of groups plus its own few flags. A flag that several groups or commands share is one
:class:`Flag` below, with one help text. The seed's and ais_bench's spellings (``--load_pretrain``,
``--output_file``, ``--batchsize``, ``--outfmt``, ``--dymBatch``...) are aliases where their commands need them.

Groups: :class:`ModelArgs` (--checkpoint, --model, --backend, --cache-dir), :class:`DeviceArgs` (--device, --fp16),
:class:`RuntimeArgs` (--providers, --provider-option, --intra-op-threads, --dymBatch, --fast-convs),
:class:`DataArgs` (--dataroot/--cityscapes, --label-nc, --instances/--no-instance, --fit), :class:`EngineArgs`
(--engine and the Ray flags), :class:`OutputArgs` (--output, --format, --save-raw, --json); infer's ais_bench flags
are :mod:`cliargs_ais`, export's :class:`ExportArgs`.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Dict, List, Optional, Sequence, Tuple

from ..backends import NAMES
from ..devices import DEVICE_FORMS, parse_device, parse_device_list
from ..errors import UserError
from ..model import forms


def parse_hw(text: str) -> Tuple[int, int]:
    """``H,W`` (ais_bench's --dymHW) or ``HxW``."""
    for sep in (",", "x", "X"):
        if sep in text:
            h, w = text.split(sep, 1)
            try:
                return int(h), int(w)
            except ValueError:
                break
    raise argparse.ArgumentTypeError(f"expected HEIGHT,WIDTH (e.g. 1024,2048), got {text!r}")


class Flag:
    """One flag's names and argparse settings, defined once; ``add`` may change its default, requiredness or
    metavar for a command, and add that command's aliases, never its help."""

    def __init__(self, *names: str, **settings):
        self.names, self.settings = names, settings

    def add(self, parser, *aliases: str, **changes) -> None:
        assert "help" not in changes, "one help text per flag"
        parser.add_argument(*self.names, *aliases, **{**self.settings, **changes})


# ---------------------------------------------------------------------------------- flags shared by commands

FP16 = Flag("--fp16", action="store_true",
            help="half precision (torch on CUDA; an .onnx model with the TensorRT provider; export: an fp16 graph "
                 "whose InstanceNormalization and I/O stay float32)")
PRECISION = Flag("--precision", choices=("fp32", "fp16", "bf16"), default=None,
                 help="torch's precision: fp32 (default; on CUDA with TF32 off, exact), fp16 (the same as --fp16) or "
                      "bf16; in fp16 and bf16 the norms and the last layer stay fp32 (docs/gpu.md: accuracy)")
FAST_CONVS = Flag("--fast-convs", action="store_true",
                  help="the 3x3 convolutions with 256+ channels as Winograd F(2x2,3x3) and the output convolution as "
                       "row sums: faster on CPUs, equal to float rounding (torch at run time; export: in the graph, "
                       "which needs a static size)")
KEEP_GOING = Flag("--keep-going", action="store_true",
                  help="do not stop at a bad input: skip it (no output for it), report the bad ones at the end and "
                       "exit non-zero")
BATCH_SIZE = Flag("--batch-size", type=int, default=1, metavar="N", help="images per execution (default 1)")
SEED = Flag("--seed", type=int, default=0, help="seed of the synthetic street scenes (default 0)")
RAW_SIZE = Flag("--size", type=parse_hw, metavar="H,W",
                help="HEIGHT,WIDTH of raw outputs (default: preprocess's sizes sidecar, the paired picture's, else "
                     "from the file size, 1:2)")
HEIGHT = Flag("--height", type=int, help="input height (default: the model's, else the data's, else 1024)")
WIDTH = Flag("--width", type=int, help="input width (default: the model's, else the data's, else 2048)")
ATOL = Flag("--atol", type=float,
            help="largest max abs error (raw units, or levels for pictures; default: compare's preset: fp32 1e-4)")
MIN_PSNR = Flag("--min-psnr", type=float, help="least PSNR in dB (default: compare's preset: fp16 40)")
JSON = Flag("--json", metavar="FILE.json", help="also write every figure, with the settings, as JSON")
ENGINE = Flag("--engine", choices=("local", "ray"), default="local",
              help="local: this process (default); ray: a Ray cluster (run: a pool of model actors; serve: Ray Serve "
                   "replicas; pip install 'pix2pixhd-deploy[ray]')")
ADDRESS = Flag("--address", default=None,
               help="ray: the cluster, auto or HOST:PORT (default: RAY_ADDRESS, else a local cluster)")
NO_INSTANCE = Flag("--no-instance", action="store_true",
                   help="a model without instance maps (upstream --no_instance; the same as --instances none)")


# ------------------------------------------------------------------------------------------------ groups

class ArgGroup:
    """Adds its flags to a parser (:meth:`add_arguments`) and parses them into one object (:meth:`parse`)."""

    key = ""
    title = ""
    description: Optional[str] = None

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        self.add_arguments(parser.add_argument_group(self.title, self.description))

    def add_arguments(self, group) -> None:
        raise NotImplementedError

    def parse(self, args):
        raise NotImplementedError


def parse_groups(args) -> SimpleNamespace:
    """Each group of the subcommand parsed into its object: ``args.opt.model``, ``args.opt.device``..."""
    return SimpleNamespace(**{g.key: g.parse(args) for g in getattr(args, "groups", ())})


@dataclass
class ModelSpec:
    path: Optional[str]          # --checkpoint or --model
    backend: Optional[str] = None
    cache_dir: Optional[str] = None


class ModelArgs(ArgGroup):
    """--checkpoint, --model, --backend, --cache-dir: the model and the runtime that runs it."""

    key, title = "model", "model"

    def __init__(self, *flags: str, required: bool = False, short: bool = False, seed_names: bool = False,
                 checkpoint_default: Optional[str] = None):
        self.flags = flags or ("--checkpoint", "--model", "--backend", "--cache-dir")
        self.required, self.short, self.seed_names = required, short, seed_names
        self.checkpoint_default = checkpoint_default

    def add_arguments(self, group) -> None:
        one = self.required and not ("--checkpoint" in self.flags and "--model" in self.flags)
        if "--checkpoint" in self.flags:
            names = ("--load_pretrain", "--checkpoint") if self.seed_names else ("--checkpoint",)
            group.add_argument(*names, dest="checkpoint", required=one,
                               help="latest_net_G.pth or the folder that holds it (the architecture is read from the "
                                    f"file){self.checkpoint_default or ''}")
        if "--model" in self.flags:
            group.add_argument("--model", *(("-m",) if self.short else ()), required=one,
                               help="a model file: .pth (or a folder with latest_net_G.pth), .onnx or .om")
        if "--backend" in self.flags:
            group.add_argument("--backend", default=None, choices=NAMES,
                               help="the runtime (default: from the model file's suffix; except that run and "
                                    "serve turn a checkpoint on a CPU into a graph built once into the model cache, "
                                    "run with OpenVINO, else ONNX Runtime)")
        if "--cache-dir" in self.flags:
            group.add_argument("--cache-dir", default=None, help="the model cache (default $XDG_CACHE_HOME/"
                                                                 "pix2pixhd-deploy, else ~/.cache/pix2pixhd-deploy)")

    def parse(self, args) -> ModelSpec:
        checkpoint, model = getattr(args, "checkpoint", None), getattr(args, "model", None)
        if checkpoint and model:
            raise UserError("--checkpoint and --model both given", fix="pass one model")
        path = checkpoint or model
        if path is None and self.required:
            raise UserError("no model given", fix="pass --checkpoint latest_net_G.pth (or --model X.onnx|X.om)")
        return ModelSpec(path, getattr(args, "backend", None), getattr(args, "cache_dir", None))


@dataclass
class DeviceSpec:
    device: Optional[str]
    fp16: bool = False
    devices: List[Optional[str]] = field(default_factory=list)   # infer: one process per device
    bf16: bool = False


class DeviceArgs(ArgGroup):
    """--device (one parser: :mod:`devices`) and --fp16."""

    key, title = "device", "device"

    def __init__(self, *, fp16: bool = True, short: bool = False, several: bool = False):
        self.fp16, self.short, self.several = fp16, short, several

    def add_arguments(self, group) -> None:
        group.add_argument("--device", *(("-d",) if self.short else ()), default=None,
                           help=f"{DEVICE_FORMS}; default: the GPU if torch sees one, else the CPU"
                                + ("; a list such as 0,1 runs one process per device, outputs in "
                                   "OUTPUT_DIRNAME/device<N>" if self.several else ""))
        if self.fp16:
            FP16.add(group)
            PRECISION.add(group)

    def parse(self, args) -> DeviceSpec:
        devices = parse_device_list(args.device) if self.several else [args.device]
        if not self.several:
            parse_device(args.device)
        precision = getattr(args, "precision", None)
        fp16 = bool(getattr(args, "fp16", False))
        if fp16 and precision not in (None, "fp16"):
            raise UserError(f"--fp16 contradicts --precision {precision}", fix="pass one of them")
        return DeviceSpec(args.device, fp16 or precision == "fp16", devices, bf16=precision == "bf16")


@dataclass
class RuntimeOptions:
    providers: Optional[List[str]] = None
    provider_options: Optional[Dict[str, Dict[str, str]]] = None
    intra_op_threads: Optional[int] = None
    dym_batch: Optional[int] = None
    fast_convs: bool = False

    def runner_options(self) -> Dict[str, object]:
        """The options :func:`~pix2pixhd_deploy.runners.make_runner` takes from these flags (None: not given)."""
        return {"providers": self.providers, "provider_options": self.provider_options,
                "intra_op_threads": self.intra_op_threads, "dym_batch": self.dym_batch}


class RuntimeArgs(ArgGroup):
    """The runtime-specific options: ONNX Runtime's providers and threads, ais_bench's --dymBatch, torch's
    --fast-convs."""

    key, title = "runtime", "runtime options"

    def __init__(self, *, providers: bool = True, dym_batch: bool = False, fast_convs: bool = False):
        self.providers, self.dym_batch, self.fast_convs = providers, dym_batch, fast_convs

    def add_arguments(self, group) -> None:
        if self.providers:
            group.add_argument("--providers", help="onnxruntime: providers in priority order, comma-separated, from "
                                                   "cpu, cuda, tensorrt, cann (default cpu; cuda with --device cuda)")
            group.add_argument("--provider-option", action="append", metavar="PROVIDER:KEY=VALUE",
                               help="onnxruntime: a provider option, repeatable, e.g. cuda:device_id=1, "
                                    "tensorrt:trt_fp16_enable=True, cann:precision_mode=force_fp32")
            group.add_argument("--intra-op-threads", type=int,
                               help="onnxruntime, openvino: CPU threads per operator (default: all)")
        if self.dym_batch:
            group.add_argument("--dymBatch", type=int,
                               help="ais_bench: the batch gear of an OM built with --dynamic_batch_size")
        if self.fast_convs:
            FAST_CONVS.add(group)

    def parse(self, args) -> RuntimeOptions:
        provider_options: dict = {}
        for text in getattr(args, "provider_option", None) or []:
            from ..runners.onnxruntime_runner import parse_provider_option

            provider, key, value = parse_provider_option(text)
            provider_options.setdefault(provider, {})[key] = value
        providers = [p for p in (getattr(args, "providers", None) or "").split(",") if p.strip()] or None
        if provider_options and providers is None:
            providers = list(provider_options) + (["cpu"] if "cpu" not in provider_options else [])
        return RuntimeOptions(providers, provider_options or None, getattr(args, "intra_op_threads", None),
                              getattr(args, "dymBatch", None), bool(getattr(args, "fast_convs", False)))


@dataclass
class DataSpec:
    dataroot: Optional[str] = None
    cityscapes: Optional[str] = None
    label_nc: int = 35
    instances: Optional[str] = None     # files | labels | none; None: decided from the data
    fit: str = "resize"


class DataArgs(ArgGroup):
    """Where the label maps come from and how they are read (:mod:`labelmaps`)."""

    key, title = "data", "label maps"

    def __init__(self, *, sources: Sequence[str] = ("--dataroot", "--cityscapes"), positional: bool = False,
                 label_nc: bool = False, fit: bool = True, maps: bool = True, no_instance: bool = False,
                 description: Optional[str] = None):
        """``maps``: --instances and --no-instance; ``no_instance`` alone: only --no-instance (serve)."""
        self.sources, self.positional = sources, positional
        self.label_nc, self.fit, self.maps, self.description = label_nc, fit, maps, description
        self.no_instance = no_instance and not maps

    def add_arguments(self, group) -> None:
        dataroot_help = "a folder with test_label/ (and test_inst/), as upstream's --dataroot"
        if self.positional:
            group.add_argument("dataroot", help=dataroot_help)
        else:
            either = group.add_mutually_exclusive_group() if len(self.sources) > 1 else group
            if "--dataroot" in self.sources:
                either.add_argument("--dataroot", help=dataroot_help)
            if "--cityscapes" in self.sources:
                either.add_argument("--cityscapes", help="a Cityscapes gtFine split folder (e.g. gtFine/val)")
        if self.label_nc:
            group.add_argument("--label-nc", type=int, default=35,
                               help="one-hot channels (upstream --label_nc, default 35)")
        if self.maps:
            group.add_argument("--instances", choices=("files", "labels", "none"), default=None,
                               help="instance maps: files (the <phase>_inst/ PNGs), labels (derived from the label "
                                    "maps: each connected object of a thing class is one instance) or none (a model "
                                    "trained with --no_instance). Default: files when there are instance maps, else "
                                    "labels")
            NO_INSTANCE.add(group)
        elif self.no_instance:
            NO_INSTANCE.add(group)
        if self.fit:
            group.add_argument("--fit", choices=("resize", "pad"), default="resize",
                               help="sizes that are not a multiple of 32: resize (upstream's nearest resize, the "
                                    "default) or pad (edge-replicate the maps to the next multiple, crop the picture "
                                    "back: the picture has the map's size)")

    def parse(self, args) -> DataSpec:
        return DataSpec(getattr(args, "dataroot", None), getattr(args, "cityscapes", None),
                        getattr(args, "label_nc", 35),
                        instances_arg(args) if self.maps else ("none" if getattr(args, "no_instance", False) else None),
                        getattr(args, "fit", "resize"))


def instances_arg(args) -> Optional[str]:
    """--instances, with --no-instance as its alias for none (None: decided from the data)."""
    if args.no_instance and args.instances not in (None, "none"):
        raise UserError(f"--no-instance contradicts --instances {args.instances}",
                        fix="pass one of them (--no-instance is --instances none)")
    return "none" if args.no_instance else args.instances


@dataclass
class EngineSpec:
    engine: str = "local"
    address: Optional[str] = None
    num_workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0

    def ray_options(self) -> Dict[str, object]:
        return {"address": self.address, "num_workers": self.num_workers, "gpus_per_worker": self.gpus_per_worker,
                "cpus_per_worker": self.cpus_per_worker}


class EngineArgs(ArgGroup):
    """Where the work runs: this process (local) or a Ray cluster."""

    key, title = "engine", "engine"
    description = ("where the work runs: this process (local, the default) or a Ray cluster (needs pip install "
                   "'pix2pixhd-deploy[ray]')")

    def add_arguments(self, group) -> None:
        ENGINE.add(group)
        ADDRESS.add(group)
        default = EngineSpec()  # the defaults parse compares with, written once
        group.add_argument("--num-workers", type=int, default=default.num_workers,
                           help=f"ray: model actors, each loads the model once (default {default.num_workers})")
        group.add_argument("--gpus-per-worker", type=float, default=default.gpus_per_worker,
                           help=f"ray: GPUs per model actor (default {default.gpus_per_worker:g})")
        group.add_argument("--cpus-per-worker", type=float, default=default.cpus_per_worker,
                           help=f"ray: CPUs per model actor, also its torch threads (default "
                                f"{default.cpus_per_worker:g})")

    def parse(self, args) -> EngineSpec:
        spec = EngineSpec(args.engine, args.address, args.num_workers, args.gpus_per_worker, args.cpus_per_worker)
        defaults = EngineSpec()
        ray_flags = [f"--{name.replace('_', '-')}" for name in ("address", "num_workers", "gpus_per_worker",
                                                               "cpus_per_worker")
                     if getattr(spec, name) != getattr(defaults, name)]
        if spec.engine == "local" and ray_flags:
            raise UserError(f"{', '.join(ray_flags)} apply only to --engine ray", fix="add --engine ray, or drop them")
        return spec


@dataclass
class OutputSpec:
    path: Optional[str] = None
    image_format: str = "png"
    save_raw: bool = False
    json: Optional[str] = None


class OutputArgs(ArgGroup):
    """--output (what it holds is the command's: ``what``), and the pictures' --format, --save-raw, --json."""

    key, title = "output", "output"

    def __init__(self, what: str, *, required: bool = False, default: Optional[str] = None,
                 aliases: Sequence[str] = (), image_format: bool = False,
                 save_raw: bool = False, json: bool = False, json_aliases: Sequence[str] = ()):
        self.what, self.required, self.default, self.aliases = what, required, default, aliases
        self.image_format, self.save_raw, self.json, self.json_aliases = image_format, save_raw, json, json_aliases

    def add_arguments(self, group) -> None:
        group.add_argument(*self.aliases, "--output", "-o", dest="output",
                           required=self.required, default=self.default,
                           help=self.what + (f" (default {self.default})" if self.default else ""))
        if self.image_format:
            IMAGE_FORMAT.add(group)
        if self.save_raw:
            group.add_argument("--save-raw", action="store_true",
                               help="also write raw outputs as OUTPUT/raw/<name>_0.bin")
        if self.json:
            JSON.add(group, *self.json_aliases)

    def parse(self, args) -> OutputSpec:
        return OutputSpec(args.output, getattr(args, "format", "png"), bool(getattr(args, "save_raw", False)),
                          getattr(args, "json", None))


IMAGE_FORMAT = Flag("--format", default="png", choices=("png", "jpg", "jpeg"),
                    help="picture format: png (lossless, default) or jpg (upstream test.py's JPEG q75)")


class ExportArgs(ArgGroup):
    """export's graph settings, parsed into :class:`~pix2pixhd_deploy.export.ExportOptions`."""

    key, title = "export", "graph"

    def add_arguments(self, g) -> None:
        g.add_argument("--opset", type=int, default=11, help="ONNX opset, 11 (default, the seed's) to 18; atc of "
                                                              "CANN 5/6 takes 9-13 only, 14+ needs CANN 7")
        g.add_argument("--static-batch", type=int, metavar="N",
                       help="a static batch of N (default: a dynamic batch axis, as the seed)")
        HEIGHT.add(g, default=1024)
        WIDTH.add(g, default=2048)
        g.add_argument("--dynamic-hw", action="store_true", help="dynamic height and width (default: static)")
        g.add_argument("--input-format", choices=forms.INPUT_FORMATS, default=forms.TENSOR,
                       help="tensor: the 36-channel float input (the seed's); maps: the uint8 label map and int32 "
                            "instance map (inputs 'label', 'inst'), encoded inside the graph; stems: the outputs of "
                            "the two stem convolutions, which run computes from the maps (fastest on a CPU; writes "
                            "FILE.onnx.stems.npz beside the graph)")
        g.add_argument("--output-format", choices=forms.OUTPUT_FORMATS, default=forms.FLOAT,
                       help="float: the [-1, 1] output (the seed's); uint8: the picture, (N, H, W, 3), as tensor2im")
        g.add_argument("--input-name", default="input_concat", help="graph input name (default input_concat)")
        g.add_argument("--output-name", default="fake_image", help="graph output name (default fake_image)")
        NO_INSTANCE.add(g)
        FP16.add(g)
        g.add_argument("--rewrite-avgpool", action="store_true",
                       help="replace AveragePool(count_include_pad=0), which ATC lacks, by an exact Conv + Div")
        FAST_CONVS.add(g)
        g.add_argument("--winograd-tile", type=int, choices=(2, 4), default=None,
                       help="with --fast-convs: Winograd's output tile, 2 (the default: F(2x2,3x3), as close to "
                            "float64 as the convolution) or 4 (F(4x4,3x3): 44%% fewer products, several times the "
                            "float error, pictures within one level; run's CPU graph)")
        norms = g.add_mutually_exclusive_group()
        norms.add_argument("--exact-norm", dest="exact_norm", action="store_const", const=True, default=None,
                           help="require precise instance norms (two-stage sums; the default for fp32 graphs of a "
                                "static size, so OpenVINO and ONNX Runtime CPU match torch's accuracy at full size)")
        norms.add_argument("--fused-norm", dest="exact_norm", action="store_const", const=False,
                           help="keep the fused InstanceNormalization op, for toolchains that want it: about 10%% "
                                "faster on a CPU, but ONNX Runtime and OpenVINO's one-pass float32 sums put the "
                                "output up to about a level (7.6e-3) from PyTorch at full size; checked to within "
                                "one level")
        ATOL.add(g, "--tolerance")
        MIN_PSNR.add(g)
        g.add_argument("--check-map", metavar="LABEL.png",
                       help="check the graph on this label map (of the export's size) instead of a synthetic street "
                            "scene")
        g.add_argument("--check-inst", metavar="INST.png", help="the instance map of --check-map")
        SEED.add(g)
        g.add_argument("--soc_version", "--soc-version", default="Ascend310P3",
                       help="chip for the printed atc commands, from npu-smi info (default Ascend310P3)")

    def parse(self, args):
        from ..export import ExportOptions

        return ExportOptions(
            opset=args.opset, dynamic_batch=args.static_batch is None, batch=args.static_batch or 1,
            height=args.height, width=args.width, dynamic_hw=args.dynamic_hw, input_name=args.input_name,
            output_name=args.output_name, input_format=args.input_format, output_format=args.output_format,
            use_instance=not args.no_instance, fp16=args.fp16, rewrite_avgpool=args.rewrite_avgpool,
            fast_convs=args.fast_convs, winograd_tile=args.winograd_tile, exact_norm=args.exact_norm,
            tolerance=args.atol, min_psnr=args.min_psnr,
            seed=args.seed, check_map=args.check_map, check_inst=args.check_inst, soc_version=args.soc_version)
