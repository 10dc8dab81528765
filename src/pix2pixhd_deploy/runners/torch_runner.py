"""PyTorch runner: our generator (``network.py``) on CPU or CUDA, in fp32 (on CUDA with TF32 off: exact by default),
fp16 or bf16 (norms and the last layer in fp32, :func:`half_with_fp32_norms`), under ``torch.inference_mode()``.

It takes any of the model forms an export makes (:mod:`.base`), by wrapping the generator in the same
``DeployGraph`` module the export traces: ``tensor`` (the 36-channel input), ``maps`` (the one-hot + edge encoding
runs on the device) or ``stems``, with ``float`` or ``uint8`` output (``tensor2im`` on the device). ``run`` uses
maps in and uint8 out, so only the small maps and the finished pictures cross between host and device.
"""
from __future__ import annotations

import logging
import time
from typing import Dict, List, Optional

import numpy as np

from ..devices import parse_device
from ..errors import PathLike, UserError
from ..model import forms
from .base import INPUT_FORMATS, MAPS_INPUT_NAMES, OUTPUT_FORMATS, STEMS_INPUT_NAMES, Runner, TensorSpec

log = logging.getLogger(__name__)


PRECISIONS = ("fp32", "fp16", "bf16")


def half_with_fp32_norms(model, dtype):
    """``model`` in ``dtype`` (fp16 or bf16) except where half precision loses most: every InstanceNorm (its mean
    and variance over a whole 2048x1024 plane, the usual source of error when image generators go to half precision;
    TensorRT #2691, onnxruntime #10079) computes in fp32 and hands its result back in ``dtype``, and the last
    convolution and the tanh that make the picture compute in fp32 and stay there. In place; returns ``model``."""
    from torch import nn

    class InFloat32(nn.Module):
        def __init__(self, module: nn.Module, back):
            super().__init__()
            self.module, self.back = module.float(), back

        def forward(self, x):
            y = self.module(x.float())
            return y if self.back is None else y.to(self.back)

    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    last = convs[-1] if convs else None
    model.to(dtype)

    def swap(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if isinstance(child, nn.InstanceNorm2d):
                setattr(parent, name, InFloat32(child, dtype))
            elif child is last or isinstance(child, nn.Tanh):
                setattr(parent, name, InFloat32(child, None))  # the picture's own layers: fp32 to the end
            else:
                swap(child)

    swap(model)
    return model


def resolve_device(device: Optional[str]) -> str:
    """The torch device for ``--device`` (:mod:`devices`): auto -> cuda:0 if present else cpu; a bare number N ->
    cuda:N if CUDA is present, else the CPU (logged); ``cpu``/``cuda``/``cuda:N`` as given (a missing GPU is an
    error)."""
    import torch

    parsed = parse_device(device)
    if parsed.kind == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if parsed.kind == "number":
        if torch.cuda.is_available():
            return f"cuda:{parsed.index}"
        log.info("device %s: no CUDA device here, running on the CPU", parsed.index)
        return "cpu"
    if parsed.kind == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {device!r} was asked for but torch sees no CUDA GPU",
                            fix="use --device cpu, or install a CUDA build of torch on a machine with a GPU")
        return f"cuda:{parsed.index or 0}"
    if parsed.kind == "cpu":
        return "cpu"
    raise UserError(f"the torch runner cannot run on device {device!r}", fix="use cpu, cuda, cuda:N or a device number")


class TorchRunner(Runner):
    """Runs a pix2pixHD generator checkpoint (``.pth``) or an in-memory ``nn.Module``."""

    name = "torch"

    @classmethod
    def from_options(cls, model: PathLike, *, device: Optional[str] = None, fp16: bool = False,
                     height: Optional[int] = None, width: Optional[int] = None, **options) -> "TorchRunner":
        """The runner for :func:`~.make_runner`'s options (this backend's entry in :mod:`...backends`)."""
        precision = options.pop("precision", None) or ("fp16" if fp16 else "fp32")
        return cls(model, device=device, precision=precision, height=height, width=width,
                   fast_convs=bool(options.pop("fast_convs", False)), **options)

    @staticmethod
    def device_kind(device: Optional[str]) -> str:
        """``cpu`` or ``cuda``: where ``--device`` puts the computation (auto and a bare number: CUDA if present)."""
        return resolve_device(device).split(":")[0]

    def __init__(self, checkpoint: Optional[PathLike] = None, *, model=None, config=None,
                 device: Optional[str] = None, fp16: bool = False, height: Optional[int] = None,
                 width: Optional[int] = None, fast_convs: bool = False, input_format: str = forms.TENSOR,
                 output_format: str = forms.FLOAT, label_nc: Optional[int] = None,
                 use_instance: Optional[bool] = None, precision: Optional[str] = None,
                 channels_last: bool = False, cudnn_benchmark: bool = False):
        """``fast_convs``: swap in :mod:`~pix2pixhd_deploy.model.fastconv`'s Winograd and row-sum convolutions (CPU).
        ``input_format``/``output_format``: the model form (see the module docstring); ``label_nc`` and
        ``use_instance`` say how the ``maps`` form encodes (None: read from the checkpoint's input channels,
        :func:`~pix2pixhd_deploy.model.encoding.encoding_for_channels`). ``height``/``width``: a static size to
        declare. ``channels_last`` (the weights and activations in NHWC) and ``cudnn_benchmark`` (cuDNN times its
        algorithms for each new shape and keeps the fastest; process-wide) are GPU tunings that
        ``benchmarks/gpu_check.py`` measures; neither is on by default until a GPU has shown it faster."""
        super().__init__()
        if (checkpoint is None) == (model is None):
            raise ValueError("pass exactly one of checkpoint or model")
        if input_format not in INPUT_FORMATS or output_format not in OUTPUT_FORMATS:
            raise ValueError(f"unknown model form {input_format!r}/{output_format!r}")
        self.model = checkpoint
        self._model = model
        self._config = config
        self.device_name = device
        self.precision = precision or ("fp16" if fp16 else "fp32")
        if self.precision not in PRECISIONS:
            raise UserError(f"unknown precision {self.precision!r}", fix=f"use one of {', '.join(PRECISIONS)}")
        self.fp16 = self.precision == "fp16"
        self._hw = (height, width)
        self.loaded = None
        self.fast_convs = fast_convs
        self.form = (input_format, output_format)
        self.label_nc, self.use_instance = label_nc, use_instance
        self.channels_last, self.cudnn_benchmark = channels_last, cudnn_benchmark

    @property
    def checkpoint(self):
        return self.model

    def activate_impl(self) -> None:
        import torch

        from ..model.network import LoadedGenerator, load_generator

        self.device = resolve_device(self.device_name)
        if self.fp16 and self.device == "cpu":
            log.warning("fp16 on the CPU is slow and not what a GPU computes; it is meant for CUDA")
        if self.device.startswith("cuda") and self.precision == "fp32":
            # exact by default: cuDNN and cuBLAS may otherwise run fp32 convolutions in TF32 (a 10-bit significand)
            # on Ampere and later, which is not the fp32 the pictures' accuracy was measured with
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        if self._model is not None:
            self.loaded = LoadedGenerator(self._model, self._config)
        else:
            self.loaded = load_generator(self.model)
        self._check_form()
        model = self.loaded.model
        if self.fast_convs:
            from ..model.fastconv import rewrite_for_cpu

            if self.device != "cpu" or self.fp16:
                log.warning("--fast-convs is a CPU fp32 form: cuDNN picks Winograd by itself, and in fp16 the "
                            "Winograd transforms lose more than a direct convolution")
            if self._model is not None:  # the caller's convolutions stay as they were
                import copy

                model = copy.deepcopy(model)
            counts = rewrite_for_cpu(model)
            log.info("fast convolutions: %d Winograd, %d row-sum", counts["winograd"], counts["rowsum"])
        self.dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[self.precision]
        self.generator = model.to(self.device).eval()
        if self.precision != "fp32":
            half_with_fp32_norms(self.generator, self.dtype)
        if self.channels_last:
            self.generator = self.generator.to(memory_format=torch.channels_last)
        if self.cudnn_benchmark and self.device.startswith("cuda"):
            torch.backends.cudnn.benchmark = True
        self.module = self.generator
        if self.form != (forms.TENSOR, forms.FLOAT):
            from ..export import DeployGraph

            self.module = DeployGraph(self.generator, input_format=self.form[0], output_format=self.form[1],
                                      label_nc=self.label_nc, use_instance=self.use_instance).eval()

    def _check_form(self) -> None:
        from ..model.encoding import encoding_for_channels

        config = self.loaded.config
        if config is not None and (self.label_nc is None or self.use_instance is None):
            label_nc, use_instance = encoding_for_channels(config.input_nc)
            self.label_nc = label_nc if self.label_nc is None else self.label_nc
            self.use_instance = use_instance if self.use_instance is None else self.use_instance
        if self.form[0] == forms.TENSOR or config is None:
            return
        channels = self.label_nc + (1 if self.use_instance else 0)
        if config.input_nc != channels:
            raise UserError(f"the generator takes {config.input_nc} input channels, not the {channels} of "
                            f"label_nc={self.label_nc} with instance maps {'on' if self.use_instance else 'off'}",
                            path=self.model, fix="pass the matching --label-nc / --instances for this checkpoint")

    def deactivate_impl(self) -> None:
        self.generator = self.module = None
        if str(getattr(self, "device", "")).startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    def input_specs_impl(self) -> List[TensorSpec]:
        h, w = self._hw
        if self.form[0] == forms.MAPS:
            names = MAPS_INPUT_NAMES if self.use_instance else MAPS_INPUT_NAMES[:1]
            return [TensorSpec(n, (None, h, w), dt) for n, dt in zip(names, ("uint8", "int32"))]
        if self.form[0] == forms.STEMS:
            from ..model.stems import stem_shapes

            local, glob = stem_shapes(self.generator, h, w)
            return [TensorSpec(STEMS_INPUT_NAMES[0], (None, *local)), TensorSpec(STEMS_INPUT_NAMES[1], (None, *glob))]
        channels = self.config.input_nc if self.config else None
        return [TensorSpec("input_concat", (None, channels, h, w))]

    def output_spec_impl(self) -> TensorSpec:
        h, w = self._hw
        if self.form[1] == forms.UINT8:
            return TensorSpec("synthesized_image", (None, h, w, 3), "uint8")
        return TensorSpec("fake_image", (None, self.config.output_nc if self.config else 3, h, w))

    @property
    def config(self):
        return self.loaded.config if self.loaded else self._config

    def stem_weights(self):
        from ..model.stems import StemWeights

        return StemWeights.from_generator(self.loaded.model, self.label_nc, self.use_instance)

    def infer_impl(self, feeds: Dict[str, np.ndarray]) -> np.ndarray:
        import torch

        arrays = [feeds[s.name] for s in self.input_specs_impl()]
        if self.config is not None and self.form[0] != forms.STEMS:
            from ..model.network import generator_input_size

            generator_input_size(self.config, *arrays[0].shape[-2:])
        cuda = self.device.startswith("cuda")
        tensors = [torch.from_numpy(a).to(self.device, non_blocking=True) for a in arrays]
        if self.form[0] != forms.MAPS:
            tensors = [t.to(self.dtype) for t in tensors]
            if self.channels_last:
                tensors = [t.contiguous(memory_format=torch.channels_last) for t in tensors]
        if cuda:
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        try:
            with torch.inference_mode():
                y = self.module(*tensors)
            if cuda:
                torch.cuda.synchronize(self.device)
        except torch.cuda.OutOfMemoryError as exc:
            del tensors
            torch.cuda.empty_cache()
            n, (h, w) = arrays[0].shape[0], arrays[0].shape[-2:]
            smaller = f"--batch-size {n // 2}" if n > 1 else "smaller maps, or --fp16"
            raise UserError(f"the GPU ran out of memory for a batch of {n} map(s) of {w}x{h} in {self.precision} "
                            f"({str(exc).splitlines()[0][:160]})", fix=f"use {smaller}, or free the GPU") from exc
        self._compute_time = time.perf_counter() - start
        return (y if y.dtype == torch.uint8 else y.float()).cpu().numpy()

    def describe(self) -> str:
        fast = ", fast convolutions" if self.fast_convs else ""
        device = getattr(self, "device", self.device_name or "auto")
        exact = " (TF32 off)" if self.precision == "fp32" and str(device).startswith("cuda") else ""
        mixed = " (norms and the last layer in fp32)" if self.precision != "fp32" else ""
        tuned = "".join(f", {name}" for name, on in (("channels-last", self.channels_last),
                                                      ("cudnn.benchmark", self.cudnn_benchmark)) if on)
        return f"torch {self.precision}{exact}{mixed}{fast}{tuned} on {device}"
