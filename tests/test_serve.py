"""``serve``: run's pixels over HTTP, batching, bad requests, the queue bound, disconnects, the key, the probes.

One small generator (64x128 maps) is loaded once for the module, with ``run``'s engine choice (the CPU graph from
the model cache where OpenVINO or ONNX Runtime is installed), and served by uvicorn in a thread over states with
different limits.
"""
from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'pix2pixhd-deploy[serve]')")
httpx = pytest.importorskip("httpx", reason="httpx is not installed (pip install 'pix2pixhd-deploy[serve]')")

from conftest import assert_within_one_level, run_cli  # noqa: E402
from serve_helpers import SIZE, make_data, picture, png_bytes, server_thread  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The small model loaded once, the maps, and run's pictures of them (the default path, as a user runs it)."""
    from pix2pixhd_deploy.runners.open import Model, ModelOptions

    root = tmp_path_factory.mktemp("serve")
    checkpoint, pairs = make_data(root, count=8)
    run_cli(["pix2pixhd-deploy", "run", "--checkpoint", checkpoint, "--cityscapes", root / "val", "-o", root / "run"])
    options = ModelOptions(model=str(checkpoint), sizes=(SIZE,))
    model = Model.load(options)
    yield {"root": root, "checkpoint": checkpoint, "pairs": pairs, "options": options, "model": model}
    model.close()


def make_state(served, **limits):
    from pix2pixhd_deploy.serve.options import ServeLimits
    from pix2pixhd_deploy.serve.state import ServeState

    state = ServeState(served["options"], ServeLimits(**limits))
    state.model = served["model"]
    return state


def files_of(pair):
    return {"label": (pair.label.name, pair.label.read_bytes()), "instance": (pair.instance.name,
                                                                                  pair.instance.read_bytes())}


async def post_all(url, requests, **client_options):
    async with httpx.AsyncClient(timeout=120, **client_options) as client:
        return await asyncio.gather(*(client.post(f"{url}/v1/synthesize", **r) for r in requests))


def run_picture(served, pair):
    from PIL import Image

    return np.asarray(Image.open(served["root"] / "run" / "images" / f"{pair.name}_synthesized_image.png"))


async def until(condition, what: str, timeout: float = 120) -> None:
    """Poll ``condition()`` (a state of the server in this process) until it holds; fail naming ``what``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not condition():
        assert loop.time() < end, f"{what} never happened"
        await asyncio.sleep(0.02)


def metric(text: str, name: str) -> float:
    """One sample of the /metrics text (``name`` with its labels, e.g. ``pix2pixhd_errors_total{kind="internal"}``);
    0 when the server has not counted it yet."""
    import re

    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def same_picture(got: np.ndarray, want: np.ndarray, batch: int, what: str = "") -> None:
    """run's picture, exactly when the server computed the map alone (run's batch of 1), else by the project's
    one-level rule (a batch of N in OpenVINO may differ from a batch of 1 by one level in a few values)."""
    if batch == 1:
        assert np.array_equal(got, want), what
    else:
        assert_within_one_level(got, want, what)


def test_eight_concurrent_clients_get_runs_pictures_in_batches(served, tmp_path):
    """8 concurrent clients while the first batch (1 to 4 maps) is held: the others queue behind it (seen in the
    batcher), and once it is let go they are computed in batches of at most --max-batch 4, so one batch of 4 at
    least; each client gets run's picture. A lone JPEG request gets the pixels of run --format jpg (the same
    encoder, quality 75)."""
    pairs = served["pairs"]
    gate = threading.Event()
    state = blocking_state(served, gate, max_batch=4, max_wait_ms=0)
    with server_thread(state) as url:
        async def scenario():
            async with httpx.AsyncClient(timeout=120) as client:
                tasks = [asyncio.create_task(client.post(f"{url}/v1/synthesize", files=files_of(p))) for p in pairs]
                try:  # the first batch computes (held) while every other request is queued behind it
                    await until(lambda: state.batcher.in_flight == len(pairs), "8 maps queued or computing")
                    queued = state.batcher.depth
                finally:
                    gate.set()
                return queued, await asyncio.gather(*tasks)

        queued, answers = asyncio.run(scenario())
        assert 4 <= queued <= 7, queued  # the held batch took 1 to 4; the rest waited: the next batch is a full 4
        sizes = [int(r.headers["X-Batch-Size"]) for r in answers]
        for pair, r, size in zip(pairs, answers, sizes):
            assert r.status_code == 200, r.text
            assert r.headers["content-type"] == "image/png"
            same_picture(picture(r.content), run_picture(served, pair), size, pair.name)
            assert float(r.headers["X-Compute-Seconds"]) > 0
        assert max(sizes) == 4 and all(1 <= s <= 4 for s in sizes), sizes
        batches = sum(1 / s for s in sizes)  # each batch of k answers k requests
        assert abs(batches - round(batches)) < 1e-9, sizes
        metrics = httpx.get(f"{url}/metrics").text
        assert metric(metrics, "pix2pixhd_batch_size_count") == round(batches), (sizes, metrics)
        assert metric(metrics, "pix2pixhd_batch_size_sum") == 8

        # JPEG as run writes it (the same encoder on the same pixels), and instances derived from the labels
        jpg = httpx.post(f"{url}/v1/synthesize?format=jpg&instances=labels", files={"label": files_of(pairs[0])["label"]},
                         timeout=60)
        assert jpg.status_code == 200 and jpg.headers["content-type"] == "image/jpeg"
        assert jpg.headers["X-Batch-Size"] == "1"
        run_cli(["pix2pixhd-deploy", "run", "--checkpoint", served["checkpoint"], "--cityscapes",
                 served["root"] / "val", "--instances", "labels", "--format", "jpg", "-o", tmp_path / "run-jpg"])
        want = picture((tmp_path / "run-jpg" / "images" / f"{pairs[0].name}_synthesized_image.jpg").read_bytes())
        assert np.array_equal(picture(jpg.content), want)
        metrics = httpx.get(f"{url}/metrics").text
        assert metric(metrics, 'pix2pixhd_requests_total{status="200"}') == 9
        assert "pix2pixhd_batch_size_bucket" in metrics and metric(metrics, "pix2pixhd_queue_depth") == 0


def test_fit_pad_crops_back_to_the_maps_size_and_other_sizes_run_on_torch(served, tmp_path):
    """A 70x100 map with fit=pad (padded to 96x128, a size with no prepared graph, so torch runs it): the picture of
    run --fit pad --backend torch for the same files, exactly (the same computation, a batch of 1)."""
    from pix2pixhd_deploy.data.synthetic import make_scene

    label, inst = make_scene(70, 100, seed=3)
    label_png, inst_png = png_bytes(label), png_bytes(inst)
    data = tmp_path / "data"
    for sub, name, body in (("test_label", "pad_000000_000000_gtFine_labelIds.png", label_png),
                            ("test_inst", "pad_000000_000000_gtFine_instanceIds.png", inst_png)):
        (data / sub).mkdir(parents=True)
        (data / sub / name).write_bytes(body)
    run_cli(["pix2pixhd-deploy", "run", "--checkpoint", served["checkpoint"], "--dataroot", data, "--fit", "pad",
             "--backend", "torch", "-o", tmp_path / "run"])
    (want_file,) = (tmp_path / "run" / "images").glob("*_synthesized_image.png")
    want = picture(want_file.read_bytes())
    assert want.shape == (70, 100, 3)
    with server_thread(make_state(served)) as url:
        r = httpx.post(f"{url}/v1/synthesize?fit=pad", files={"label": ("a.png", label_png),
                                                               "instance": ("b.png", inst_png)}, timeout=120)
    assert r.status_code == 200, r.text
    assert r.headers["X-Backend"] == "torch" and r.headers["X-Batch-Size"] == "1"
    got = picture(r.content)
    assert got.shape == (70, 100, 3)
    assert np.array_equal(got, want), int(np.abs(got.astype(int) - want.astype(int)).max())


def bad_requests(served, tmp_path):
    """(what, files, query, expected status, the CLI's words for the same file or None)."""
    from pix2pixhd_deploy.data.synthetic import make_scene

    good = served["pairs"][0].label.read_bytes()
    label, _ = make_scene(*SIZE, seed=0)
    out_of_range = label.copy()
    out_of_range[0, :5] = 200
    colours = np.zeros(SIZE + (3,), np.uint8)
    colours[...] = (1, 2, 3)
    bomb = png_bytes(np.zeros((4000, 4000), np.uint8))  # 16 M pixels in a few kB
    return [
        ("not a PNG", {"label": ("notes.txt", b"hello, world")}, "", 400, "not an image file"),
        ("truncated", {"label": ("cut.png", good[: len(good) // 2])}, "", 400, "damaged or truncated"),
        ("bomb", {"label": ("bomb.png", bomb)}, "", 413, "more than this server takes"),
        ("ids out of range", {"label": ("ids.png", png_bytes(out_of_range))}, "instances=labels", 400,
         "label ids 200 (5 px) are outside 0..34"),
        ("unknown colours", {"label": ("c.png", png_bytes(colours))}, "instances=labels", 400,
         "no Cityscapes label colour"),
        ("too small", {"label": ("tiny.png", png_bytes(label[:8, :8]))}, "instances=labels", 400, "too small"),
        ("missing label", {"instance": ("i.png", good)}, "", 400, "no 'label' file field"),
        ("no instance map", {"label": ("l.png", good)}, "instances=files", 400, "has no instance map"),
        ("bad format", {"label": ("l.png", good)}, "format=gif", 400, "unknown format='gif'"),
        ("not multipart", None, "", 400, "no 'label' file field"),
    ]


def test_bad_requests_get_one_clear_4xx_and_a_burst_leaves_it_serving(served, tmp_path):
    cases = bad_requests(served, tmp_path)
    with server_thread(make_state(served, max_pixels=2_000_000)) as url:
        for what, files, query, status, words in cases:
            r = httpx.post(f"{url}/v1/synthesize?{query}", files=files, timeout=60) if files else \
                httpx.post(f"{url}/v1/synthesize", content=b"x=1", timeout=60)
            assert r.status_code == status, (what, r.text)
            message = r.json()["error"]
            assert words in message and "\n" not in message, (what, message)
            assert "/tmp" not in message, (what, message)  # no server path in any answer
        burst = [{"files": f, "params": dict(p.split("=") for p in q.split("&") if p)} for _, f, q, _, _ in cases
                 if f] * 12
        answers = asyncio.run(post_all(url, burst[:100]))
        assert len(answers) == 100 and all(400 <= r.status_code < 500 for r in answers)
        good = httpx.post(f"{url}/v1/synthesize", files=files_of(served["pairs"][1]), timeout=60)
        assert good.status_code == 200
        assert np.array_equal(picture(good.content), run_picture(served, served["pairs"][1]))
        assert httpx.get(f"{url}/healthz").status_code == 200 and httpx.get(f"{url}/readyz").status_code == 200
        assert 'pix2pixhd_errors_total{kind="bad_request"}' in httpx.get(f"{url}/metrics").text


def test_the_same_words_as_the_cli(served, tmp_path):
    """A map the CLI refuses gives the CLI's sentence (``error: <UserError>``, from the same reader) over HTTP,
    with the upload's name where the CLI names the file."""
    from pix2pixhd_deploy.data.labelmaps import read_label_ids
    from pix2pixhd_deploy.errors import UserError

    path = tmp_path / "x.png"
    path.write_bytes(b"hello, world")
    with pytest.raises(UserError) as cli:
        read_label_ids(path)
    with server_thread(make_state(served)) as url:
        r = httpx.post(f"{url}/v1/synthesize", files={"label": ("x.png", b"hello, world")}, timeout=60)
    assert r.status_code == 400 and r.json()["error"] == str(cli.value).replace(str(path), "label (x.png)")


def blocking_state(served, gate: threading.Event, **limits):
    """A state whose computation waits for ``gate`` (so a test decides when a batch finishes); ``state.entered``
    is set once a batch is being computed (held)."""
    state = make_state(served, **limits)
    compute = state.batcher.compute
    state.entered = threading.Event()

    def held(labels, insts):
        state.entered.set()
        gate.wait(60)
        return compute(labels, insts)

    state.batcher.compute = held
    return state


async def queue_depth(client, url, want: int, pending, timeout: float = 120) -> int:
    """The batcher's queue depth from /metrics, polled until it is ``want`` or ``timeout`` passes; fails at once,
    naming the answer, if one of the ``pending`` requests (which should be held or queued) is answered first."""
    import re
    import time

    end, depth = time.monotonic() + timeout, -1
    while time.monotonic() < end and depth != want:
        answered = [t for t in pending if t.done()]
        assert not answered, "a request that should wait was answered: " + "; ".join(
            "cancelled" if t.cancelled() else repr(t.exception()) if t.exception() else
            f"{t.result().status_code} {t.result().text[:200]}"
            for t in answered)
        text = (await client.get(f"{url}/metrics")).text
        depth = int(float(re.search(r"^pix2pixhd_queue_depth (\S+)$", text, re.M).group(1)))
        await asyncio.sleep(0.05)
    return depth


def test_a_full_queue_answers_503_with_retry_after(served):
    gate = threading.Event()
    pairs = served["pairs"]
    state = blocking_state(served, gate, max_batch=1, max_wait_ms=0, max_queue=2)
    with server_thread(state) as url:
        async def scenario():
            async with httpx.AsyncClient(timeout=120) as client:
                def send(pair):
                    return asyncio.create_task(client.post(f"{url}/v1/synthesize", files=files_of(pair)))

                # the first map computing (held) before two more are sent: sent at once, the third could find two
                # waiting (the worker not yet come round to take the first) and get the 503 itself
                first = [send(pairs[0])]
                try:
                    await until(state.entered.is_set, "the first map's computation")
                    first += [send(p) for p in pairs[1:3]]
                    depth = await queue_depth(client, url, 2, first)  # one computing, two queued: the queue is full
                    assert depth == 2, f"the queue never held 2 maps (depth {depth})"
                    late = await client.post(f"{url}/v1/synthesize", files=files_of(pairs[3]))
                finally:
                    gate.set()
                return late, await asyncio.gather(*first)

        late, first = asyncio.run(scenario())
    assert late.status_code == 503 and late.headers["Retry-After"] == "1" and "busy" in late.json()["error"]
    assert [r.status_code for r in first] == [200, 200, 200]


def test_an_upload_over_the_byte_limit_gets_413_and_one_at_the_limit_is_served(served):
    """The server reads at most max_upload_bytes + 1 bytes of a field: a label map padded (bytes after the PNG's end,
    which the reader ignores) to exactly the limit is served with run's picture; one byte more, in the label or the
    instance field, is a 413 naming the field, counted as too_large; the server goes on serving."""
    pair = served["pairs"][0]
    state = make_state(served, max_pixels=64 * 128)
    limit = state.max_upload_bytes
    label, instance = files_of(pair)["label"][1], files_of(pair)["instance"][1]
    padded = {n: body + b"\0" * (limit - len(body)) for n, body in (("label", label), ("instance", instance))}
    assert all(len(body) == limit for body in padded.values())
    with server_thread(state) as url:
        def post(label_bytes, instance_bytes):
            return httpx.post(f"{url}/v1/synthesize", files={"label": ("l.png", label_bytes),
                                                              "instance": ("i.png", instance_bytes)}, timeout=120)

        at_limit = post(padded["label"], padded["instance"])
        over_label = post(padded["label"] + b"\0", instance)
        over_instance = post(label, padded["instance"] + b"\0")
        after = post(label, instance)
        metrics = httpx.get(f"{url}/metrics").text
    assert at_limit.status_code == 200, at_limit.text
    assert np.array_equal(picture(at_limit.content), run_picture(served, pair))
    for field, r in (("label", over_label), ("instance", over_instance)):
        assert r.status_code == 413, (field, r.status_code, r.text)
        assert r.json() == {"error": f"{field}: the file is larger than this server takes ({limit} bytes)"}
    assert after.status_code == 200 and np.array_equal(picture(after.content), run_picture(served, pair))
    assert metric(metrics, 'pix2pixhd_errors_total{kind="too_large"}') == 2
    assert metric(metrics, 'pix2pixhd_requests_total{status="413"}') == 2
    assert metric(metrics, 'pix2pixhd_requests_total{status="200"}') == 2


def test_a_computation_that_fails_answers_500_and_the_server_goes_on(served, caplog):
    """A computation that raises something other than a UserError (a runtime's bug): that request gets a 500 with
    one JSON line naming the error's type and not its text (which may hold server paths), the traceback goes to the
    server log, the error is counted as internal, and the next request gets run's picture."""
    import logging

    pairs = served["pairs"]
    state = make_state(served)
    compute, failures = state.batcher.compute, [RuntimeError("the runtime failed in /srv/secret/model.xml")]

    def failing_once(labels, insts):
        if failures:
            raise failures.pop()
        return compute(labels, insts)

    state.batcher.compute = failing_once
    caplog.set_level(logging.ERROR, logger="pix2pixhd_deploy.serve")
    with server_thread(state) as url:
        failed = httpx.post(f"{url}/v1/synthesize", files=files_of(pairs[0]), timeout=120)
        after = [httpx.post(f"{url}/v1/synthesize", files=files_of(p), timeout=120) for p in pairs[:2]]
        metrics = httpx.get(f"{url}/metrics").text
    assert not failures  # the failure was the first request's
    assert failed.status_code == 500, (failed.status_code, failed.text)
    assert failed.headers["content-type"] == "application/json"
    assert failed.json() == {"error": "the computation failed (RuntimeError); the server log has the details"}
    for pair, r in zip(pairs, after):
        assert r.status_code == 200, r.text
        assert np.array_equal(picture(r.content), run_picture(served, pair)), pair.name
    assert metric(metrics, 'pix2pixhd_errors_total{kind="internal"}') == 1
    assert metric(metrics, 'pix2pixhd_requests_total{status="500"}') == 1
    assert metric(metrics, 'pix2pixhd_requests_total{status="200"}') == 2
    logged = [r for r in caplog.records if r.getMessage() == "serve: a batch failed"]
    assert len(logged) == 1 and logged[0].exc_info and "/srv/secret/model.xml" in str(logged[0].exc_info[1])


def test_a_client_that_leaves_does_not_take_its_batch_down(served):
    gate = threading.Event()
    pairs = served["pairs"]
    with server_thread(blocking_state(served, gate, max_batch=4, max_wait_ms=500)) as url:
        async def scenario():
            async with httpx.AsyncClient(timeout=120) as client, httpx.AsyncClient(timeout=1.0) as impatient:
                stay = [asyncio.create_task(client.post(f"{url}/v1/synthesize", files=files_of(p))) for p in pairs[:3]]
                with pytest.raises(httpx.TimeoutException):
                    await impatient.post(f"{url}/v1/synthesize", files=files_of(pairs[3]))
                gate.set()
                return await asyncio.gather(*stay)

        answers = asyncio.run(scenario())
        after = httpx.post(f"{url}/v1/synthesize", files=files_of(pairs[4]), timeout=60)
    assert [r.status_code for r in answers] == [200, 200, 200]
    for pair, r in zip(pairs, answers):
        assert np.array_equal(picture(r.content), run_picture(served, pair))
    assert after.status_code == 200


def test_an_api_key_is_required_when_set(served):
    with server_thread(make_state(served, api_key="s3cret")) as url:
        files = files_of(served["pairs"][0])
        assert httpx.post(f"{url}/v1/synthesize", files=files, timeout=60).status_code == 401
        wrong = httpx.post(f"{url}/v1/synthesize", files=files, headers={"Authorization": "Bearer nope"}, timeout=60)
        assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"] == "Bearer"
        assert httpx.get(f"{url}/metrics").status_code == 401
        right = httpx.post(f"{url}/v1/synthesize", files=files, headers={"Authorization": "Bearer s3cret"},
                           timeout=60)
        assert right.status_code == 200
        assert httpx.get(f"{url}/healthz").status_code == 200  # probes stay open for the orchestrator
        assert "/v1/synthesize" in httpx.get(f"{url}/openapi.json").json()["paths"]
        assert "<canvas" in httpx.get(f"{url}/").text


def test_the_page_helpers(served):
    from pix2pixhd_deploy.data.labels import COLOUR_TO_ID

    with server_thread(make_state(served)) as url:
        classes = httpx.get(f"{url}/v1/classes").json()
        assert {c["name"] for c in classes if c["paintable"]} >= {"road", "car", "person", "sky"}
        assert all(COLOUR_TO_ID[tuple(c["color"])] == c["id"] for c in classes if c["paintable"])
        scene = httpx.get(f"{url}/v1/scene?height=64&width=128&seed=2")
        assert picture(scene.content).shape == (64, 128, 3)
        ids = httpx.post(f"{url}/v1/colorize", files={"label": ("l.png", served["pairs"][0].label.read_bytes())})
        assert picture(ids.content).shape == (64, 128, 3)
        assert httpx.get(f"{url}/v1/info").json()["sizes"] == [list(SIZE)]


def test_a_batch_waits_for_company_only_while_requests_are_on_their_way():
    """The oldest job waits (up to --max-wait-ms) for more only while other requests are still uploading or
    decoding: a lone client's batch starts at once, one still on its way joins it, and one that fails (released
    without a job) lets the batch go."""
    from pix2pixhd_deploy.serve.batcher import Batcher

    sizes = []

    def compute(labels, insts):
        sizes.append(labels.shape[0])
        return np.zeros(labels.shape + (3,), np.uint8), 0.001, "fake"

    async def scenario():
        batcher = Batcher(compute, max_batch=4, max_wait_s=600.0)
        label = np.zeros((8, 8), np.uint8)
        await asyncio.wait_for(batcher.submit(label, None), 60)  # nobody else is coming: not 600 s
        coming = batcher.arriving()  # a second request still uploading
        first = batcher.submit(label, None)
        await asyncio.sleep(0.2)
        assert not first.done()  # waits for it
        second = batcher.submit(label, None)
        coming.release()
        await asyncio.wait_for(asyncio.gather(first, second), 60)
        failing = batcher.arriving()
        third = batcher.submit(label, None)
        await asyncio.sleep(0.2)
        assert not third.done()
        failing.release()
        failing.release()  # idempotent: the handler and the middleware both release
        await asyncio.wait_for(third, 60)
        assert batcher._coming == 0
        batcher.close()

    asyncio.run(scenario())
    assert sizes == [1, 2, 1]


def test_a_batch_holds_only_jobs_that_share_one_computation_and_the_batcher_survives_any_error():
    """Jobs of one size with and without instance maps queue together but are computed apart; an error anywhere in
    a batch (stacking, the computation, a short answer) reaches each of its jobs and the next batch is served."""
    from pix2pixhd_deploy.serve.batcher import Batcher

    gate, calls = threading.Event(), []

    def compute(labels, insts):
        gate.wait(60)
        calls.append((labels.shape[0], None if insts is None else insts.shape[0]))
        if labels[0, 0, 0] == 7:
            raise RuntimeError("the runtime failed")
        if labels[0, 0, 0] == 8:
            return np.zeros((1,) + labels.shape[1:] + (3,), np.uint8), 0.0, "fake"  # one picture short
        return np.repeat(labels[..., None], 3, axis=3), 0.001, "fake"

    def maps(value, with_inst):
        return np.full((8, 8), value, np.uint8), (np.full((8, 8), value, np.int32) if with_inst else None)

    async def scenario():
        batcher = Batcher(compute, max_batch=8, max_wait_s=0.0)
        first = batcher.submit(*maps(0, True))  # computing (held) while the mixed burst queues behind it
        await asyncio.sleep(0)
        mixed = [batcher.submit(*maps(i, i % 2 == 0)) for i in range(1, 7)]
        gate.set()
        answers = await asyncio.wait_for(asyncio.gather(first, *mixed), 60)
        assert [int(a.picture[0, 0, 0]) for a in answers] == list(range(7))  # each job its own picture
        failing = batcher.submit(*maps(7, True))
        with pytest.raises(RuntimeError, match="the runtime failed"):
            await asyncio.wait_for(failing, 60)
        short = [batcher.submit(*maps(8, False)) for _ in range(2)]
        for future in short:
            with pytest.raises(RuntimeError, match="1 pictures for 2 maps"):
                await asyncio.wait_for(future, 60)
        after = await asyncio.wait_for(batcher.submit(*maps(9, True)), 60)
        assert after.picture[0, 0, 0] == 9 and not batcher._worker.done()
        batcher.close()

    asyncio.run(scenario())
    # the first job alone, then the burst split by instance handling (3 with, 3 without), never mixed
    assert sorted(calls[1:3], key=str) == [(3, 3), (3, None)] and calls[0] == (1, 1), calls


def test_drain_stops_a_wait_for_company_refuses_new_jobs_and_returns_once_all_are_answered():
    """What the server's shutdown awaits after uvicorn stopped taking requests: drain lets a batch waiting for
    company go at once (a request still on its way will not come), refuses new jobs (QueueFull), and returns only
    when the batch computing has been answered."""
    from pix2pixhd_deploy.serve.batcher import Batcher, QueueFull

    gate = threading.Event()

    def compute(labels, insts):
        gate.wait(60)
        return np.repeat(labels[..., None], 3, axis=3), 0.001, "fake"

    async def scenario():
        batcher = Batcher(compute, max_batch=4, max_wait_s=600.0)
        label = np.full((8, 8), 5, np.uint8)
        coming = batcher.arriving()  # a request on its way: the job below waits up to 600 s for it
        queued = batcher.submit(label, None)
        drained = asyncio.create_task(batcher.drain(timeout=600))
        await until(lambda: batcher._closing, "drain starting")
        with pytest.raises(QueueFull):
            batcher.submit(label, None)
        await until(lambda: batcher._busy == 1, "the waiting batch going to compute", timeout=60)
        try:
            assert not drained.done() and not queued.done()  # computing (held): drain has not returned
            assert batcher.in_flight == 1
        finally:
            gate.set()
        await asyncio.wait_for(drained, 60)
        assert queued.done() and queued.result().picture[0, 0, 0] == 5 and batcher.in_flight == 0
        coming.release()
        batcher.close()

    asyncio.run(scenario())


def test_a_mixed_burst_answers_each_request_on_its_own_merits(served):
    """8 concurrent requests of one size to an instance-map model: 4 with their instance maps, 4 asking
    instances=none (which this model cannot take). The valid ones get run's pixels, the others one 400 naming the
    fix, nothing hangs, and the server goes on serving and stops when told."""
    gate = threading.Event()
    pairs = served["pairs"]
    state = blocking_state(served, gate, max_batch=8, max_wait_ms=0)
    valid = [{"files": files_of(p)} for p in pairs[:4]]
    none = [{"files": {"label": files_of(p)["label"]}, "params": {"instances": "none"}} for p in pairs[4:8]]
    with server_thread(state) as url:
        async def scenario():
            async with httpx.AsyncClient(timeout=120) as client:
                tasks = [asyncio.create_task(client.post(f"{url}/v1/synthesize", **r))
                         for pair in zip(valid, none) for r in pair]
                try:  # the first batch is held until every request is in a batch, queued or answered
                    end = asyncio.get_running_loop().time() + 120
                    while sum(t.done() for t in tasks) + state.batcher.in_flight < 8:
                        assert asyncio.get_running_loop().time() < end, "the requests never all arrived"
                        await asyncio.sleep(0.02)
                finally:
                    gate.set()
                return await asyncio.wait_for(asyncio.gather(*tasks), 120)

        answers = asyncio.run(scenario())
        after = httpx.post(f"{url}/v1/synthesize", files=files_of(pairs[5]), timeout=60)
        assert state.batcher._worker is not None and not state.batcher._worker.done()
    for i, r in enumerate(answers):
        pair = pairs[i // 2] if i % 2 == 0 else pairs[4 + i // 2]
        if i % 2 == 0:
            assert r.status_code == 200, r.text
            # a batch of 3 in OpenVINO may differ from run's batch of 1 by one level in a few values
            assert_within_one_level(picture(r.content), run_picture(served, pair), pair.name)
        else:
            assert r.status_code == 400, r.text
            assert "instances=none" in r.json()["error"] and "instances=labels" in r.json()["error"]
    assert after.status_code == 200 and np.array_equal(picture(after.content), run_picture(served, pairs[5]))


def test_a_body_far_over_the_limit_is_refused_before_it_is_read(served):
    """An upload far over the limit is refused as soon as that is known: by its Content-Length before a byte of it is
    read, or, sent in chunks without one, once the bytes counted pass two files' worth; the server then serves on."""
    state = make_state(served)
    limit = 2 * state.max_upload_bytes + 64 * 1024
    sent = []

    def chunks():  # a generator body: httpx sends it chunked, with no Content-Length; one endless file part
        yield (b'--x\r\nContent-Disposition: form-data; name="label"; filename="l.png"\r\n'
               b"Content-Type: image/png\r\n\r\n")
        for _ in range(limit // (1 << 20) + 64):
            sent.append(1 << 20)
            yield b"\0" * (1 << 20)

    with server_thread(state) as url:
        import socket

        host, port = url.rsplit("/", 1)[-1].split(":")
        with socket.create_connection((host, int(port)), timeout=60) as conn:  # the headers alone, no body sent
            conn.sendall(f"POST /v1/synthesize HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; "
                         f"boundary=x\r\nContent-Length: {limit + 1}\r\n\r\n".encode())
            declared = conn.recv(65536).decode()
        try:
            chunked = httpx.post(f"{url}/v1/synthesize", content=chunks(),
                                 headers={"Content-Type": "multipart/form-data; boundary=x"}, timeout=60)
            status = chunked.status_code
        except httpx.HTTPError:  # the server answered and closed while the client was still sending
            status = 413
        good = httpx.post(f"{url}/v1/synthesize", files=files_of(served["pairs"][0]), timeout=60)
        metrics = httpx.get(f"{url}/metrics").text
    assert declared.startswith("HTTP/1.1 413") and "larger than this server takes" in declared
    assert status == 413
    assert sum(sent) < limit + 64 * (1 << 20)  # stopped, not read to the end
    assert good.status_code == 200 and np.array_equal(picture(good.content), run_picture(served, served["pairs"][0]))
    assert 'pix2pixhd_requests_total{status="413"} 2.0' in metrics
