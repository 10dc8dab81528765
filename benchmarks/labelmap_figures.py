"""What the label-map reader's two approximations change, measured on real Cityscapes maps.

(a) The colour round trip: each label map's ids -> Cityscapes colours (cityscapesScripts' table) -> ids through
    ``labelmaps.colours_to_ids``: the pixels whose id changes, and which ids become which. Five labels share black
    (unlabeled, ego vehicle, rectification border, out of roi, static), pole and polegroup share a colour, and the
    licence-plate channel shares car's, so only those can change.
(b) ``--instances labels``: the instance-edge map (the generator's 36th channel) from the derived instance map
    against the one from the real ``*_instanceIds.png``: the pixels that differ, as edges lost (touching instances
    of one class merged, crowd regions joined to an instance beside them) and edges added.

Data: ``DATAROOT/<phase>_label`` and ``<phase>_inst`` (default: the 23 samples of NVIDIA's repository in
``../shared/data/cityscapes_samples``, phases test and train). Prints the figures with the machine; ``--json``
saves them.

    python benchmarks/labelmap_figures.py
    python benchmarks/labelmap_figures.py --json labelmap_figures.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from pix2pixhd_deploy.data.dataset import find_pairs  # noqa: E402
from pix2pixhd_deploy.data.labelmaps import colours_to_ids, instances_from_labels, read_instance_ids, read_label_ids  # noqa: E402,E501
from pix2pixhd_deploy.data.labels import ID_TO_LABEL, PALETTE  # noqa: E402
from pix2pixhd_deploy.model.encoding import edges_from_instances  # noqa: E402
from pix2pixhd_deploy.provenance import machine  # noqa: E402

SAMPLES = Path(os.environ.get("PIX2PIXHD_SAMPLES", REPO.parent / "shared" / "data" / "cityscapes_samples"))


def measure(dataroot: Path, phases) -> dict:
    changes: Counter = Counter()  # (from id, to id) -> pixels
    pixels = changed = 0
    edge = Counter()
    images = 0
    t0 = time.perf_counter()
    for phase in phases:
        for pair in find_pairs(dataroot, phase=phase, instances="files"):
            label = read_label_ids(pair.label)
            back = colours_to_ids(PALETTE[label], path=pair.label)
            moved = label != back
            pixels += label.size
            changed += int(moved.sum())
            for (a, b), n in zip(*np.unique(np.stack([label[moved], back[moved]], 1), axis=0, return_counts=True)):
                changes[(int(a), int(b))] += int(n)
            true_edges = edges_from_instances(read_instance_ids(pair.instance)) > 0
            derived = edges_from_instances(instances_from_labels(label)) > 0
            edge["true_edge_pixels"] += int(true_edges.sum())
            edge["lost"] += int((true_edges & ~derived).sum())
            edge["added"] += int((derived & ~true_edges).sum())
            images += 1
    edge["differ"] = edge["lost"] + edge["added"]
    return {
        "data": str(dataroot), "phases": list(phases), "images": images, "pixels": pixels,
        "round_trip": {"changed_pixels": changed, "changed_share": changed / pixels if pixels else 0.0,
                       "by_id": [{"from": a, "from_name": ID_TO_LABEL[a].name, "to": b, "to_name": ID_TO_LABEL[b].name,
                                  "pixels": n} for (a, b), n in changes.most_common()]},
        "derived_instances": {**edge, "differ_share_of_pixels": edge["differ"] / pixels if pixels else 0.0,
                              "lost_share_of_true_edges": (edge["lost"] / edge["true_edge_pixels"]
                                                           if edge["true_edge_pixels"] else 0.0)},
        "seconds": round(time.perf_counter() - t0, 1), "machine": machine(),
    }


def lines(fig: dict) -> list:
    rt, di = fig["round_trip"], fig["derived_instances"]
    out = [f"{fig['images']} label maps ({', '.join(fig['phases'])}) in {fig['data']}, {fig['pixels']:,} pixels; "
           f"{fig['machine']['cpu']}",
           f"(a) colour round trip: {rt['changed_pixels']:,} pixels change id ({100 * rt['changed_share']:.2f}%)"]
    out += [f"      {r['from']:>2} {r['from_name']:<22} -> {r['to']:>2} {r['to_name']:<12} {r['pixels']:>10,}"
            for r in rt["by_id"]]
    out.append(f"(b) --instances labels: {di['differ']:,} edge-map pixels differ from the real instance maps' "
               f"({100 * di['differ_share_of_pixels']:.3f}% of pixels): {di['lost']:,} edge pixels lost "
               f"({100 * di['lost_share_of_true_edges']:.1f}% of the {di['true_edge_pixels']:,} true edge pixels), "
               f"{di['added']:,} added")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataroot", type=Path, default=SAMPLES, help="folder with <phase>_label/ and <phase>_inst/")
    ap.add_argument("--phases", nargs="+", default=["test", "train"], help="phases to read (default test train)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    fig = measure(args.dataroot, args.phases)
    print("\n".join(lines(fig)))
    if args.json:
        args.json.write_text(json.dumps(fig, indent=1) + "\n")
        print(f"figures: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
