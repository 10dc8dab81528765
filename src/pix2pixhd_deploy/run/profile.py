"""``run --profile``: where a run's seconds and memory went, image by image, and inside the runtime layer by layer.

In:  the run's manifest entries (each picture's stage seconds and page faults, recorded by :mod:`.stream` on every
     run) and the runner's own per-layer counters (:meth:`Runner.layer_profile`; OpenVINO's performance counters).
Out: ``profile.json`` in the output folder and a text summary: the timeline of every image, the first image
     against the steady ones (the median of the rest), the steady time per image against the runtime's own, and the
     layers and layer kinds that take the runtime's time.
"""
from __future__ import annotations

import statistics
from typing import Dict, List, Mapping, Optional, Sequence

#: a picture's stages, in the order they happen (:mod:`.stream` and :meth:`MapsAdapter.last_stages`)
STAGES = ("decode_s", "wait_s", "feeds_s", "runtime_s", "pictures_s", "encode_s", "write_s")
#: a picture's use of the machine; its minor page faults are the sum of the three that follow (:mod:`.stream`)
USAGE = ("minor_faults", "compute_minor_faults", "decode_minor_faults", "write_minor_faults", "major_faults",
         "system_s", "user_s")
TOP_LAYERS = 15


def summarise(images: Sequence[Mapping[str, object]], wall_s: float,
              layers: Optional[List[Dict[str, object]]] = None) -> Dict[str, object]:
    """The profile of a run: ``images`` are its manifest entries in the order they were computed."""
    keys = [k for k in STAGES + USAGE + ("compute_s",) if any(k in e for e in images)]
    first = {k: images[0].get(k) for k in keys} if images else {}
    rest = images[1:]
    steady = {k: statistics.median(float(e.get(k, 0)) for e in rest) for k in keys} if rest else {}
    profile: Dict[str, object] = {"images": len(images), "wall_s": wall_s,
                                  "wall_s_per_image": wall_s / len(images) if images else None,
                                  "first": first, "steady": steady, "timeline": list(images)}
    if rest and first.get("minor_faults"):
        profile["steady_faults_of_first"] = steady["minor_faults"] / first["minor_faults"]
        worst = max(rest, key=lambda e: float(e.get("minor_faults", 0)))
        profile["worst_faults_of_first"] = float(worst.get("minor_faults", 0)) / first["minor_faults"]
        profile["worst_faults_image"] = worst.get("name")
    if steady.get("compute_s") and first.get("compute_s"):
        profile["first_compute_of_steady"] = first["compute_s"] / steady["compute_s"]
    done = sorted(float(e["done_s"]) for e in images if "done_s" in e)
    if len(done) > 1:  # pictures finished per second once the first is out: the run's steady rate
        profile["steady_wall_s_per_image"] = (done[-1] - done[0]) / (len(done) - 1)
        if steady.get("runtime_s"):
            profile["steady_wall_of_runtime"] = profile["steady_wall_s_per_image"] / steady["runtime_s"]
    if layers:
        total = sum(float(v["seconds"]) for v in layers)
        kinds: Dict[str, float] = {}
        for v in layers:
            kind = f"{v['type']} ({v['exec_type']})"
            kinds[kind] = kinds.get(kind, 0.0) + float(v["seconds"])
        runs = max(int(v["runs"]) for v in layers)
        profile["layers"] = {
            "infers": runs, "seconds_per_infer": total / runs,
            "by_kind": [{"kind": k, "seconds_per_infer": s / runs, "share": s / total}
                        for k, s in sorted(kinds.items(), key=lambda kv: -kv[1])],
            "top": [{**v, "seconds_per_infer": float(v["seconds"]) / max(1, int(v["runs"])),
                     "share": float(v["seconds"]) / total} for v in layers[:TOP_LAYERS]],
        }
    return profile


def format_profile(profile: Mapping[str, object]) -> str:
    """The summary ``run --profile`` prints."""
    first, steady = profile["first"], profile["steady"]
    lines = [f"profile: {profile['images']} pictures, {profile['wall_s']:.2f} s in all "
             f"({profile['wall_s_per_image'] or 0:.2f} s a picture)",
             f"{'stage':<14}{'first':>12}{'steady':>12}"]
    for key in STAGES + ("compute_s",) + USAGE:
        if key in first:
            fmt = (lambda v: f"{v:.3f}") if key.endswith("_s") else (lambda v: f"{int(v):,}")
            lines.append(f"{key:<14}{fmt(first[key] or 0):>12}{fmt(steady.get(key, 0)) if steady else '-':>12}")
    if "steady_faults_of_first" in profile:
        lines.append(f"steady page faults are {profile['steady_faults_of_first']:.1%} of the first image's, "
                     f"at most {profile['worst_faults_of_first']:.1%} ({profile['worst_faults_image']})")
    if "first_compute_of_steady" in profile:
        lines.append(f"the first compute took {profile['first_compute_of_steady']:.2f}x a steady one")
    if "steady_wall_of_runtime" in profile:
        lines.append(f"after the first picture, one every {profile['steady_wall_s_per_image']:.3f} s: "
                     f"{profile['steady_wall_of_runtime']:.2f}x the runtime's own {steady['runtime_s']:.3f} s")
    layers = profile.get("layers")
    if layers:
        lines.append(f"runtime layers: {layers['seconds_per_infer']:.3f} s an inference, by kind:")
        lines += [f"  {k['share']:6.1%}  {k['seconds_per_infer']:8.3f} s  {k['kind']}" for k in layers["by_kind"][:8]]
        lines.append("top layers:")
        lines += [f"  {v['share']:6.1%}  {v['seconds_per_infer']:8.3f} s  {v['layer']} ({v['exec_type']})"
                  for v in layers["top"][:8]]
    return "\n".join(lines)
