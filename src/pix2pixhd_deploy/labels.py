"""The Cityscapes label table: the single source of truth for label ids, names and colours.

It is derived from ``cityscapesscripts.helpers.labels`` (the dataset's own table) instead of being typed again.
pix2pixHD's label2city models use ``label_nc = 35`` one-hot channels indexed by Cityscapes ``labelId`` 0..33, plus
channel 34, which upstream's ``labelcolormap(35)`` paints in the licence-plate colour (Cityscapes id -1, never
drawn into ``*_labelIds.png``). Everything else here (``LABEL_NC``, the palette, name lookups) derives from
:data:`LABELS`.
"""
from __future__ import annotations

from typing import Dict, List, NamedTuple, Tuple

import numpy as np
from cityscapesscripts.helpers import labels as _cityscapes

#: The channel that upstream's palette gives to the licence plate (Cityscapes id -1).
LICENSE_PLATE_CHANNEL = 34


class Label(NamedTuple):
    id: int
    name: str
    color: Tuple[int, int, int]
    has_instances: bool


def _build_table() -> List[Label]:
    table = []
    for lab in _cityscapes.labels:
        label_id = lab.id if lab.id >= 0 else LICENSE_PLATE_CHANNEL
        table.append(Label(label_id, lab.name, tuple(lab.color), bool(lab.hasInstances)))
    table.sort(key=lambda lab: lab.id)
    ids = [lab.id for lab in table]
    if ids != list(range(len(table))):  # pragma: no cover - guards a change in cityscapesscripts
        raise RuntimeError(f"cityscapesscripts label ids are not 0..N-1 after mapping: {ids}")
    return table


#: One entry per one-hot channel, ordered by id.
LABELS: List[Label] = _build_table()
#: Number of one-hot channels of the label2city models (35).
LABEL_NC: int = len(LABELS)
ID_TO_LABEL: Dict[int, Label] = {lab.id: lab for lab in LABELS}
NAME_TO_ID: Dict[str, int] = {lab.name: lab.id for lab in LABELS}
#: (LABEL_NC, 3) uint8, the palette of upstream's ``labelcolormap(35)``.
PALETTE: np.ndarray = np.array([lab.color for lab in LABELS], dtype=np.uint8)


def colorize(label_map: np.ndarray) -> np.ndarray:
    """Colour an (H, W) integer label map as upstream's ``tensor2label`` does: (H, W, 3) uint8.

    Ids outside 0..LABEL_NC-1 stay black, as upstream leaves them.
    """
    ids = np.asarray(label_map)
    out = np.zeros(ids.shape + (3,), dtype=np.uint8)
    valid = (ids >= 0) & (ids < LABEL_NC)
    out[valid] = PALETTE[ids[valid].astype(np.intp)]
    return out
