"""The compare report opens in a real headless browser (Debian's chromium) with every picture loaded.

The page is copied beside itself with a small script that, once the page has loaded, writes how many ``<img>``
there are and which did not load (``complete && naturalWidth > 0`` fails) into the DOM; chromium's ``--dump-dom``
prints it. A copy with one picture deleted proves the check sees a broken image. Skipped when chromium is missing
(``apt-get install -y chromium``).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from pix2pixhd_deploy.compare.compare import compare_dirs
from pix2pixhd_deploy.compare.html import CompareReport, difference_map, label_maps
from pix2pixhd_deploy.seed.postprocess import tensor2im

CHECK_SCRIPT = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                   .map(function (i) { return i.getAttribute("src"); });
  var pre = document.createElement("pre");
  pre.id = "image-check";
  pre.textContent = JSON.stringify({total: imgs.length, broken: broken});
  document.body.appendChild(pre);
});
</script>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")


def images_in_browser(page, tmp_path) -> dict:
    probe = page.with_name("_probe_" + page.name)
    probe.write_text(page.read_text().replace("</body>", CHECK_SCRIPT + "</body>"))
    proc = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=10000", "--dump-dom",
         probe.as_uri()], capture_output=True, text=True, timeout=120)
    probe.unlink()
    found = re.search(r'<pre id="image-check">(.*?)</pre>', proc.stdout)
    assert found, f"chromium printed no result (exit {proc.returncode}):\n{proc.stderr[-2000:]}"
    return json.loads(found.group(1).replace("&quot;", '"'))


def test_report_opens_without_broken_images(tmp_path, scene_dataroot):
    rng = np.random.default_rng(0)
    names = [p.name[:-4] for p in sorted((scene_dataroot / "test_label").iterdir())]
    for side in ("a", "b"):
        (tmp_path / side).mkdir()
    for i, name in enumerate(names):
        a = rng.uniform(-1, 1, (3, 64, 128)).astype(np.float32)
        b = a + (rng.normal(0, 0.02, a.shape).astype(np.float32) if i else 0)
        a.tofile(tmp_path / "a" / f"{name}_0.bin")
        Image.fromarray(tensor2im(b)).save(tmp_path / "b" / f"{name}_0generated.png")
    report = CompareReport(tmp_path / "out" / "report.html", labels=label_maps(scene_dataroot))
    result = compare_dirs(tmp_path / "a", tmp_path / "b", on_image=report.add, show_progress=False)
    page = report.finish(result)
    assert page == tmp_path / "out" / "report.html" and not result.passed  # noisy pairs fail the fp32 preset

    html = page.read_text()
    srcs = re.findall(r'<img src="([^"]+)"', html)
    assert len(srcs) == 4 * len(names) and all((page.parent / s).is_file() for s in srcs)
    assert html.index("Verdict") < html.index("Summary over all images") < html.index(names[0])

    seen = images_in_browser(page, tmp_path)
    assert seen == {"total": 4 * len(names), "broken": []}

    # the check itself: a missing picture is reported as broken
    (tmp_path / "out" / "report_images" / f"{names[1]}_diff.png").unlink()
    seen = images_in_browser(page, tmp_path)
    assert seen["broken"] == [f"report_images/{names[1]}_diff.png"]


def test_difference_map_ramp():
    diff = np.array([[0.0, 1.0, 8.5, 17.0, 25.5, 300.0]])
    rgb = difference_map(diff, amplify=10)
    assert rgb[0, 0].tolist() == [0, 0, 0]
    assert rgb[0, 1, 0] > 0 and rgb[0, 1, 1] == 0          # one level: dark red
    assert rgb[0, 2].tolist() == [255, 0, 0]                 # 8.5 levels x 10 = a third of the ramp: red
    assert rgb[0, 3].tolist() == [255, 255, 0]               # two thirds: yellow
    assert rgb[0, 4].tolist() == rgb[0, 5].tolist() == [255, 255, 255]  # 25.5 levels and more: white
