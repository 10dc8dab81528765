"""The model a server holds: loaded once, with the same engine choice and model cache as ``run``.

In:  ``--checkpoint``/``--model``, the sizes to prepare (``--size``, default the Cityscapes 1024x2048), the encoding.
Out: :class:`ServeModel`, whose :meth:`~ServeModel.compute` turns a batch of maps of one size (labels uint8
     (N, H, W), instances int32 (N, H, W) or None) into pictures uint8 (N, H, W, 3) through
     :func:`adapters.make_engine`, exactly as ``run`` computes them.

Sizes. A server sees maps of many sizes, and the fastest CPU path (a graph from the model cache) has one static size
each. So, for a checkpoint on a CPU:

* each ``--size`` gets its cached graph, built (once, into the cache, as ``run`` builds it) and loaded at start-up:
  a map of that size gives exactly ``run``'s picture for it;
* any other size runs on torch from the same checkpoint (``run --backend torch``'s pixels), loaded on first use.
  Graphs are never built on a request: a build takes minutes, and a client could make the server build one per
  size it invents.

On a GPU, with ``--backend torch``, or with a ``--model`` file, one runner serves every size the model takes (a
static graph refuses other sizes with one clear error).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import UserError
from ..labels import LABEL_NC

log = logging.getLogger(__name__)

Size = Tuple[int, int]
CITYSCAPES_SIZE: Size = (1024, 2048)


@dataclass
class ModelOptions:
    """How the server loads its model (the ``run`` flags that decide the engine)."""

    model: str
    backend: Optional[str] = None
    device: Optional[str] = None
    fp16: bool = False
    sizes: Sequence[Size] = (CITYSCAPES_SIZE,)
    label_nc: int = LABEL_NC
    use_instance: bool = True
    cache_dir: Optional[str] = None
    threads: Optional[int] = None   # runtime threads (a Ray replica's CPUs); None: all cores


@dataclass
class _Loaded:
    runner: object
    engine: object
    backend: str
    reason: str
    checkpoint: Optional[str]  # the checkpoint a cached graph was made from (None: a --model file, or torch)


@dataclass
class ServeModel:
    """Engines by size (``None``: the one that takes any size), opened once each; see the module docstring."""

    options: ModelOptions
    engines: Dict[Optional[Size], _Loaded] = field(default_factory=dict)

    @classmethod
    def load(cls, options: ModelOptions) -> "ServeModel":
        """Choose and open the engine for each prepared size (building cached graphs as ``run`` does)."""
        served = cls(options)
        for size in dict.fromkeys(tuple(s) for s in options.sizes):
            served._open(size)
            if None in served.engines:  # one runner takes every size: nothing more to prepare
                break
        return served

    # ------------------------------------------------------------------ opening
    def _open(self, size: Size, backend: Optional[str] = None) -> _Loaded:
        from ..adapters import make_engine
        from ..choose import choose
        from ..pipeline import RunSettings, open_runner

        o = self.options
        choice = choose(o.model, backend=backend or o.backend, device=o.device, fp16=o.fp16, label_nc=o.label_nc,
                        use_instance=o.use_instance, sizes={size}, cache_dir=o.cache_dir)
        settings = RunSettings.from_choice(choice, device=o.device, fp16=o.fp16, label_nc=o.label_nc,
                                           use_instance=o.use_instance, cache_dir=o.cache_dir)
        runner = open_runner(settings, choice, threads=o.threads)
        engine = make_engine(runner, o.label_nc, o.use_instance, threads=o.threads)
        loaded = _Loaded(runner, engine, choice.backend, choice.reason, choice.checkpoint)
        fixed = choice.cache is not None or engine.size is not None
        self.engines[tuple(engine.size or size) if fixed else None] = loaded
        log.info("serve: %s", choice.reason)
        return loaded

    def engine_for(self, size: Size) -> _Loaded:
        """The engine for maps of ``size`` (H, W as the network sees them). Called only from the batcher's one
        compute thread, so an engine opened here on first use is opened once."""
        found = self.engines.get(size) or self.engines.get(None)
        if found is not None:
            return found
        first = next(iter(self.engines.values()))
        if first.checkpoint is not None:  # a graph cached from a checkpoint: torch takes the other sizes
            log.info("serve: %dx%d has no prepared graph, so torch runs it from the checkpoint (loaded once; "
                     "add --size %d,%d to prepare its graph at start-up)", size[1], size[0], *size)
            return self._open(size, backend="torch")
        return first  # a --model file: its adapter names the sizes it takes

    # ------------------------------------------------------------------ the work
    def compute(self, labels: np.ndarray, insts: Optional[np.ndarray]) -> Tuple[np.ndarray, float, str]:
        """(pictures (N, H, W, 3) uint8, compute seconds, backend) for one batch of same-size maps."""
        loaded = self.engine_for(tuple(labels.shape[1:3]))
        pictures, _ = loaded.engine(labels, insts if self.options.use_instance else None)
        return pictures, float(loaded.engine.inference_time), loaded.backend

    def describe(self) -> Dict[str, object]:
        return {"engines": [{"size": list(k) if k else "any", "backend": v.backend, "reason": v.reason}
                            for k, v in self.engines.items()],
                "label_nc": self.options.label_nc, "use_instance": self.options.use_instance}

    @property
    def prepared_sizes(self) -> List[Size]:
        return [k for k in self.engines if k is not None]

    def close(self) -> None:
        for loaded in self.engines.values():
            try:
                loaded.runner.deactivate()
            except Exception:  # closing is best effort at exit; the process ends either way
                log.debug("serve: a runner did not close cleanly", exc_info=True)
        self.engines.clear()


def check_compatible(options: ModelOptions) -> None:
    """The settings errors ``serve`` can tell before loading anything."""
    for h, w in options.sizes:
        if h <= 0 or w <= 0 or h % 32 or w % 32:
            raise UserError(f"--size {h},{w} is not a size the generator takes", fix="give HEIGHT,WIDTH, each a "
                                                                                     "positive multiple of 32")
