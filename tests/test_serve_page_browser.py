"""The page at ``/`` in a real headless browser (Debian's chromium), driven over the Chrome DevTools Protocol.

It loads the page from a running server, waits for the starting scene, picks the class "car", draws a stroke with
real mouse events, checks the stroke's pixels are exactly the car colour, presses Synthesize and waits for the
picture, which must have the map's size. Skipped when chromium or websocket-client is missing.
"""
from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import time
import urllib.request

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'pix2pixhd-deploy[serve]')")
websocket = pytest.importorskip("websocket", reason="websocket-client is not installed (pip install "
                                                    "websocket-client)")

from serve_helpers import SIZE, make_data, server_thread  # noqa: E402

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--window-size=1200,900", "--remote-debugging-port=0"]


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")


class Page:
    """One tab over CDP: ``evaluate`` JS, send mouse events."""

    def __init__(self, ws_url: str):
        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.ids = itertools.count(1)

    def call(self, method: str, **params):
        n = next(self.ids)
        self.ws.send(json.dumps({"id": n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == n:
                assert "error" not in msg, msg
                return msg.get("result", {})

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 120):
        """Poll ``expression`` until it is true. While the page is still loading it may throw (``document.body``
        is null before the first bytes arrive): that counts as not yet, and the last such error is reported."""
        end, error = time.monotonic() + timeout, None
        while time.monotonic() < end:
            result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
            error = result.get("exceptionDetails")
            value = None if error else result["result"].get("value")
            if value:
                return value
            time.sleep(0.2)
        status = self.evaluate("document.getElementById('status')?.textContent")
        raise AssertionError(f"timed out waiting for {expression} (last error: {error}); the page says: {status}")

    def mouse(self, kind: str, x: float, y: float):
        self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", buttons=1 if kind != "mouseReleased"
                  else 0, clickCount=1)


@pytest.fixture
def browser_page(tmp_path):
    """A served small model and a chromium tab on its page."""
    from pix2pixhd_deploy.runners.open import ModelOptions
    from pix2pixhd_deploy.serve.options import ServeLimits
    from pix2pixhd_deploy.serve.state import ServeState

    binary = chromium()
    checkpoint, _ = make_data(tmp_path, count=1)
    state = ServeState(ModelOptions(model=str(checkpoint), sizes=(SIZE,)), ServeLimits())
    state.load()
    with server_thread(state) as url:
        proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", f"{url}/"],
                                stderr=subprocess.PIPE, text=True)
        try:
            port = None
            for line in proc.stderr:
                found = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
                if found:
                    port = found.group(1)
                    break
            assert port, "chromium printed no DevTools address"
            tabs = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30).read())
            tab = next(t for t in tabs if t["type"] == "page")
            yield Page(tab["webSocketDebuggerUrl"])
        finally:
            proc.terminate()
            proc.wait(30)
            state.close()


def test_draw_a_stroke_submit_and_get_a_picture_of_the_maps_size(browser_page):
    page = browser_page
    page.wait_for("document.body.dataset.state === 'ready'")
    assert page.evaluate("[canvas.width, canvas.height]") == [SIZE[1], SIZE[0]]
    assert page.evaluate("[...document.querySelectorAll('#cls option')].map(o => o.textContent)"
                         ".includes('car (26)')")
    page.evaluate("$('cls').value = '26'; $('cls').onchange(); $('brush').value = 6; true")
    box = page.evaluate("(() => { const r = canvas.getBoundingClientRect(); return [r.left, r.top, r.width, "
                        "r.height]; })()")
    left, top, width, height = box
    y = top + height * 0.5
    page.mouse("mousePressed", left + width * 0.2, y)
    for k in range(1, 11):
        page.mouse("mouseMoved", left + width * (0.2 + 0.05 * k), y)
    page.mouse("mouseReleased", left + width * 0.7, y)
    car = page.evaluate("Array.from(ctx.getImageData(Math.floor(canvas.width * 0.45), Math.floor(canvas.height / 2),"
                        " 1, 1).data)")
    assert car == [0, 0, 142, 255]  # the exact Cityscapes car colour, no anti-aliased blend
    page.evaluate("$('go').click(); true")
    page.wait_for("document.body.dataset.state === 'done'")
    assert page.evaluate("[$('picture').naturalWidth, $('picture').naturalHeight]") == [SIZE[1], SIZE[0]]
    assert "computed in" in page.evaluate("$('status').textContent")
    page.evaluate("undo(); true")
    assert page.evaluate("Array.from(ctx.getImageData(Math.floor(canvas.width * 0.45), Math.floor(canvas.height / "
                         "2), 1, 1).data)") != [0, 0, 142, 255]
