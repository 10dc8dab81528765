"""Procedural Cityscapes-like scenes: a label map and a matching 16-bit instance map, for the demo and the tests.

A street seen from a car: sky, a skyline of buildings and trees, a road in perspective with sidewalks, poles with
traffic signs, cars on the road and people on the sidewalks (each car and person with its own Cityscapes instance
id, ``label_id * 1000 + k``), and the ego vehicle's bonnet at the bottom. Ids are Cityscapes labelIds from
:mod:`labels`. Deterministic for a given seed.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

import numpy as np

from ..fileio import atomic_save_image
from .labels import NAME_TO_ID

SKY, BUILDING, VEGETATION = NAME_TO_ID["sky"], NAME_TO_ID["building"], NAME_TO_ID["vegetation"]
ROAD, SIDEWALK, TERRAIN = NAME_TO_ID["road"], NAME_TO_ID["sidewalk"], NAME_TO_ID["terrain"]
POLE, SIGN, CAR, PERSON = NAME_TO_ID["pole"], NAME_TO_ID["traffic sign"], NAME_TO_ID["car"], NAME_TO_ID["person"]
EGO = NAME_TO_ID["ego vehicle"]


def make_scene(height: int = 1024, width: int = 2048, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """One scene: (label (H, W) uint8, instance (H, W) uint16). Painted back to front; the steps draw from one
    random generator in this order, so a seed always gives the same scene."""
    scene = _Scene(height, width, np.random.default_rng(seed))
    _skyline(scene)
    _ground(scene)
    scene.inst[:] = scene.label  # stuff classes: the instance id is the label id
    _poles(scene)
    _things(scene)
    _bonnet(scene)
    return scene.label, scene.inst.astype(np.uint16)


class _Scene:
    """The canvas being painted: label and instance ids, pixel coordinates, the horizon and the road's vanishing
    point."""

    def __init__(self, h: int, w: int, rng: np.random.Generator):
        self.h, self.w, self.rng = h, w, rng
        self.yy, self.xx = np.mgrid[0:h, 0:w]
        self.label = np.full((h, w), SKY, dtype=np.uint8)
        self.inst = np.zeros((h, w), dtype=np.int32)
        self.horizon = int(h * rng.uniform(0.40, 0.50))
        self.vanish = 0.0  # set by _ground

    def depth(self, y):
        """0 at the horizon, 1 at the bottom edge."""
        return (y - self.horizon) / max(self.h - self.horizon, 1)

    def road_x(self, y: float, side: float) -> float:
        """x of the road's edge (side -1 or 1; between them, across the road) at row ``y``."""
        return self.vanish + side * (0.03 * self.w + self.depth(y) * 0.60 * self.w)


def _skyline(s: _Scene) -> None:
    """Buildings of random widths and heights, some trees in front."""
    h, w, rng = s.h, s.w, s.rng
    x = 0
    while x < w:
        bw = int(w * rng.uniform(0.05, 0.15))
        top = int(s.horizon - h * rng.uniform(0.12, 0.38))
        s.label[max(top, 0):s.horizon + 1, x:x + bw] = BUILDING
        x += bw
    for _ in range(rng.integers(3, 7)):
        cx, cy = rng.uniform(0, w), s.horizon - h * rng.uniform(0.02, 0.12)
        rx, ry = w * rng.uniform(0.03, 0.07), h * rng.uniform(0.06, 0.12)
        s.label[((s.xx - cx) / rx) ** 2 + ((s.yy - cy) / ry) ** 2 <= 1] = VEGETATION


def _ground(s: _Scene) -> None:
    """A road in perspective between sidewalks, terrain strips at the far sides."""
    w = s.w
    ground = s.yy > s.horizon
    s.vanish = w * s.rng.uniform(0.42, 0.58)
    depth = np.clip(s.depth(s.yy), 0, 1)
    half_road = 0.03 * w + depth * 0.60 * w
    half_walk = half_road + 0.02 * w + depth * 0.30 * w
    s.label[ground] = TERRAIN
    s.label[ground & (np.abs(s.xx - s.vanish) <= half_walk)] = SIDEWALK
    s.label[ground & (np.abs(s.xx - s.vanish) <= half_road)] = ROAD


def _poles(s: _Scene) -> None:
    """Poles with signs on the sidewalks."""
    h, w, rng = s.h, s.w, s.rng
    for _ in range(rng.integers(2, 5)):
        base_y = rng.uniform(s.horizon + 0.05 * h, h * 0.9)
        side = rng.choice([-1.0, 1.0])
        px = s.road_x(base_y, side) + side * w * 0.02
        scale = s.depth(base_y)
        pw, ph = max(2, int(6 + 14 * scale)), int(h * (0.15 + 0.35 * scale))
        x0, y0 = int(px - pw / 2), int(base_y - ph)
        sign = int(pw * 4)
        for ids in (s.label, s.inst):
            ids[max(y0, 0):int(base_y), max(x0, 0):x0 + pw] = POLE
            ids[max(y0, 0):max(y0, 0) + sign, max(x0 - sign // 2, 0):x0 + pw + sign // 2] = SIGN


def _things(s: _Scene) -> None:
    """Cars on the road and people on the sidewalks, far to near so nearer ones cover farther ones; each its own
    instance id."""
    h, w, rng, xx, yy = s.h, s.w, s.rng, s.xx, s.yy
    things: List[Tuple[float, int]] = []
    things += [(rng.uniform(s.horizon + 0.04 * h, h * 0.85), CAR) for _ in range(rng.integers(3, 7))]
    things += [(rng.uniform(s.horizon + 0.04 * h, h * 0.9), PERSON) for _ in range(rng.integers(2, 6))]
    counters = {CAR: 0, PERSON: 0}
    for base_y, cls in sorted(things):
        scale = s.depth(base_y)
        if cls == CAR:
            cw, ch = w * (0.03 + 0.15 * scale), h * (0.025 + 0.13 * scale)
            cx = s.road_x(base_y, rng.uniform(-0.8, 0.8))
            body = (np.abs(xx - cx) <= cw / 2) & (yy <= base_y) & (yy >= base_y - ch * 0.6)
            cabin = (np.abs(xx - cx) <= cw * 0.35) & (yy < base_y - ch * 0.6) & (yy >= base_y - ch)
            mask = body | cabin
        else:
            pw, ph = w * (0.006 + 0.02 * scale), h * (0.05 + 0.25 * scale)
            side = rng.choice([-1.0, 1.0])
            cx = s.road_x(base_y, side) + side * w * (0.01 + 0.30 * scale * rng.uniform(0.2, 0.8))
            mask = (((xx - cx) / (pw / 2)) ** 2 + ((yy - (base_y - ph / 2)) / (ph / 2)) ** 2) <= 1
        s.label[mask] = cls
        s.inst[mask] = cls * 1000 + counters[cls]
        counters[cls] += 1


def _bonnet(s: _Scene) -> None:
    """The ego vehicle's bonnet at the bottom."""
    bonnet = s.yy > s.h * 0.94 - 0.04 * s.h * np.cos((s.xx / s.w - 0.5) * np.pi)
    s.label[bonnet] = EGO
    s.inst[bonnet] = EGO


def write_cityscapes_split(split_dir: Path, count: int, *, height: int = 1024, width: int = 2048, seed: int = 0,
                           city: str = "democity") -> List[str]:
    """Write ``count`` scenes as a gtFine split: ``SPLIT/<city>/<city>_000000_0000NN_gtFine_{labelIds,instanceIds}.png``.

    Returns the Cityscapes stems written. Existing files are kept (the scenes are deterministic).
    """
    folder = Path(split_dir) / city
    folder.mkdir(parents=True, exist_ok=True)
    stems = []
    for i in range(count):
        stem = f"{city}_000000_{i:06d}"
        label_path = folder / f"{stem}_gtFine_labelIds.png"
        inst_path = folder / f"{stem}_gtFine_instanceIds.png"
        if not (label_path.is_file() and inst_path.is_file()):
            label, inst = make_scene(height, width, seed=seed + i)
            atomic_save_image(label_path, label)
            atomic_save_image(inst_path, inst)
        stems.append(stem)
    return stems


def scene_maps(batch: int, height: int, width: int, seed: int = 0,
               label_nc: int = 35) -> Tuple[np.ndarray, np.ndarray]:
    """``batch`` street scenes (seeds ``seed``, ``seed + 1``, ...): (N, H, W) uint8 ids, (N, H, W) int32 ids: the
    export check's input and bench's. For a model with fewer than Cityscapes' 34 label ids, the ids wrap around
    ``label_nc``."""
    labels = np.empty((batch, height, width), dtype=np.uint8)
    insts = np.empty((batch, height, width), dtype=np.int32)
    for n in range(batch):
        label, inst = make_scene(height, width, seed=seed + n)
        labels[n] = label % label_nc if label.max() >= label_nc else label
        insts[n] = inst
    return labels, insts
