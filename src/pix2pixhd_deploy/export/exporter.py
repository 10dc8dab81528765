"""``export_onnx``: the steps of an export, in order. Nothing is written under the final name until the graph has
passed ``onnx.checker``, strict shape inference and the check against PyTorch (:mod:`.verify`)."""
from __future__ import annotations

import dataclasses
import inspect
import io
import json
import logging
import time
import warnings
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch
from torch import nn

from ..errors import PathLike, UserError
from ..fileio import atomic_write_bytes, ensure_output_dir
from ..model import forms
from ..model.network import LoadedGenerator, generator_input_size, load_generator
from .formats import GraphFormat
from .options import ExportOptions
from .report import ExportReport, atc_commands
from .rewrites import input_channels, rewrite_for_export, to_fp16
from .verify import VERIFY_DYNAMIC_HW, check_graph, failure_error, verify_graph

log = logging.getLogger(__name__)

ModelLike = Union[nn.Module, LoadedGenerator, PathLike]


def export_onnx(model: ModelLike, output_file: PathLike, options: Optional[ExportOptions] = None,
                **settings) -> ExportReport:
    """Export ``model`` (a module, a loaded checkpoint, or a ``latest_net_G.pth`` / its folder) to ``output_file``.

    ``options`` is an :class:`ExportOptions`; keyword ``settings`` are its fields (they replace ``options``' ones),
    so ``export_onnx(ck, "g.onnx", height=512, width=1024)`` works as well. Returns the :class:`ExportReport`;
    raises :class:`UserError` when a setting is impossible or the graph does not match PyTorch.
    """
    start = time.perf_counter()
    options = dataclasses.replace(options, **settings) if options else ExportOptions(**settings)
    out_path = _output_path(output_file)
    _require_onnx()
    loaded = model if isinstance(model, LoadedGenerator) else (
        LoadedGenerator(model, None) if isinstance(model, nn.Module) else load_generator(model))
    channels, trace_hw = _sizes(loaded, options)
    ensure_output_dir(out_path.parent, what="folder for the ONNX file")
    fmt = GraphFormat.of(options, loaded.model, channels)

    rewritten, counts = rewrite_for_export(loaded.model, options)
    proto = _trace(fmt.module(rewritten), fmt, options, trace_hw)
    del rewritten
    report = _describe(proto, out_path, options, fmt, counts, loaded)
    data = proto.SerializeToString()
    del proto

    if options.verify:
        _verify(report, data, loaded.model, fmt, options, trace_hw)
    report.notes += list(options.notes())
    atc_in, layout = fmt.atc_inputs((options.height, options.width))
    report.atc_commands = atc_commands(out_path, input_name=options.input_name, channels=channels,
                                       height=options.height, width=options.width, soc_version=options.soc_version,
                                       batch=None if options.dynamic_batch else options.batch, inputs=atc_in,
                                       layout=layout)
    if fmt.stem_weights is not None:
        from ..model.stems import sidecar_path

        fmt.stem_weights.save(sidecar_path(out_path), checkpoint_sha256=report.provenance["checkpoint_sha256"])
        report.notes.append(f"the stem weights are in {sidecar_path(out_path).name} beside the graph: keep the two "
                            "files together; `run` computes the stems from the maps and feeds the graph")
    atomic_write_bytes(out_path, data)
    report.seconds = time.perf_counter() - start
    log.info("wrote %s", out_path)
    return report


def _output_path(output_file: PathLike) -> Path:
    out_path = Path(output_file)
    if out_path.is_dir():
        raise UserError("the output is an existing folder", path=out_path, fix="pass a file name, e.g. pix2pixhd.onnx")
    if out_path.suffix.lower() != ".onnx":
        log.warning("%s does not end in .onnx; ATC and most tools expect it to", out_path)
    return out_path


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise UserError(f"exporting needs the Python package {exc.name!r}, which is not installed",
                        fix="pip install onnx onnxruntime onnxconverter-common "
                            "(or pip install 'pix2pixhd-deploy[onnx]')") from exc


def _sizes(loaded: LoadedGenerator, options: ExportOptions) -> Tuple[int, Tuple[int, int]]:
    """(input channels, traced size): the static size, or for a dynamic-H/W graph its (smaller) check size."""
    config = loaded.config
    channels = config.input_nc if config else input_channels(loaded.model)
    trace_hw = (options.height, options.width)
    if config:
        generator_input_size(config, *trace_hw)
    if options.dynamic_hw:
        m = config.size_multiple if config else 32
        trace_hw = options.verify_hw or (max(m, min(options.height, VERIFY_DYNAMIC_HW[0]) // m * m),
                                         max(m, min(options.width, VERIFY_DYNAMIC_HW[1]) // m * m))
        if config:
            generator_input_size(config, *trace_hw)
    return channels, trace_hw


def torch_onnx_export(model: nn.Module, dummy: Union[torch.Tensor, Tuple[torch.Tensor, ...]], f: io.BytesIO,
                      **kwargs) -> None:
    """The TorchScript-based exporter (opset 11 needs it; the dynamo one starts at 18); its chatter goes to debug."""
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.onnx.export(model, dummy if isinstance(dummy, tuple) else (dummy,), f, **kwargs)
    for w in {str(w.message).splitlines()[0] for w in caught}:
        log.debug("torch.onnx.export: %s", w)


def _trace(module: nn.Module, fmt: GraphFormat, options: ExportOptions, trace_hw: Tuple[int, int]):
    """The traced ONNX model (fp16 when asked)."""
    import onnx

    if options.opset >= 14:
        log.warning("opset %d: atc needs CANN 7 or later for it (CANN 6 accepts opsets 9 to 13)", options.opset)
    names = fmt.input_names()
    log.info("exporting opset %d, input %s, %s output, batch %d, %dx%d", options.opset, ",".join(names),
             options.output_format, options.batch, trace_hw[1], trace_hw[0])
    buffer = io.BytesIO()
    torch_onnx_export(module, fmt.dummy(options.batch, trace_hw), buffer, input_names=names,
                      output_names=[options.graph_output_name], dynamic_axes=fmt.dynamic_axes(),
                      opset_version=options.opset, do_constant_folding=True, export_params=True)
    proto = onnx.load_from_string(buffer.getvalue())
    return to_fp16(proto) if options.fp16 else proto


def _describe(proto, out_path: Path, options: ExportOptions, fmt: GraphFormat, counts: Dict[str, int],
              loaded: LoadedGenerator) -> ExportReport:
    """Stamp the provenance into the graph, check it (onnx.checker, shapes) and start the report from it."""
    import onnx

    from ..provenance import machine, versions

    sha256 = loaded.sha256()
    settings = {"opset": options.opset, "fp16": options.fp16, "rewrite_avgpool": options.rewrite_avgpool,
                "fast_convs": options.fast_convs, "exact_norm": counts["two_stage_norm"] > 0,
                "winograd_tile": options.tile if options.fast_convs else None,
                "input_format": options.input_format, "output_format": options.output_format,
                "label_nc": fmt.label_nc, "use_instance": options.use_instance, "torch": torch.__version__}
    props = {"pix2pixhd.export": json.dumps(settings)}
    if loaded.config:
        props["pix2pixhd.generator_config"] = json.dumps(loaded.config.to_dict())
    if sha256:
        props["pix2pixhd.checkpoint_sha256"] = sha256
    proto.producer_name = "pix2pixhd-deploy"
    onnx.helper.set_model_props(proto, props)

    inferred = check_graph(proto, path=out_path)
    shape = lambda v: tuple(d.dim_value if d.HasField("dim_value") else None  # noqa: E731
                            for d in v.type.tensor_type.shape.dim)
    ops: Dict[str, int] = {}
    for node in proto.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    report = ExportReport(path=out_path, opset=options.opset, input_name=",".join(fmt.input_names()),
                          output_name=options.graph_output_name, input_shape=shape(inferred.graph.input[0]),
                          output_shape=shape(inferred.graph.output[0]), fp16=options.fp16,
                          rewrite_avgpool=options.rewrite_avgpool, ops=ops, size_bytes=proto.ByteSize(), seconds=0.0,
                          fast_convs=options.fast_convs, exact_norm=settings["exact_norm"],
                          output_format=options.output_format,
                          provenance={"versions": versions(), "machine": machine(), "checkpoint_sha256": sha256})
    if options.fast_convs or options.exact_norm:
        rewritten = (f"rewritten: {counts['winograd']} Winograd F({options.tile}x{options.tile}, 3x3) and "
                     f"{counts['rowsum']} row-sum convolutions, {counts['two_stage_norm']} two-stage instance norms")
        log.info(rewritten)
        report.notes.append(rewritten)
    if _has_exclusive_avgpool(proto):
        report.notes.append("the graph has AveragePool with count_include_pad=0, which ATC documents as unsupported "
                            "(ASCEND.md §3); if atc rejects it or the NPU output differs at the borders, export "
                            "again with --rewrite-avgpool (an exact equivalent made of Conv and Div)")
    return report


def _has_exclusive_avgpool(proto) -> bool:
    import onnx

    for node in proto.graph.node:
        if node.op_type == "AveragePool":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if not attrs.get("count_include_pad", 0):
                return True
    return False


def _verify(report: ExportReport, data: bytes, model: nn.Module, fmt: GraphFormat, options: ExportOptions,
            trace_hw: Tuple[int, int]) -> None:
    """The check against PyTorch, its figures into the report; a UserError when it fails."""
    fused = not options.fp16 and report.ops.get("InstanceNormalization", 0) > 0
    batch = 1 if options.dynamic_batch else options.batch
    check = verify_graph(data, model, fmt, options, batch, trace_hw, fused)
    if not check.passed:
        raise failure_error(check, options, report.path)
    fig, tol = check.figures, check.tolerance
    report.verified, report.verify_shape, report.verify_input = True, check.shape, check.input
    report.max_abs_error = check.raw_max_abs if check.raw_max_abs is not None else fig.max_abs
    report.mean_abs_error, report.psnr_db, report.max_level_diff = fig.mean_abs, fig.psnr_db, fig.max_level_diff
    report.tolerance, report.tolerance_units, report.tolerance_rule = tol.atol, check.units, check.why
    report.min_psnr = tol.min_psnr
    if options.output_format == forms.UINT8:
        report.notes.append(f"uint8 output: {fig.differing_share:.4%} of pixels differ from PyTorch's, by one "
                            "level at most")
