"""What each PNG compression setting costs and saves on `run`'s own pictures: zlib's levels 0-9 with its default
strategy, and its run-length strategy (Z_RLE, what the tool writes: fileio.PNG_OPTIONS) and Huffman-only coding;
encode seconds (one core, best of ``--repeat``), file size, and a check that the decoded pixels are the ones
encoded.

    python benchmarks/png_level.py RUN_OUTPUT/images [--limit 6] [--repeat 3] [--json out.json]

RUN_OUTPUT/images holds a run's ``*_synthesized_image.png`` and ``*_input_label.png``; each kind is reported on
its own, as the two compress very differently (a photo against a few flat colours). Without a folder, the script
makes two 2048x1024 pictures of its own: a smooth gradient with noise (photo-like) and a coloured label map.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from pix2pixhd_deploy.fileio import PNG_OPTIONS  # noqa: E402

#: (name, Pillow's PNG options); "level 6" is Pillow's default, the reference of the ratios
SETTINGS = [(f"level {n}", {"compress_level": n}) for n in range(10)] + [
    ("level 1, Z_RLE", {"compress_level": 1, "compress_type": zlib.Z_RLE}),
    ("level 6, Huffman only", {"compress_level": 6, "compress_type": zlib.Z_HUFFMAN_ONLY}),
    ("the tool's: level 6, Z_RLE", PNG_OPTIONS)]
REFERENCE = "level 6"


def encode(picture: np.ndarray, options: dict) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(picture).save(buf, format="PNG", **options)
    return buf.getvalue()


def measure(picture: np.ndarray, repeat: int) -> list:
    rows = []
    for name, options in SETTINGS:
        best = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            data = encode(picture, options)
            best = min(best, time.perf_counter() - start)
        back = np.asarray(Image.open(io.BytesIO(data)))
        if not np.array_equal(back, picture):
            raise SystemExit(f"{name}: the decoded pixels differ from the encoded ones")
        rows.append({"setting": name, "seconds": best, "bytes": len(data)})
    return rows


def generated() -> dict:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:1024, 0:2048]
    photo = np.stack([x / 8, y / 4, (x + y) / 12], -1) % 256 + rng.normal(0, 6, (1024, 2048, 3))
    labels = (x // 256 + 8 * (y // 256)) % 35
    palette = rng.integers(0, 256, (35, 3), dtype=np.uint8)
    return {"photo-like (generated)": [np.clip(photo, 0, 255).astype(np.uint8)],
            "label colours (generated)": [palette[labels]]}


def from_folder(folder: Path, limit: int) -> dict:
    kinds = {"pictures": "*_synthesized_image.png", "coloured label maps": "*_input_label.png"}
    found = {}
    for kind, pattern in kinds.items():
        files = sorted(folder.glob(pattern))[:limit]
        if files:
            found[f"{kind} ({len(files)} of {folder})"] = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    if not found:
        raise SystemExit(f"{folder}: no *_synthesized_image.png or *_input_label.png; give a run's images/ folder")
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", type=Path)
    parser.add_argument("--limit", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    sets = from_folder(args.folder, args.limit) if args.folder else generated()
    report = {}
    for kind, pictures in sets.items():
        per = [measure(p, args.repeat) for p in pictures]
        rows = [{"setting": name,
                 "seconds": float(np.mean([r[i]["seconds"] for r in per])),
                 "mib": float(np.mean([r[i]["bytes"] for r in per])) / 2**20} for i, (name, _) in enumerate(SETTINGS)]
        report[kind] = rows
        default = next(r for r in rows if r["setting"] == REFERENCE)
        print(f"\n{kind}: mean per picture; Pillow's default is {REFERENCE}")
        print(f"| setting | encode s | MiB | time vs {REFERENCE} | size vs {REFERENCE} |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for r in rows:
            print(f"| {r['setting']} | {r['seconds']:.3f} | {r['mib']:.2f} | {r['seconds'] / default['seconds']:.2f} "
                  f"| {r['mib'] / default['mib']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
