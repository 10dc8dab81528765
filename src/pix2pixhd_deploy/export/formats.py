"""The graph formats, one place each: what a graph takes (names, per-sample shapes, dtypes, dynamic axes), the
module that is traced, the atc input shapes, and the feeds of the check.

* ``tensor`` (the seed's): ``input_concat`` float32 (N, C, H, W), the encoded maps (one-hot labels + edges).
* ``maps``: ``label`` uint8 (N, H, W) and ``inst`` int32 (N, H, W); the graph encodes them itself, so a caller
  feeds a few MiB per image instead of a 288 MiB tensor.
* ``stems``: ``local_stem`` (N, ngf, H, W) and ``global_stem`` (N, 2 ngf, H/2, W/2) float32, the outputs of the two
  stem convolutions, which :mod:`..stems` computes from the maps (a sidecar ``.stems.npz`` holds their weights).

Output: ``float`` (N, 3, H, W) in [-1, 1], or ``uint8`` (N, H, W, 3), the picture as upstream's ``tensor2im``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..model import forms
from ..model.decoding import tensor2im_torch
from ..model.encoding import encode_input, encode_input_torch
from .options import DYNAMIC_BATCH_NAME, ExportOptions
from .rewrites import TwoStageInstanceNorm

MAPS_INPUT_NAMES = ("label", "inst")
STEMS_INPUT_NAMES = ("local_stem", "global_stem")


class Trunk(nn.Module):
    """A LocalEnhancer (one enhancer) after its two stem convolutions: from their outputs to the picture.

    ``local_stem`` is ``model1_1[1](model1_1[0](x))`` (N, ngf, H, W) and ``global_stem`` is
    ``model[1](model[0](downsample(x)))`` (N, 2 ngf, H/2, W/2); :mod:`..stems` computes both from the maps.
    """

    def __init__(self, generator: nn.Module):
        super().__init__()
        if getattr(generator, "n_local_enhancers", 0) != 1:
            raise UserError("--input-format stems needs a LocalEnhancer with one local enhancer (label2city_1024p)",
                            fix="use --input-format maps or tensor for this model")
        self.global_rest = nn.Sequential(*list(generator.model)[2:])
        self.local_rest = nn.Sequential(*list(generator.model1_1)[2:])
        self.back = generator.model1_2

    def forward(self, local_stem: torch.Tensor, global_stem: torch.Tensor) -> torch.Tensor:
        return self.back(self.local_rest(local_stem) + self.global_rest(global_stem))


def _stems_feed_norms(generator: nn.Module) -> bool:
    """Whether both stems go straight into an instance norm (pix2pixHD's LocalEnhancer: pad, conv, norm, ...)."""
    return all(len(seq) > 2 and TwoStageInstanceNorm.replaces(seq[2]) for seq in (generator.model1_1, generator.model))


class DeployGraph(nn.Module):
    """The generator with the encoding before it (``maps``) and/or the uint8 conversion after it (``uint8``)."""

    def __init__(self, generator: nn.Module, *, input_format: str = forms.TENSOR, output_format: str = forms.FLOAT,
                 label_nc: int = 35, use_instance: bool = True):
        super().__init__()
        self.generator = Trunk(generator) if input_format == forms.STEMS else generator
        self.stems = input_format == forms.STEMS
        self.maps = input_format == forms.MAPS
        self.uint8 = output_format == forms.UINT8
        self.label_nc = label_nc
        self.use_instance = use_instance

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.stems:
            y = self.generator(*inputs)
        else:
            dtype = next(self.generator.parameters()).dtype  # fp16 weights take an fp16 encoding
            x = (encode_input_torch(inputs[0], inputs[1] if self.use_instance else None, self.label_nc, dtype=dtype)
                 if self.maps else inputs[0])
            y = self.generator(x)
        return tensor2im_torch(y) if self.uint8 else y


@dataclass
class GraphFormat:
    """One export's graph format, with what it needs from the model (its channels; for stems the generator and the
    stem weights)."""

    options: ExportOptions
    channels: int                             # the generator's input channels
    generator: Optional[nn.Module] = None     # stems: the LocalEnhancer whose stems are the inputs
    stem_weights: Optional[object] = None     # stems: their weights, for the check and the sidecar file

    @classmethod
    def of(cls, options: ExportOptions, model: nn.Module, channels: int) -> "GraphFormat":
        fmt = cls(options, channels)
        if options.input_format == forms.STEMS:
            from ..model.stems import StemWeights

            fmt.generator = model
            # once, for the check and the sidecar file (it copies each tensor to float32 on the CPU itself)
            fmt.stem_weights = StemWeights.from_generator(model, fmt.label_nc, options.use_instance)
            if options.row_moment_norms and _stems_feed_norms(model):
                # the CPU graph's norms work with raw sums of squares: a bias they cancel only costs them digits
                fmt.stem_weights = fmt.stem_weights.without_biases()
        return fmt

    @property
    def label_nc(self) -> int:
        return self.options.label_nc(self.channels)

    # -------------------------------------------------------------------------------------- the inputs

    def inputs(self, hw: Tuple[int, int]) -> List[Tuple[str, Tuple[int, ...], torch.dtype]]:
        """(name, per-sample shape, dtype) of every input at size ``hw``."""
        fmt = self.options.input_format
        if fmt == forms.MAPS:
            names = MAPS_INPUT_NAMES[:2 if self.options.use_instance else 1]
            return [(n, tuple(hw), dt) for n, dt in zip(names, (torch.uint8, torch.int32))]
        if fmt == forms.STEMS:
            from ..model.stems import stem_shapes

            return [(name, shape, torch.float32) for name, shape in zip(STEMS_INPUT_NAMES,
                                                                        stem_shapes(self.generator, *hw))]
        return [(self.options.input_name, (self.channels, *hw), torch.float32)]

    def input_names(self) -> List[str]:
        return [name for name, _, _ in self.inputs((1, 1))]

    def dummy(self, batch: int, hw: Tuple[int, int]) -> Tuple[torch.Tensor, ...]:
        return tuple(torch.zeros(batch, *shape, dtype=dt) for _, shape, dt in self.inputs(hw))

    def dynamic_axes(self) -> Optional[Dict[str, Dict[int, str]]]:
        """The ONNX dynamic axes: the batch (named ``-1``, the seed's) and/or H and W."""
        o = self.options
        hw_in = {1: "height", 2: "width"} if o.input_format == forms.MAPS else {2: "height", 3: "width"}
        hw_out = {1: "height", 2: "width"} if o.output_format == forms.UINT8 else {2: "height", 3: "width"}
        axes: Dict[str, Dict[int, str]] = {}
        for name, hw_axes in [(n, hw_in) for n in self.input_names()] + [(o.graph_output_name, hw_out)]:
            axes[name] = {0: DYNAMIC_BATCH_NAME} if o.dynamic_batch else {}
            if o.dynamic_hw:
                axes[name].update({k: f"{v}_half" if name == STEMS_INPUT_NAMES[1] else v for k, v in hw_axes.items()})
        return {k: v for k, v in axes.items() if v} or None

    def atc_inputs(self, hw: Tuple[int, int]) -> Tuple[List[Tuple[str, Tuple[int, ...]]], str]:
        """The atc ``--input_shape`` entries (name, per-sample shape) and ``--input_format``."""
        layout = "ND" if self.options.input_format == forms.MAPS else "NCHW"
        return [(name, shape) for name, shape, _ in self.inputs(hw)], layout

    # ------------------------------------------------------------------------------------ the module

    def module(self, generator: nn.Module) -> nn.Module:
        """What is traced: the (rewritten) generator, wrapped when the format needs more than the generator."""
        o = self.options
        if not o.wrapped:
            return generator
        return DeployGraph(generator, input_format=o.input_format, output_format=o.output_format,
                           label_nc=self.label_nc, use_instance=o.use_instance).eval()

    # ------------------------------------------------------------------------------------- the check

    def encode(self, labels: np.ndarray, insts: Optional[np.ndarray]) -> np.ndarray:
        """The generator's input (N, C, H, W) float32 for (N, H, W) maps: what PyTorch's reference runs on."""
        return np.stack([encode_input(labels[n], insts[n] if insts is not None else None, self.label_nc)
                         for n in range(labels.shape[0])])

    def feeds(self, labels: np.ndarray, insts: Optional[np.ndarray],
              encoded: np.ndarray) -> Dict[str, np.ndarray]:
        """The graph's feeds for (N, H, W) maps (``encoded``: the same maps as :meth:`encode` gives them)."""
        names = self.input_names()
        if self.options.input_format == forms.MAPS:
            return dict(zip(names, (labels, insts)))
        if self.options.input_format == forms.STEMS:
            from ..model.stems import StemComputer

            return dict(zip(names, StemComputer(self.stem_weights)(labels, insts)))
        return {names[0]: encoded}
