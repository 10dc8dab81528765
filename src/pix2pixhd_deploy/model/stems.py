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
use with the system's C compiler (``$CC``) into this user's private cache folder (:func:`cache_dir`), under a key of
the source, compiler, flags and CPU features, and loaded with ctypes; where no compiler is found, the same
outputs come from torch's convolutions (slower, equally exact). The rest of the generator runs in an ONNX graph
exported with ``--input-format stems`` (:mod:`export`), which takes these two tensors as inputs.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import platform
import shlex
import shutil
import stat
import subprocess
import tempfile
import threading
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..data.labelmaps import check_label_ids
from ..errors import PathLike, UserError

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

    def without_biases(self) -> "StemWeights":
        """The same convolutions without their biases: for a graph whose first layers are instance norms, which
        cancel a per-channel constant (the CPU graph; ``export.rewrites.drop_biases_before_norms``)."""
        return replace(self, local_bias=np.zeros_like(self.local_bias), global_bias=np.zeros_like(self.global_bias))

    def save(self, path: PathLike, *, checkpoint_sha256: Optional[str] = None) -> None:
        """Save beside a graph; ``checkpoint_sha256``, the checkpoint the graph was exported from, lets ``run``
        refuse a graph and a ``.npz`` that do not belong together."""
        from ..fileio import atomic_open

        extra = {"checkpoint_sha256": np.str_(checkpoint_sha256)} if checkpoint_sha256 else {}
        with atomic_open(path, "wb") as fh:
            np.savez(fh, local_weight=self.local_weight, local_bias=self.local_bias,
                     global_weight=self.global_weight, global_bias=self.global_bias,
                     label_nc=np.int64(self.label_nc), use_instance=np.bool_(self.use_instance), **extra)

    @classmethod
    def load(cls, path: PathLike) -> "StemWeights":
        return cls._read(path)[0]

    @classmethod
    def recorded_checkpoint(cls, path: PathLike) -> Optional[str]:
        """The sha256 of the checkpoint these weights were exported from (None in files written before it was
        recorded)."""
        return cls._read(path)[1]

    @classmethod
    def _read(cls, path: PathLike) -> Tuple["StemWeights", Optional[str]]:
        path = Path(path)
        if not path.is_file():
            raise UserError("the stem weights file of this graph is missing", path=path,
                            fix="export the graph again with --input-format stems (it writes both files)")
        try:
            with np.load(path, allow_pickle=False) as z:
                weights = cls(z["local_weight"], z["local_bias"], z["global_weight"], z["global_bias"],
                              int(z["label_nc"]), bool(z["use_instance"]))
                checkpoint = str(z["checkpoint_sha256"]) if "checkpoint_sha256" in z.files else None
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
            raise UserError(f"cannot read the stem weights ({type(exc).__name__}: {exc}; the file may be cut short)",
                            path=path,
                            fix="export the graph again with --input-format stems") from exc
        weights.check()
        return weights, checkpoint

    def check(self) -> None:
        """The shapes the C loops rely on: 7x7 kernels over ``label_nc (+1)`` channels, one bias per output."""
        channels = self.label_nc + int(self.use_instance)
        ok = 0 < self.label_nc <= 255
        for w, b in ((self.local_weight, self.local_bias), (self.global_weight, self.global_bias)):
            ok = ok and w.ndim == 4 and w.shape[1:] == (channels, 7, 7) and b.shape == (w.shape[0],) and \
                w.shape[0] > 0 and np.isfinite(w).all() and np.isfinite(b).all()
        if not ok:
            raise UserError(f"the stem weights have unexpected shapes (local {self.local_weight.shape}, global "
                            f"{self.global_weight.shape} for label_nc={self.label_nc}) or values that are not finite",
                            fix="export the graph again with --input-format stems")

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
_ARGTYPES = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
             ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
#: what the C functions return (stems.c): 0, or one of these
_C_ERRORS = {1: "out of memory", 2: "a code outside the table", 3: "a bad size or table"}


def cache_dir() -> Path:
    """This user's cache folder for compiled code: ``$XDG_CACHE_HOME/pix2pixhd-deploy`` or
    ``~/.cache/pix2pixhd-deploy``, created 0700; refused (None) unless it is a real folder owned by this user that
    no one else can write to, since a library loaded from it runs with this user's rights."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = Path(base) / "pix2pixhd-deploy"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(folder)
    except OSError as exc:
        log.info("cannot use %s for compiled code (%s)", folder, exc.strerror or exc)
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        log.warning("%s is not a private folder of this user (a link, another owner, or writable by others): "
                    "compiled code is not cached there", folder)
        return None
    return folder


def cpu_flags() -> str:
    """The CPU's feature flags (``/proc/cpuinfo``): a ``-march=native`` build is only valid on the same set."""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):  # x86, ARM
                    return " ".join(sorted(line.split(":", 1)[1].split()))
    return platform.processor()


def compiler() -> Optional[List[str]]:
    """The C compiler command, ``$CC`` split as a shell would (``ccache gcc``), else ``cc`` or ``gcc``."""
    if os.environ.get("CC"):
        return shlex.split(os.environ["CC"])
    found = shutil.which("cc") or shutil.which("gcc")
    return [found] if found else None


def compiler_flags() -> List[str]:
    flags = ["-O3", "-fopenmp", "-shared", "-fPIC"]
    if platform.machine() in ("x86_64", "AMD64"):
        flags.append("-march=native")
    return flags


def build_key(cc: Sequence[str], flags: Sequence[str]) -> str:
    """What a build depends on: the source, the compiler (its path and version), its flags, the machine and the
    CPU's feature set. A home folder shared by different CPUs gets one build per CPU."""
    try:
        version = subprocess.run([*cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        version = ""
    parts = [SOURCE.read_bytes(), " ".join(cc).encode(), version.encode(), " ".join(flags).encode(),
             platform.machine().encode(), cpu_flags().encode()]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


def _compile(cc: Sequence[str], flags: Sequence[str], target: Path) -> bool:
    """Build into a temporary name beside ``target`` and rename it into place (two processes may build at once)."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-stems-", suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        proc = subprocess.run([*cc, *flags, str(SOURCE), "-o", tmp], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as exc:
        proc = None
        why = str(exc)
    if proc is not None and proc.returncode == 0:
        os.chmod(tmp, 0o700)
        os.replace(tmp, target)
        return True
    with contextlib.suppress(OSError):
        os.unlink(tmp)
    if proc is not None:
        why = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
    log.warning("could not compile %s with %s (%s): the stems are computed with torch's convolutions (slower)",
                SOURCE.name, " ".join(cc), why)
    return False


def load_library() -> Optional[ctypes.CDLL]:
    """The compiled stems library, building it on first use; None (said once, in one line) when no C compiler
    works or the library cannot be loaded: the stems then come from torch's convolutions."""
    global _LIB, _TRIED
    if _LIB is not None or _TRIED:
        return _LIB
    _TRIED = True
    cc = compiler()
    if cc is None:
        log.warning("no C compiler found: the stems are computed with torch's convolutions (slower)")
        return None
    flags = compiler_flags()
    folder = cache_dir()
    scratch = None
    if folder is None:  # no private cache: build for this process only, in a private temporary folder
        scratch = tempfile.mkdtemp(prefix="pix2pixhd-deploy-")
        folder = Path(scratch)
    target = folder / f"stems-{build_key(cc, flags)}.so"
    try:
        if not target.is_file() and not _compile(cc, flags, target):
            return None
        lib = ctypes.CDLL(str(target))
    except OSError as exc:
        log.warning("could not load %s (%s): the stems are computed with torch's convolutions (slower)", target, exc)
        return None
    finally:
        if scratch is not None:  # loaded (or not): the file is no longer needed
            shutil.rmtree(scratch, ignore_errors=True)
    for fn in (lib.local_stem, lib.global_stem):
        fn.restype = ctypes.c_int
        fn.argtypes = _ARGTYPES
    for fn in (lib.local_stem_work, lib.global_stem_work):
        fn.restype = ctypes.c_size_t
        fn.argtypes = [ctypes.c_int, ctypes.c_int]
    _LIB = lib
    return lib


def stem_shapes(generator, height: Optional[int], width: Optional[int]):
    """Per-sample shapes ((C, H, W), (C, H/2, W/2)) of a LocalEnhancer's local and global stem outputs (None where
    the size is not known): the global stem runs after AvgPool2d(3, 2, 1), which halves rounding up."""
    half = lambda d: None if d is None else (d - 1) // 2 + 1  # noqa: E731
    return ((generator.model1_1[1].out_channels, height, width),
            (generator.model[1].out_channels, half(height), half(width)))


def codes_from_maps(label: np.ndarray, inst: Optional[np.ndarray], out: Optional[np.ndarray] = None) -> np.ndarray:
    """(H, W) int32 codes: label * 2 + edge (upstream's 4-neighbour edges), or the label alone; into ``out`` (a
    C-contiguous (H, W) int32 array) when given."""
    from .encoding import instance_edges

    code = np.empty(label.shape, np.int32) if out is None else out
    np.copyto(code, label, casting="unsafe")
    if inst is not None:
        code *= 2
        code += instance_edges(inst)
    return code


class StemComputer:
    """Computes (local_stem, global_stem) for a batch of maps; C when available, else torch convolutions."""

    def __init__(self, weights: StemWeights, threads: Optional[int] = None, *, reuse: bool = False):
        """``reuse``: write each call's stems into buffers kept for the next call of the same thread and shape,
        instead of fresh arrays (a 2048x1024 map's stems are 384 MB, which the allocator hands back to the kernel and
        takes again, first-touched, every image); the arrays returned are then valid until that thread's next
        call, which suits a runtime that reads them during one synchronous inference."""
        self.weights = weights
        self.threads = threads or 0
        self.lib = load_library()
        self.local = weights.tables("local")
        self.glob = weights.tables("global")
        self._buffers = threading.local() if reuse else None

    def _empty(self, shape: Tuple[int, ...], which: str, dtype=np.float32) -> np.ndarray:
        if self._buffers is None:
            return np.empty(shape, dtype)
        kept = getattr(self._buffers, which, None)
        if kept is None or kept.shape != shape or kept.dtype != dtype:
            kept = np.empty(shape, dtype)
            setattr(self._buffers, which, kept)
        return kept

    def _work(self, fn, h: int, w: int, which: str) -> int:
        """The C stem's scratch memory: kept with the stems' buffers (``reuse``), else 0 (allocated per call)."""
        return 0 if self._buffers is None else self._empty((fn(h, w),), which, np.uint8).ctypes.data

    def __call__(self, labels: np.ndarray, insts: Optional[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
        self.check_maps(labels, insts)
        if self.lib is None:
            return self._torch(labels, insts)
        n, h, w = labels.shape
        lo, go = self.local[0].shape[1], self.glob[0].shape[1]
        local = self._empty((n, lo, h, w), "local")
        glob = self._empty((n, go, (h - 1) // 2 + 1, (w - 1) // 2 + 1), "global")
        p = lambda a: a.ctypes.data  # noqa: E731
        works = (self._work(self.lib.local_stem_work, h, w, "local_work"),
                 self._work(self.lib.global_stem_work, h, w, "global_work"))
        for i in range(n):
            code = codes_from_maps(labels[i], insts[i] if insts is not None else None,
                                   out=self._empty((h, w), "code", np.int32))
            for fn, (table, wsum, bias), o, out, work in (
                    (self.lib.local_stem, self.local, lo, local[i], works[0]),
                    (self.lib.global_stem, self.glob, go, glob[i], works[1])):
                status = fn(p(code), h, w, p(table), p(wsum), p(bias), self.weights.n_codes, o, p(out), self.threads,
                            work or None)
                if status:
                    raise UserError(f"the stems library failed on a {h}x{w} map "
                                    f"({_C_ERRORS.get(status, f'error {status}')})",
                                    fix="free some memory, or use a smaller input")
        return local, glob

    def check_maps(self, labels: np.ndarray, insts: Optional[np.ndarray]) -> None:
        """What the C loops rely on, checked before every call: (N, H, W) integer maps of at least 7x7 (reflection
        padding 3 at half size), ids inside the table, instance maps exactly when the table was built with them."""
        wt = self.weights
        if labels.ndim != 3 or labels.dtype.kind not in "iu" or min(labels.shape[1:], default=0) < 7:
            raise UserError(f"the stems need (N, H, W) integer label maps of at least 7x7, not "
                            f"{labels.dtype} {labels.shape}", fix="check the label maps")
        if (insts is not None) != wt.use_instance:
            raise UserError("instance maps were " + ("given to" if insts is not None else "not given to")
                            + " stem weights exported " + ("with" if wt.use_instance else "without") + " them",
                            fix="pass the matching --no-instance setting, or export the graph again")
        if insts is not None and (insts.shape != labels.shape or insts.dtype.kind not in "iu"):
            raise UserError(f"the instance maps {insts.dtype} {insts.shape} do not match the label maps "
                            f"{labels.shape}", fix="check the instance maps")
        if labels.size and labels.min() < 0:
            raise UserError(f"label id {int(labels.min())} is negative", fix="check the label maps")
        check_label_ids(labels, wt.label_nc)  # a max() pass; raises only on an id out of range

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
