"""pix2pixHD's generators (GlobalGenerator, LocalEnhancer), and loading NVIDIA's ``latest_net_G.pth`` as it is.

Provenance: the architecture of NVIDIA/pix2pixHD ``models/networks.py`` (BSD licence), rewritten from the
description in ``reference/UPSTREAM.md`` §2. Module names and ``nn.Sequential`` indices mirror upstream exactly so
that an upstream checkpoint loads with ``strict=True``:

* ``GlobalGenerator.model``: RP(3), Conv 7x7, IN, ReLU, n_downsampling x [Conv 3x3 s2, IN, ReLU], n_blocks x
  ResnetBlock, n_downsampling x [ConvTranspose 3x3 s2, IN, ReLU], RP(3), Conv 7x7, Tanh.
* ``LocalEnhancer``: ``model`` = the global generator (ngf * 2**n_local_enhancers) without its last three modules,
  ``model{n}_1`` / ``model{n}_2`` the front and back end of each enhancer, ``downsample`` =
  AvgPool2d(3, 2, 1, count_include_pad=False). Branch outputs are summed.

Loading (timm's pattern): :func:`checkpoint_filter_fn` is the one place that knows foreign key forms (``module.``
and ``netG.`` prefixes, legacy InstanceNorm running statistics); :func:`infer_config` reads the architecture from
the tensor shapes, so a wrong ``--ngf`` cannot give silent garbage (upstream issues #106, #221, #51); loading is
strict and a mismatch names what does not fit. Files are read with ``torch.load(weights_only=True)``: a pickle that
would run code is refused, never executed.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from ..errors import PathLike, UserError
from ..fileio import CHECKPOINT_NAME, file_sha256, resolve_checkpoint

log = logging.getLogger(__name__)

#: the file name upstream saves and the seed's ``--load_pretrain DIR`` looks for


# --------------------------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class GeneratorConfig:
    """Everything that defines a pix2pixHD generator. Defaults are label2city_1024p (test_1024p.sh)."""

    input_nc: int = 36            # label_nc (35) + 1 instance-edge channel
    output_nc: int = 3
    ngf: int = 32                 # the local enhancer's width; the global part uses ngf * 2**n_local_enhancers
    netG: str = "local"           # "global" or "local"
    n_downsample_global: int = 4
    n_blocks_global: int = 9
    n_local_enhancers: int = 1
    n_blocks_local: int = 3

    @property
    def size_multiple(self) -> int:
        """Input H and W must be multiples of this (upstream's "make power 2" base)."""
        n_local = self.n_local_enhancers if self.netG == "local" else 0
        return 2 ** self.n_downsample_global * 2 ** n_local

    def to_dict(self) -> Dict[str, object]:
        return dataclasses.asdict(self)


LABEL2CITY_1024P = GeneratorConfig()
LABEL2CITY_512P = GeneratorConfig(ngf=64, netG="global", n_local_enhancers=0, n_blocks_local=0)


# ------------------------------------------------------------------------------------------------ blocks

def _norm(channels: int) -> nn.InstanceNorm2d:
    # upstream: functools.partial(nn.InstanceNorm2d, affine=False); no parameters, no buffers
    return nn.InstanceNorm2d(channels, affine=False)


class ResnetBlock(nn.Module):
    """``x + conv_block(x)``; conv_block = RP(1), Conv, IN, ReLU, RP(1), Conv, IN (indices 0..6)."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, kernel_size=3, padding=0), _norm(dim), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, kernel_size=3, padding=0), _norm(dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class GlobalGenerator(nn.Module):
    def __init__(self, input_nc: int, output_nc: int, ngf: int = 64, n_downsampling: int = 3, n_blocks: int = 9):
        super().__init__()
        layers: List[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0),
                                   _norm(ngf), nn.ReLU(True)]
        for i in range(n_downsampling):
            mult = 2 ** i
            layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1),
                       _norm(ngf * mult * 2), nn.ReLU(True)]
        mult = 2 ** n_downsampling
        layers += [ResnetBlock(ngf * mult) for _ in range(n_blocks)]
        for i in range(n_downsampling):
            mult = 2 ** (n_downsampling - i)
            layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, kernel_size=3, stride=2, padding=1,
                                          output_padding=1),
                       _norm(ngf * mult // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class LocalEnhancer(nn.Module):
    def __init__(self, input_nc: int, output_nc: int, ngf: int = 32, n_downsample_global: int = 3,
                 n_blocks_global: int = 9, n_local_enhancers: int = 1, n_blocks_local: int = 3):
        super().__init__()
        self.n_local_enhancers = n_local_enhancers
        ngf_global = ngf * 2 ** n_local_enhancers
        model_global = GlobalGenerator(input_nc, output_nc, ngf_global, n_downsample_global, n_blocks_global).model
        self.model = nn.Sequential(*[model_global[i] for i in range(len(model_global) - 3)])
        for n in range(1, n_local_enhancers + 1):
            width = ngf * 2 ** (n_local_enhancers - n)
            front = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, width, kernel_size=7, padding=0), _norm(width),
                     nn.ReLU(True), nn.Conv2d(width, width * 2, kernel_size=3, stride=2, padding=1),
                     _norm(width * 2), nn.ReLU(True)]
            back: List[nn.Module] = [ResnetBlock(width * 2) for _ in range(n_blocks_local)]
            back += [nn.ConvTranspose2d(width * 2, width, kernel_size=3, stride=2, padding=1, output_padding=1),
                     _norm(width), nn.ReLU(True)]
            if n == n_local_enhancers:
                back += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0), nn.Tanh()]
            setattr(self, f"model{n}_1", nn.Sequential(*front))
            setattr(self, f"model{n}_2", nn.Sequential(*back))
        self.downsample = nn.AvgPool2d(3, stride=2, padding=[1, 1], count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pyramid = [x]
        for _ in range(self.n_local_enhancers):
            pyramid.append(self.downsample(pyramid[-1]))
        out = self.model(pyramid[-1])
        for n in range(1, self.n_local_enhancers + 1):
            front = getattr(self, f"model{n}_1")
            back = getattr(self, f"model{n}_2")
            out = back(front(pyramid[self.n_local_enhancers - n]) + out)
        return out


def build_generator(config: GeneratorConfig = LABEL2CITY_1024P) -> nn.Module:
    """A generator with upstream's module layout; weights are left at torch's default initialisation."""
    if config.netG == "global":
        return GlobalGenerator(config.input_nc, config.output_nc, config.ngf, config.n_downsample_global,
                               config.n_blocks_global)
    if config.netG == "local":
        return LocalEnhancer(config.input_nc, config.output_nc, config.ngf, config.n_downsample_global,
                             config.n_blocks_global, config.n_local_enhancers, config.n_blocks_local)
    raise ValueError(f"netG must be 'global' or 'local', not {config.netG!r}")


def random_generator(config: GeneratorConfig = LABEL2CITY_1024P, seed: int = 0) -> nn.Module:
    """A generator with upstream's ``weights_init`` (conv weights ~ N(0, 0.02)), seeded. Its pictures are noise."""
    gen = torch.Generator().manual_seed(seed)
    model = build_generator(config)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                m.weight.normal_(0.0, 0.02, generator=gen)
                m.bias.uniform_(-0.01, 0.01, generator=gen)
    return model.eval()


# ------------------------------------------------------------------------------------------ checkpoints

_PREFIXES = ("module.", "netG.")
_NORM_STATS = (".running_mean", ".running_var", ".num_batches_tracked")


def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Bring a foreign generator state dict to upstream's plain key form. Pure: returns a new dict.

    * strips ``module.`` (DataParallel) and ``netG.`` (a saved InferenceModel, upstream issue #159) prefixes;
    * drops InstanceNorm running statistics from checkpoints saved with torch < 0.4: a ``.running_mean`` /
      ``.running_var`` / ``.num_batches_tracked`` whose layer has no ``.weight`` (a non-affine norm). BatchNorm
      statistics (their layer has a weight) are kept, so such a file is reported instead of half-loaded.
    """
    out: Dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        k = key
        stripped = True
        while stripped:
            stripped = False
            for prefix in _PREFIXES:
                if k.startswith(prefix):
                    k = k[len(prefix):]
                    stripped = True
        out[k] = value
    for k in list(out):
        for suffix in _NORM_STATS:
            if k.endswith(suffix) and k[: -len(suffix)] + ".weight" not in out:
                del out[k]
    return out


def _indices(state_dict: Mapping[str, torch.Tensor], prefix: str) -> List[int]:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in state_dict for m in [pat.match(k)] if m})


def _shape(state_dict: Mapping[str, torch.Tensor], key: str, path: Optional[PathLike]) -> torch.Size:
    if key not in state_dict or not isinstance(state_dict[key], torch.Tensor):
        raise UserError(f"this is not a pix2pixHD generator checkpoint: it has no tensor {key!r} "
                        f"(keys start with {sorted({k.split('.')[0] for k in state_dict})[:5]})", path=path,
                        fix=f"pass the generator file {CHECKPOINT_NAME} saved by pix2pixHD's train.py")
    return state_dict[key].shape


def infer_config(state_dict: Mapping[str, torch.Tensor], *, path: Optional[PathLike] = None) -> GeneratorConfig:
    """Read the architecture (global/local, ngf, blocks, channels) from a filtered state dict's shapes."""
    n_local = len({m.group(1) for k in state_dict for m in [re.match(r"model(\d+)_1\.", k)] if m})
    stem = _shape(state_dict, "model.1.weight", path)
    if len(stem) != 4:
        raise UserError(f"'model.1.weight' has shape {tuple(stem)}, not a 4-d convolution weight", path=path,
                        fix=f"pass the generator file {CHECKPOINT_NAME}")
    n_down = 0
    while (f"model.{4 + 3 * n_down}.weight" in state_dict
           and f"model.{4 + 3 * n_down}.conv_block.1.weight" not in state_dict):
        n_down += 1
    blocks = [i for i in _indices(state_dict, "model.") if f"model.{i}.conv_block.1.weight" in state_dict]
    if n_local:
        front = _shape(state_dict, f"model{n_local}_1.1.weight", path)
        back_blocks = [i for i in _indices(state_dict, f"model{n_local}_2.")
                       if f"model{n_local}_2.{i}.conv_block.1.weight" in state_dict]
        last = max(_indices(state_dict, f"model{n_local}_2."), default=-1)
        out_nc = _shape(state_dict, f"model{n_local}_2.{last}.weight", path)[0]
        return GeneratorConfig(input_nc=int(front[1]), output_nc=int(out_nc), ngf=int(front[0]), netG="local",
                               n_downsample_global=n_down, n_blocks_global=len(blocks),
                               n_local_enhancers=n_local, n_blocks_local=len(back_blocks))
    last = max(_indices(state_dict, "model."))
    out_nc = _shape(state_dict, f"model.{last}.weight", path)[0]
    return GeneratorConfig(input_nc=int(stem[1]), output_nc=int(out_nc), ngf=int(stem[0]), netG="global",
                           n_downsample_global=n_down, n_blocks_global=len(blocks), n_local_enhancers=0,
                           n_blocks_local=0)


def _refusal_reason(exc: Exception) -> str:
    """What torch's weights-only unpickler refused (e.g. ``unsupported GLOBAL posix.system``), without its essay."""
    for line in str(exc).splitlines():
        if re.search(r"GLOBAL|Unsupported|not an allowed", line, re.IGNORECASE):
            return line.strip().rstrip(".")[:160]
    return "it is not a plain tensor pickle"


#: the first torch whose weights-only unpickler has no known way round it (CVE-2025-32434 affects <= 2.5.1)
SAFE_TORCH = (2, 6)


def check_safe_torch(path: Optional[PathLike] = None, version: Optional[str] = None) -> None:
    """Refuse to unpickle an untrusted checkpoint with a torch whose ``weights_only=True`` can be bypassed."""
    version = version or torch.__version__
    found = tuple(int(p) for p in re.findall(r"\d+", version.split("+")[0])[:2])
    if found < SAFE_TORCH:
        raise UserError(f"torch {version} is too old to load a checkpoint safely (its weights_only loading can be "
                        "made to run code before torch 2.6)", path=path,
                        fix="pip install 'torch>=2.6' (see the Makefile for the CPU wheel)")


def read_state_dict(path: PathLike) -> Dict[str, torch.Tensor]:
    """``torch.load(weights_only=True)`` with every failure turned into one clear :class:`UserError`."""
    path = resolve_checkpoint(path)
    check_safe_torch(path)
    if path.is_file() and path.stat().st_size == 0:
        raise UserError("the checkpoint file is empty", path=path, fix="download or copy the checkpoint again")
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of foreign files: noise here
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UserError("refused to load: the file is a pickle that holds more than tensors, which could run code "
                        f"when loaded ({_refusal_reason(exc)})", path=path,
                        fix="use a checkpoint that is a plain state dict (save it with "
                            "torch.save(net.state_dict(), ...)) from a source you trust") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError) as exc:
        first = (str(exc).splitlines() or [""])[0].split(". ")[0][:200] or type(exc).__name__
        raise UserError(f"cannot read the checkpoint, it is truncated or not a torch file ({first})", path=path,
                        fix="download or copy the checkpoint again") from exc
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        kind = type(obj).__name__
        raise UserError(f"the checkpoint holds a {kind}, not a state dict of tensors", path=path,
                        fix=f"pass the generator state dict {CHECKPOINT_NAME} saved by pix2pixHD")
    return dict(obj)


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *,
                           path: Optional[PathLike] = None) -> None:
    """``load_state_dict(strict=True)``, with missing, unexpected and mis-shaped keys named in one error."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(expected[k].shape)}" for k in expected
                  if k in state_dict and state_dict[k].shape != expected[k].shape]
    if missing or unexpected or mismatched:
        parts = []
        for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)):
            if items:
                parts.append(f"{len(items)} {title}: " + ", ".join(items[:4]) + (" ..." if len(items) > 4 else ""))
        raise UserError("the checkpoint does not fit a pix2pixHD generator (" + "; ".join(parts) + ")", path=path,
                        fix="pass a pix2pixHD generator checkpoint (latest_net_G.pth) with instance norm")
    model.load_state_dict(state_dict, strict=True)


def read_checkpoint(path: PathLike) -> Tuple[Path, Dict[str, torch.Tensor], GeneratorConfig]:
    """(file, state dict with foreign keys renamed, the architecture it holds) of an upstream checkpoint (or a
    folder holding one): what :func:`load_generator` builds our network from and upstream's is loaded with."""
    file = resolve_checkpoint(path)
    state = checkpoint_filter_fn(read_state_dict(file))
    return file, state, infer_config(state, path=file)


def load_generator(path: PathLike, *, expect: Optional[GeneratorConfig] = None) -> "LoadedGenerator":
    """Load an upstream ``latest_net_G.pth`` (or a folder holding it) strictly; the architecture comes from it.

    ``expect``: settings the user gave (e.g. ``--ngf``); a disagreement with the file is an error, not garbage.
    """
    file, state, config = read_checkpoint(path)
    if expect is not None and expect != config:
        diffs = [f"{f.name}={getattr(expect, f.name)} given, file has {getattr(config, f.name)}"
                 for f in dataclasses.fields(GeneratorConfig) if getattr(expect, f.name) != getattr(config, f.name)]
        raise UserError("the checkpoint's architecture differs from the settings given: " + "; ".join(diffs),
                        path=file, fix="drop those options: the architecture is read from the file")
    model = build_generator(config)
    load_state_dict_strict(model, state, path=file)
    model.eval()
    log.info("loaded %s: %s", file, json.dumps(config.to_dict()))
    return LoadedGenerator(model, config, file)


@dataclass
class LoadedGenerator:
    model: nn.Module
    config: GeneratorConfig
    path: Optional[Path] = None

    def sha256(self) -> Optional[str]:
        return file_sha256(self.path) if self.path else None


def save_checkpoint(model: nn.Module, path: PathLike) -> Path:
    """Save as upstream's ``save_network`` does (``state_dict()`` of the CPU model), atomically."""
    from ..fileio import atomic_open

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as fh:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, fh)
    return path


def generator_input_size(config: GeneratorConfig, height: int, width: int) -> None:
    """Refuse an input size the generator cannot take (H and W must be multiples of ``size_multiple``)."""
    m = config.size_multiple
    if height % m or width % m:
        raise UserError(f"the input is {width}x{height}, but this generator needs width and height that are "
                        f"multiples of {m}", fix=f"resize to a multiple of {m}; the preprocessing does this for you")

