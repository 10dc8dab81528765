"""Export the generator to ONNX, and prove the file computes what PyTorch computes before it is kept.

In:  a generator (``nn.Module``, a loaded checkpoint, or a ``latest_net_G.pth`` / its folder) and
     :class:`ExportOptions`.
Out: one ``.onnx`` file (input ``input_concat`` float32 (N, 36, H, W), output ``fake_image`` float32 (N, 3, H, W)
     in [-1, 1] by default) and an :class:`ExportReport` with the check's figures and the atc commands.

Defaults are the seed's ``pix2pixhd_pth2onnx.py`` (ASCEND.md §1.4): opset 11, a dynamic batch axis named ``-1``,
static 1024x2048; and precise instance norms, so that ONNX Runtime and OpenVINO on a CPU stay within 1e-4 of
PyTorch at full size (``exact_norm=False``, ``--fused-norm``, keeps the InstanceNormalization op).

The modules, in the order an export uses them:

* :mod:`.options`  -- :class:`ExportOptions`, every setting, checked once;
* :mod:`.formats`  -- the graph formats (tensor, maps, stems): input names, shapes, dynamic axes, atc inputs, feeds;
* :mod:`.rewrites` -- the modules swapped in for export (reflection pad, precise norms, avgpool, fast convolutions)
  and fp16;
* :mod:`.verify`   -- onnx.checker, ONNX Runtime against PyTorch on a street scene, judged by ``compare``'s rule;
* :mod:`.report`   -- :class:`ExportReport` and the atc commands;
* :mod:`.exporter` -- :func:`export_onnx`, the steps in order.
"""
from .exporter import ModelLike, export_onnx, torch_onnx_export
from .formats import MAPS_INPUT_NAMES, STEMS_INPUT_NAMES, DeployGraph, GraphFormat, Trunk
from .options import (
           DEFAULT_HW,
           DEFAULT_OPSET,
           DEFAULT_SOC_VERSION,
           DYNAMIC_BATCH_NAME,
           INPUT_FORMATS,
           OPSETS,
           OUTPUT_FORMATS,
           UINT8_OUTPUT_NAME,
           ExportOptions,
)
from .report import ATC_BATCHES, ExportReport, atc_commands
from .rewrites import ExactAvgPool2d, OnnxReflectionPad2d, TwoStageInstanceNorm, prepare_for_export
from .verify import check_graph, check_tolerance, run_onnxruntime_cpu, scene_maps, seeded_input, seeded_maps

__all__ = ["ATC_BATCHES", "DEFAULT_HW", "DEFAULT_OPSET", "DEFAULT_SOC_VERSION", "DYNAMIC_BATCH_NAME", "INPUT_FORMATS",
           "MAPS_INPUT_NAMES", "OPSETS", "OUTPUT_FORMATS", "STEMS_INPUT_NAMES", "UINT8_OUTPUT_NAME", "DeployGraph",
           "ExactAvgPool2d", "ExportOptions", "ExportReport", "GraphFormat", "ModelLike", "OnnxReflectionPad2d",
           "Trunk", "TwoStageInstanceNorm", "atc_commands", "check_graph", "check_tolerance", "export_onnx",
           "prepare_for_export", "run_onnxruntime_cpu", "scene_maps", "seeded_input", "seeded_maps",
           "torch_onnx_export"]
