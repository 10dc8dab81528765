"""The generator's two stem convolutions, computed from the label and instance maps instead of the 36-channel tensor.

Both stems see the one-hot + edge input, where each pixel is one of ``2 * label_nc`` codes (``label * 2 + edge``),
so a convolution output is a sum of weight columns picked by the codes under the kernel:

* local stem (``model1_1``: ReflectionPad2d(3) + Conv2d(36, 32, 7) at full resolution, 118 GMAC at 2048x1024):
  one table lookup where the 7x7 window holds a single code (most pixels), else the sum of 49 looked-up columns;
* global stem (``model``: AvgPool2d(3, 2, 1, count_include_pad=False), ReflectionPad2d(3), Conv2d(36, 64, 7) at
  half resolution, 59 GMAC): each pooled value is the share of each code in its 3x3 cell, so an output is the
  weighted sum of the looked-up columns of the codes in 49 cells, and one lookup where all 49 cells hold one code.

The arithmetic is the convolutions' in another order (differences of ~1e-7, like any two conv implementations);
about 8% of the work of the generator's input layers remains. The loops are C (``csrc/stems.c``), compiled on first
use with the system's C compiler into a cache folder and loaded with ctypes; where no compiler is found, the same
outputs come from torch's convolutions (slower, equally exact). The rest of the generator runs in an ONNX graph
exported with ``--input-format stems`` (:mod:`export`), which takes these two tensors as inputs.
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from .encoding import check_label_ids
from .errors import PathLike, UserError

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "stems.c"
SIDECAR_SUFFIX = ".stems.npz"


# --------------------------------------------------------------------------------------------- weights

@dataclass
class StemWeights:
    """The two stem convolutions' weights, and the code tables derived from them."""

    local_weight: np.ndarray    # (ngf, C, 7, 7)
    local_bias: np.ndarray
    global_weight: np.ndarray   # (2 ngf, C, 7, 7)
    global_bias: np.ndarray
    label_nc: int
    use_instance: bool

    @classmethod
    def from_generator(cls, generator, label_nc: int = 35, use_instance: bool = True) -> "StemWeights":
        if getattr(generator, "n_local_enhancers", 0) != 1:
            raise UserError("the stems fast path needs a LocalEnhancer with one local enhancer (label2city_1024p's "
                            "layout)", fix="export this model with --input-format maps or tensor")
        local, glob = generator.model1_1[1], generator.model[1]
        channels = label_nc + int(use_instance)
        for conv in (local, glob):
            if tuple(conv.kernel_size) != (7, 7) or conv.in_channels != channels:
                raise UserError(f"unexpected stem convolution {conv}", fix="export with --input-format maps")
        f = lambda t: t.detach().float().cpu().numpy().copy()  # noqa: E731
        return cls(f(local.weight), f(local.bias), f(glob.weight), f(glob.bias), label_nc, use_instance)

    def save(self, path: PathLike) -> None:
        from .fileio import atomic_open

        with atomic_open(path, "wb") as fh:
            np.savez(fh, local_weight=self.local_weight, local_bias=self.local_bias,
                     global_weight=self.global_weight, global_bias=self.global_bias,
                     label_nc=np.int64(self.label_nc), use_instance=np.bool_(self.use_instance))

    @classmethod
    def load(cls, path: PathLike) -> "StemWeights":
        path = Path(path)
        if not path.is_file():
            raise UserError("the stem weights file of this graph is missing", path=path,
                            fix="export the graph again with --input-format stems (it writes both files)")
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(z["local_weight"], z["local_bias"], z["global_weight"], z["global_bias"],
                           int(z["label_nc"]), bool(z["use_instance"]))
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(f"cannot read the stem weights ({exc})", path=path,
                            fix="export the graph again with --input-format stems") from exc

    @property
    def n_codes(self) -> int:
        return self.label_nc * (2 if self.use_instance else 1)

    def tables(self, which: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(taps * codes, O) table, (codes, O) all-taps sums, (O,) bias for the ``local`` or ``global`` stem."""
        w = self.local_weight if which == "local" else self.global_weight
        b = self.local_bias if which == "local" else self.global_bias
        o = w.shape[0]
        wl = w[:, :self.label_nc].transpose(2, 3, 1, 0).reshape(49, self.label_nc, o)
        if self.use_instance:
            we = w[:, self.label_nc].transpose(1, 2, 0).reshape(49, 1, o)
            table = np.stack([wl, wl + we], axis=2).reshape(49, self.n_codes, o)
        else:
            table = wl
        table = np.ascontiguousarray(table, dtype=np.float32)
        return (table.reshape(49 * self.n_codes, o), np.ascontiguousarray(table.sum(axis=0), np.float32),
                np.ascontiguousarray(b, np.float32))


def sidecar_path(onnx_file: PathLike) -> Path:
    return Path(str(onnx_file) + SIDECAR_SUFFIX)


# ------------------------------------------------------------------------------------------ the C loops

_LIB = None
_TRIED = False


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pix2pixhd_deploy"


def load_library() -> Optional[ctypes.CDLL]:
    """The compiled stems library, building it on first use; None (logged once) when no C compiler works."""
    global _LIB, _TRIED
    if _LIB is not None or _TRIED:
        return _LIB
    _TRIED = True
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + platform.machine().encode() + platform.processor().encode()).hexdigest()[:16]
    target = _cache_dir() / f"stems-{key}.so"
    if not target.is_file():
        cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            log.warning("no C compiler found: the stems are computed with torch's convolutions (slower)")
            return None
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError:  # no writable home: build into the temporary folder instead
            target = Path(tempfile.gettempdir()) / "pix2pixhd_deploy" / target.name
            target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-stems-", suffix=".so", dir=target.parent)
        os.close(fd)
        flags = ["-O3", "-fopenmp", "-shared", "-fPIC"]
        if platform.machine() in ("x86_64", "AMD64"):
            flags.append("-march=native")
        proc = subprocess.run([cc, *flags, str(SOURCE), "-o", tmp], capture_output=True, text=True)
        if proc.returncode != 0:
            os.unlink(tmp)
            log.warning("could not compile %s (%s): the stems are computed with torch's convolutions (slower)",
                        SOURCE.name, proc.stderr.strip().splitlines()[-1:] or proc.returncode)
            return None
        os.replace(tmp, target)
    lib = ctypes.CDLL(str(target))
    for fn in (lib.local_stem, lib.global_stem):
        fn.restype = None
        fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                       ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
    _LIB = lib
    return lib


def stem_shapes(generator, height: Optional[int], width: Optional[int]):
    """Per-sample shapes ((C, H, W), (C, H/2, W/2)) of a LocalEnhancer's local and global stem outputs (None where
    the size is not known): the global stem runs after AvgPool2d(3, 2, 1), which halves rounding up."""
    half = lambda d: None if d is None else (d - 1) // 2 + 1  # noqa: E731
    return ((generator.model1_1[1].out_channels, height, width),
            (generator.model[1].out_channels, half(height), half(width)))


def codes_from_maps(label: np.ndarray, inst: Optional[np.ndarray]) -> np.ndarray:
    """(H, W) int32 codes: label * 2 + edge (upstream's 4-neighbour edges), or the label alone."""
    from .encoding import edges_from_instances

    code = label.astype(np.int32)
    if inst is None:
        return code
    return code * 2 + edges_from_instances(inst).astype(np.int32)


class StemComputer:
    """Computes (local_stem, global_stem) for a batch of maps; C when available, else torch convolutions."""

    def __init__(self, weights: StemWeights, threads: Optional[int] = None):
        self.weights = weights
        self.threads = threads or 0
        self.lib = load_library()
        self.local = weights.tables("local")
        self.glob = weights.tables("global")

    def __call__(self, labels: np.ndarray, insts: Optional[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
        n, h, w = labels.shape
        check_label_ids(labels, self.weights.label_nc)  # a max() pass; raises only on an id out of range
        if self.lib is None:
            return self._torch(labels, insts)
        lo, go = self.local[0].shape[1], self.glob[0].shape[1]
        local = np.empty((n, lo, h, w), np.float32)
        glob = np.empty((n, go, (h - 1) // 2 + 1, (w - 1) // 2 + 1), np.float32)
        p = lambda a: a.ctypes.data  # noqa: E731
        for i in range(n):
            code = np.ascontiguousarray(codes_from_maps(labels[i], insts[i] if insts is not None else None))
            self.lib.local_stem(p(code), h, w, p(self.local[0]), p(self.local[1]), p(self.local[2]),
                                self.weights.n_codes, lo, p(local[i]), self.threads)
            self.lib.global_stem(p(code), h, w, p(self.glob[0]), p(self.glob[1]), p(self.glob[2]),
                                 self.weights.n_codes, go, p(glob[i]), self.threads)
        return local, glob

    def _torch(self, labels, insts):
        import torch
        import torch.nn.functional as F

        from .encoding import encode_input_torch

        wt = self.weights
        with torch.inference_mode():
            x = encode_input_torch(torch.from_numpy(labels), torch.from_numpy(insts) if insts is not None else None,
                                   wt.label_nc)
            local = F.conv2d(F.pad(x, (3, 3, 3, 3), mode="reflect"), torch.from_numpy(wt.local_weight),
                             torch.from_numpy(wt.local_bias))
            pooled = F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)
            glob = F.conv2d(F.pad(pooled, (3, 3, 3, 3), mode="reflect"), torch.from_numpy(wt.global_weight),
                            torch.from_numpy(wt.global_bias))
        return local.numpy(), glob.numpy()
