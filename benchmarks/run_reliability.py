"""What run's reliability costs and guarantees, measured: peak memory flat in the number of images, and the price of
fsync per picture.

1. **Peak RSS of ``run``** over N small images (256x512) with a fake engine far faster than PNG writing (a grey
   picture per map, no model): each N runs in its own process, through :func:`pipeline.run` itself, and the peak
   resident memory (``ru_maxrss``) is printed. With bounded queues it stays flat from 50 to 200 images; without them
   the computed pictures would pile up in front of the writer (0.4 MiB each at this size, 8 MiB at 2048x1024).
2. **fsync per picture**: the same 256x512 picture (PNG) and a 2048x1024 one written N times with
   :func:`fileio.atomic_save_image`, with its fsyncs (file before the rename, folder after) and with them
   switched off; the difference per picture is printed.

    .venv/bin/python benchmarks/run_reliability.py            # 50 and 200 images
    .venv/bin/python benchmarks/run_reliability.py --counts 50 200 400
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


class FakeRunner:
    """Enough of a runner for ``run``: a context manager that describes itself."""

    name = "fake"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def describe(self) -> str:
        return "fake engine: grey pictures, no model"


class FakeEngine:
    """The engine call shape of :func:`adapters.make_adapter`, far faster than PNG writing: a grey picture per map."""

    def __call__(self, labels, insts, want_raw):
        import numpy as np

        return np.full((*labels.shape, 3), 128, np.uint8), None

    def check_size(self, height, width, path=None):
        return None

    def describe(self) -> str:
        return "fake"


def child(split: Path, count: int, model: Path, out: Path) -> None:
    """One measured run (in its own process): ``pipeline.run`` over the first ``count`` pairs, peak RSS as JSON."""
    from pix2pixhd_deploy.data.dataset import cityscapes_pairs
    from pix2pixhd_deploy.run import local as pipeline
    from pix2pixhd_deploy.run.settings import RunSettings

    pipeline.make_adapter = lambda runner, *args, **kwargs: FakeEngine()
    pairs = cityscapes_pairs(split)[:count]
    settings = RunSettings(model=str(model), backend="onnxruntime", batch_size=1)  # no torch import
    start = time.perf_counter()
    report = pipeline.run(pairs, out, FakeRunner(), settings, show_progress=False, write_index=False)
    seconds = time.perf_counter() - start
    print(json.dumps({"images": report.done, "seconds": seconds,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def peak_rss(counts, height: int, width: int) -> None:
    from pix2pixhd_deploy.data.synthetic import write_cityscapes_split

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_cityscapes_split(tmp / "val", max(counts), height=height, width=width, city="ulm")
        model = tmp / "model.bin"  # run hashes the model file; the fake engine never reads it
        model.write_bytes(os.urandom(1024))
        print(f"peak RSS of run, {height}x{width} images, fake engine (faster than PNG writing):")
        for n in counts:
            proc = subprocess.run([sys.executable, __file__, "--child", str(tmp / "val"), str(n), str(model),
                                   str(tmp / f"out{n}")], capture_output=True, text=True, check=True,
                                  env={**os.environ, "PYTHONPATH": str(REPO / "src")})
            got = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"  {got['images']:4d} images: peak RSS {got['peak_rss_mib']:.0f} MiB "
                  f"({got['images'] / got['seconds']:.0f} images/s)")


def fsync_cost(repeats: int) -> None:
    import numpy as np

    from pix2pixhd_deploy import fileio

    rng = np.random.default_rng(0)
    print(f"atomic_save_image, PNG, median of {repeats} writes (this machine's disk):")
    for h, w in ((256, 512), (1024, 2048)):
        picture = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        with tempfile.TemporaryDirectory(dir=REPO) as tmp:  # the repository's disk, not a tmpfs /tmp
            times = {"with fsync": [], "without": []}
            real = os.fsync
            try:
                for i in range(repeats):  # interleaved, so that the machine's load drifts over both alike
                    for label, fsync in (("with fsync", real), ("without", lambda fd: None)):
                        os.fsync = fsync
                        t = time.perf_counter()
                        fileio.atomic_save_image(Path(tmp) / f"{label[:4]}{i}.png", picture)
                        times[label].append(time.perf_counter() - t)
            finally:
                os.fsync = real
            figures = {k: float(np.median(v)) * 1000 for k, v in times.items()}
            print(f"  {h}x{w}: {figures['with fsync']:.1f} ms with fsync, {figures['without']:.1f} ms without: "
                  f"{figures['with fsync'] - figures['without']:+.1f} ms per picture")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=15, help="writes per figure of the fsync cost")
    args = parser.parse_args()
    peak_rss(args.counts, args.height, args.width)
    fsync_cost(args.repeats)


if __name__ == "__main__":
    main()
