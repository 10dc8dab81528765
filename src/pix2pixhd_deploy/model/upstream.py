"""Reference outputs made with NVIDIA's own code (PyPI ``pix2pixhd==1.0``), for ``compare --reference upstream``.

In:  a checkpoint (``latest_net_G.pth`` or its folder) and a data root with ``test_label/`` (+ ``test_inst/``).
Out: ``OUT_DIR/<label stem>_synthesized_image.<png|jpg>`` per label map, upstream ``test.py``'s name, made by:

* upstream's data path: ``base_dataset.__make_power_2`` (nearest resize to the generator's size multiple) and
  torchvision's ``to_tensor`` (label x 255; instance ids as they are), reimplemented here for the two image modes
  it meets because torchvision is not a dependency;
* upstream's ``Pix2PixHDModel.encode_input`` (one-hot + instance edges) on the CPU, fp32;
* upstream's generator from ``networks.define_G`` built with the architecture read from the checkpoint, loaded
  strictly through our :func:`~pix2pixhd_deploy.model.network.checkpoint_filter_fn` (upstream's own loader is lenient: it
  skips what does not fit, which would hide a wrong checkpoint);
* upstream's ``util.tensor2im``, then Pillow's save (PNG lossless by default; ``jpg`` is test.py's JPEG q75).

Only the pairing of label and instance maps is ours (by stem, :func:`~pix2pixhd_deploy.data.dataset.find_pairs`;
upstream pairs by sorted position, which is the same for a well-formed data root), and the decoding of the files:
the one reader, :func:`~pix2pixhd_deploy.data.labelmaps.load_maps`, gives the ids at the file's own size (an 8-bit ids
file exactly as Pillow reads it; colour, 16-bit and palette maps converted; instance maps derived with
``instances="labels"``), which go to upstream's resize and ``to_tensor`` as Pillow images. With ``fit="pad"`` the
reader pads the maps (upstream's resize then has nothing to do) and the picture is cropped back.

``pix2pixhd`` asks pip for torchvision, which it never uses at inference and which would replace the installed
torch, so it is installed with ``--no-deps``; its ``networks.py`` imports torchvision at the top, so a stub stands
in for it during that import only (:func:`import_upstream`).
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import types
from pathlib import Path
from types import SimpleNamespace
from typing import List, Optional

import numpy as np

from ..errors import PathLike, UserError
from ..fileio import atomic_save_image, ensure_output_dir, image_format, progress, remove_stale_temporaries

log = logging.getLogger(__name__)

INSTALL_FIX = "pip install --no-deps pix2pixhd==1.0 (NVIDIA's code; --no-deps keeps your torch)"
OUTPUT_SUFFIX = "_synthesized_image"


def import_upstream(module: str):
    """Import a module of NVIDIA's pix2pixHD with a stub torchvision in ``sys.modules`` during the import only."""
    if importlib.util.find_spec("pix2pixhd") is None:
        raise UserError("NVIDIA's pix2pixHD code is not installed, so no upstream reference can be made",
                        fix=INSTALL_FIX)
    names = ("torchvision", "torchvision.models", "torchvision.transforms")
    saved = {k: v for k, v in sys.modules.items() if k == "torchvision" or k.startswith("torchvision.")}
    stub = types.ModuleType("torchvision")
    stub.models = types.ModuleType("torchvision.models")
    stub.transforms = types.ModuleType("torchvision.transforms")
    sys.modules.update({"torchvision": stub, "torchvision.models": stub.models,
                        "torchvision.transforms": stub.transforms})
    try:
        return importlib.import_module(module)
    finally:
        for k in names:
            sys.modules.pop(k, None)
        sys.modules.update(saved)


def to_tensor(pic):
    """torchvision's ``transforms.functional.to_tensor`` (0.10, the seed's) for the modes pix2pixHD reads here.

    8-bit images become float in [0, 1]; ``I`` and ``I;16`` integer images keep their values (as float after
    upstream's later ``.float()``; ``I;16`` goes through int16 as torchvision does).
    """
    import torch

    mode_to_nptype = {"I": np.int32, "I;16" if sys.byteorder == "little" else "I;16B": np.int16, "F": np.float32}
    img = torch.from_numpy(np.array(pic, mode_to_nptype.get(pic.mode, np.uint8), copy=True))
    img = img.view(pic.size[1], pic.size[0], -1).permute((2, 0, 1)).contiguous()
    return img.float().div(255) if img.dtype == torch.uint8 else img


class UpstreamGenerator:
    """NVIDIA's encoder and generator for one checkpoint, on the CPU in fp32 (upstream's own test path)."""

    def __init__(self, checkpoint: PathLike):
        import torch

        from ..data.labels import LABEL_NC
        from .network import load_state_dict_strict, read_checkpoint

        networks = import_upstream("pix2pixhd.models.networks")
        model_mod = import_upstream("pix2pixhd.models.pix2pixHD_model")
        base_dataset = import_upstream("pix2pixhd.data.base_dataset")
        self.util = import_upstream("pix2pixhd.util.util")

        file, state, cfg = read_checkpoint(checkpoint)
        if cfg.input_nc not in (LABEL_NC, LABEL_NC + 1):
            raise UserError(f"the checkpoint takes {cfg.input_nc} input channels; label2city models take "
                            f"{LABEL_NC} (no instance maps) or {LABEL_NC + 1}", path=file,
                            fix="pass a label2city generator checkpoint")
        self.config = cfg
        self.no_instance = cfg.input_nc == LABEL_NC
        torch.manual_seed(0)  # define_G initialises weights before we overwrite them all
        net = networks.define_G(cfg.input_nc, cfg.output_nc, cfg.ngf, cfg.netG, cfg.n_downsample_global,
                                cfg.n_blocks_global, cfg.n_local_enhancers, cfg.n_blocks_local, "instance",
                                gpu_ids=[])
        load_state_dict_strict(net, state, path=file)
        self.net = net.eval()

        model = model_mod.Pix2PixHDModel.__new__(model_mod.Pix2PixHDModel)
        model.opt = SimpleNamespace(label_nc=LABEL_NC, data_type=32, no_instance=self.no_instance)
        model.gpu_ids, model.Tensor, model.use_features = [], torch.FloatTensor, False
        self.model = model
        self._make_power_2 = getattr(base_dataset, "__make_power_2")
        log.info("upstream pix2pixHD generator from %s (%s)", file, cfg.to_dict())

    def picture(self, label: np.ndarray, inst: Optional[np.ndarray] = None) -> np.ndarray:
        """Label ids (H, W) uint8 (+ instance ids int32) -> the (H, W, 3) uint8 picture, all by upstream's code."""
        import torch
        from PIL import Image

        base = self.config.size_multiple
        label_t = to_tensor(self._make_power_2(Image.fromarray(label), base, Image.NEAREST)) * 255.0
        inst_t = None
        if not self.no_instance:
            inst_t = to_tensor(self._make_power_2(Image.fromarray(inst.astype(np.int32), "I"), base, Image.NEAREST))
        with torch.no_grad():
            x, *_ = self.model.encode_input(label_t[None], None if inst_t is None else inst_t[None])
            y = self.net(x)
        return self.util.tensor2im(y.data[0])


def make_upstream_outputs(checkpoint: PathLike, dataroot: PathLike, out_dir: PathLike, *, fmt: str = "png",
                          phase: str = "test", instances: Optional[str] = None, fit: str = "resize",
                          show_progress: bool = True) -> List[Path]:
    """Run NVIDIA's code over every label map of ``dataroot``; returns the pictures written, in order.

    ``instances`` and ``fit`` as ``run`` takes them (None: from the data and the checkpoint)."""
    from ..data.dataset import find_pairs, resolve_instances
    from ..data.labelmaps import MapOptions, crop_to, load_maps

    fmt = image_format(fmt)
    generator = UpstreamGenerator(checkpoint)
    if generator.no_instance:
        instances = "none"
    elif instances == "none":
        raise UserError("--instances none, but the checkpoint takes an instance-edge channel", path=checkpoint,
                        fix="drop --instances none (or --no-instance), or pass the checkpoint trained without them")
    instances = resolve_instances(dataroot, instances, phase=phase)
    base = generator.config.size_multiple
    options = MapOptions(instances=instances, fit=fit, base=base if fit == "pad" else 1)
    pairs = find_pairs(dataroot, phase=phase, instances=instances)
    out = ensure_output_dir(out_dir, what="upstream reference folder")
    remove_stale_temporaries(out)
    written = []
    for pair in (progress(pairs, desc="upstream reference") if show_progress else pairs):
        target = out / f"{pair.name}{OUTPUT_SUFFIX}.{fmt}"
        maps = load_maps(pair, options)
        picture = generator.picture(maps.label, maps.inst)
        atomic_save_image(target, crop_to(picture, maps.size) if fit == "pad" else picture)
        written.append(target)
    return written
