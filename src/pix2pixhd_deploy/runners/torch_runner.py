"""PyTorch runner: our generator (``network.py``) on CPU or CUDA, fp32 or fp16, under ``torch.inference_mode()``."""
from __future__ import annotations

import logging
import time
from typing import Optional

import numpy as np

from ..errors import PathLike, UserError
from .base import Runner, TensorSpec

log = logging.getLogger(__name__)


def resolve_device(device: Optional[str]) -> str:
    """``None``/``auto`` -> cuda:0 if present else cpu; an integer (ais_bench's ``--device 0``) -> cuda:N if CUDA is
    present, else the CPU (logged); ``cpu``/``cuda``/``cuda:N`` as given (a missing GPU is an error)."""
    import torch

    text = "auto" if device is None else str(device).strip().lower()
    if text == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if text.isdigit():
        if torch.cuda.is_available():
            return f"cuda:{int(text)}"
        log.info("device %s: no CUDA device here, running on the CPU", text)
        return "cpu"
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device {device!r} was asked for but torch sees no CUDA GPU",
                            fix="use --device cpu, or install a CUDA build of torch on a machine with a GPU")
        return text if ":" in text else "cuda:0"
    if text == "cpu":
        return "cpu"
    raise UserError(f"unknown device {device!r}", fix="use cpu, cuda, cuda:N or a device number")


class TorchRunner(Runner):
    """Runs a pix2pixHD generator checkpoint (``.pth``) or an in-memory ``nn.Module``."""

    name = "torch"

    def __init__(self, checkpoint: Optional[PathLike] = None, *, model=None, config=None,
                 device: Optional[str] = None, fp16: bool = False, height: Optional[int] = None,
                 width: Optional[int] = None, fast_convs: bool = False):
        """``fast_convs``: swap in :mod:`~pix2pixhd_deploy.fastconv`'s Winograd and row-sum convolutions (CPU)."""
        super().__init__()
        if (checkpoint is None) == (model is None):
            raise ValueError("pass exactly one of checkpoint or model")
        self.checkpoint = checkpoint
        self._model = model
        self._config = config
        self.device_name = device
        self.fp16 = fp16
        self._hw = (height, width)
        self.loaded = None
        self.fast_convs = fast_convs

    def activate_impl(self) -> None:
        import torch

        from ..network import LoadedGenerator, load_generator

        self.device = resolve_device(self.device_name)
        if self.fp16 and self.device == "cpu":
            log.warning("fp16 on the CPU is slow and not what a GPU computes; it is meant for CUDA")
        if self._model is not None:
            self.loaded = LoadedGenerator(self._model, self._config)
        else:
            self.loaded = load_generator(self.checkpoint)
        model = self.loaded.model
        if self.fast_convs:
            from ..fastconv import rewrite_for_cpu

            if self.device != "cpu" or self.fp16:
                log.warning("--fast-convs is a CPU fp32 form: cuDNN picks Winograd by itself, and in fp16 the "
                            "Winograd transforms lose more than a direct convolution")
            if self._model is not None:  # the caller's convolutions stay as they were
                import copy

                model = copy.deepcopy(model)
            counts = rewrite_for_cpu(model)
            log.info("fast convolutions: %d Winograd, %d row-sum", counts["winograd"], counts["rowsum"])
        self.dtype = torch.float16 if self.fp16 else torch.float32
        self.model = model.to(self.device).to(self.dtype).eval()

    def deactivate_impl(self) -> None:
        self.model = None
        if str(getattr(self, "device", "")).startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    def input_spec_impl(self) -> TensorSpec:
        channels = self.loaded.config.input_nc if self.loaded.config else None
        return TensorSpec("input_concat", (None, channels, *self._hw))

    @property
    def config(self):
        return self.loaded.config if self.loaded else self._config

    def run_tensor(self, x):
        """Forward a torch tensor already on the device; returns the device tensor (for the streaming path)."""
        import torch

        with torch.inference_mode():
            return self.model(x.to(self.dtype))

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        import torch

        if self.config is not None:
            from ..network import generator_input_size

            generator_input_size(self.config, batch.shape[2], batch.shape[3])
        x = torch.from_numpy(batch).to(self.device)
        cuda = self.device.startswith("cuda")
        if cuda:
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        y = self.run_tensor(x)
        if cuda:
            torch.cuda.synchronize(self.device)
        self._compute_time = time.perf_counter() - start
        return y.float().cpu().numpy()

    def describe(self) -> str:
        fast = ", fast convolutions" if self.fast_convs else ""
        device = getattr(self, "device", self.device_name or "auto")
        return f"torch {'fp16' if self.fp16 else 'fp32'}{fast} on {device}"
