"""The model a server holds: a :class:`~..runners.open.Model` (the Python API's object), loaded once with the same
engine choice and model cache as ``run``; its :meth:`~..runners.open.Model.compute` answers the batcher's batches.
Here: what ``serve`` can tell about its settings before loading anything."""
from __future__ import annotations

from ..errors import UserError
from ..runners.open import ModelOptions


def check_compatible(options: ModelOptions) -> None:
    """The settings errors ``serve`` can tell before loading anything."""
    for h, w in options.sizes:
        if h <= 0 or w <= 0 or h % 32 or w % 32:
            raise UserError(f"--size {h},{w} is not a size the generator takes", fix="give HEIGHT,WIDTH, each a "
                                                                                     "positive multiple of 32")
