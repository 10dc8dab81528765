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


# ------------------------------------------------------------------------------------------ colours -> ids

#: The id that black (0, 0, 0) becomes. Five Cityscapes labels share black: unlabeled 0, ego vehicle 1,
#: rectification border 2, out of roi 3, static 4; none has a train id. Ego vehicle is the most frequent of them
#: (the car hood at the bottom of every Cityscapes frame: 2.47 M of the 4.97 M black pixels of the 23 samples),
#: so it is the choice that changes the fewest pixels of a colour round trip (docs/labelmaps.md).
BLACK_ID: int = NAME_TO_ID["ego vehicle"]


def _colour_table() -> Dict[Tuple[int, int, int], int]:
    """Cityscapes colour -> label id. Where several labels share a colour, the one with a train id wins (car, not
    licence plate; pole, not polegroup); black, which no train id has, is :data:`BLACK_ID`."""
    by_colour: Dict[Tuple[int, int, int], List] = {}
    for lab in _cityscapes.labels:
        by_colour.setdefault(tuple(lab.color), []).append(lab)
    table = {}
    for colour, labs in by_colour.items():
        trained = [lab for lab in labs if 0 <= lab.trainId < 255]
        if len(labs) == 1:
            table[colour] = labs[0].id
        elif colour == (0, 0, 0):
            table[colour] = BLACK_ID
        elif len(trained) == 1:
            table[colour] = trained[0].id
        else:  # pragma: no cover - guards a change in cityscapesscripts
            raise RuntimeError(f"cityscapesscripts gives {colour} to {[lab.name for lab in labs]}, no single one "
                               "with a train id")
    return table


#: Cityscapes colour (r, g, b) -> the label id it is read as (see :func:`_colour_table`).
COLOUR_TO_ID: Dict[Tuple[int, int, int], int] = _colour_table()
#: Ids that share their colour with another label and so do not survive a colour round trip.
AMBIGUOUS_IDS: List[int] = sorted(lab.id for lab in LABELS if COLOUR_TO_ID[lab.color] != lab.id)
#: Ids of the "thing" classes, whose instances Cityscapes numbers id * 1000 + k.
THING_IDS: List[int] = [lab.id for lab in LABELS if lab.has_instances]
