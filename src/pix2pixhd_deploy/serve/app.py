"""The FastAPI app of ``serve``: the same app under uvicorn (``serve``) and in each Ray Serve replica.

Routes (``docs/serve.md`` has each with a curl example):

* ``POST /v1/synthesize``: multipart ``label`` (a label map in any form ``run`` reads) and optional ``instance``;
  query ``format=png|jpg``, ``instances=files|labels|none``, ``fit=resize|pad``. Answers the picture
  (``image/png`` or ``image/jpeg``), the pixels ``run`` writes for the same map, with headers ``X-Compute-Seconds``
  (the batch's compute), ``X-Batch-Size``, ``X-Backend`` and ``Server-Timing``. A bad request gets a 4xx and
  ``{"error": "<one line>"}``, the words of the CLI's UserError: 400, 413 (more than ``--max-pixels``), 401
  (``--api-key`` set and no matching bearer token), 503 with ``Retry-After`` (queue full or model still loading).
* ``POST /v1/colorize``: any label map -> its Cityscapes colours (the page shows uploads with it).
* ``GET /v1/info``, ``/v1/classes``, ``/v1/scene``: what the page needs (engines and sizes, the class table, a
  starting scene from :mod:`synthetic` in Cityscapes colours).
* ``GET /healthz`` (alive), ``/readyz`` (model loaded), ``/metrics`` (Prometheus), ``/docs`` (OpenAPI), ``/``
  (the paint-and-see page).
"""
from __future__ import annotations

import asyncio
import io
import json
import logging
import secrets
import time
from contextlib import asynccontextmanager
from importlib import resources
from typing import Callable, Optional

import numpy as np
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response

from ..data.labelmaps import MapOptions, crop_to
from ..data.labels import LABELS, colorize
from ..errors import UserError
from .batcher import QueueFull
from .metrics import CONTENT_TYPE_LATEST
from .state import ServeState
from .uploads import TooLarge, read_maps, upload

log = logging.getLogger(__name__)

MEDIA = {"png": ("PNG", "image/png"), "jpg": ("JPEG", "image/jpeg")}


class HTTPProblem(Exception):
    """An answer other than a picture: a status, one line, and headers."""

    def __init__(self, status: int, message: str, kind: str, headers: Optional[dict] = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.headers = status, message, kind, headers or {}


def encode_picture(picture: np.ndarray, fmt: str) -> bytes:
    """PNG or JPEG bytes as ``run`` saves them (Pillow's defaults: PNG lossless, JPEG quality 75)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(picture).save(buf, format=MEDIA[fmt][0])
    return buf.getvalue()


def _choice(name: str, value: Optional[str], allowed) -> Optional[str]:
    if value is not None and value.lower() not in allowed:
        raise UserError(f"unknown {name}={value!r}", fix=f"use {' or '.join(allowed)}")
    return None if value is None else value.lower()


class Arrivals:
    """ASGI middleware: a ``POST /v1/synthesize`` counts as on its way to the batcher (:meth:`Batcher.arriving`)
    from its first byte, while its upload is still being received, until the handler queues its job or it ends."""

    def __init__(self, app, batcher):
        self.app, self.batcher = app, batcher

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].endswith("/v1/synthesize"):
            return await self.app(scope, receive, send)
        arrival = self.batcher.arriving()
        scope.setdefault("state", {})["arrival"] = arrival  # request.state.arrival in the handler
        try:
            await self.app(scope, receive, send)
        finally:
            arrival.release()


class UploadLimit:
    """ASGI middleware: a request body larger than two files of ``--max-upload-bytes`` (and room for the multipart
    framing) is refused with 413 as soon as that is known, by its Content-Length before a byte is read, or by
    counting the bytes as they come, so a client cannot make the server spool gigabytes to disk before the handler's
    own per-file check runs."""

    FRAMING = 64 * 1024

    def __init__(self, app, state: ServeState):
        self.app, self.state = app, state

    @property
    def limit(self) -> int:
        return 2 * self.state.max_upload_bytes + self.FRAMING

    async def _refuse(self, send) -> None:
        self.state.metrics.errors.labels("too_large").inc()
        self.state.metrics.requests.labels("413").inc()
        body = json.dumps({"error": f"the request is larger than this server takes ({self.limit} bytes: two files "
                                    f"of {self.state.max_upload_bytes}, --max-upload-bytes)"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._refuse(send)
        seen, over, started = 0, False, False

        async def counted():
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    over = True
                    return {"type": "http.disconnect"}  # the app stops reading; the answer is ours
            return message

        async def watched(message):
            nonlocal started
            if not over:
                started = started or message["type"] == "http.response.start"
                await send(message)

        try:
            await self.app(scope, counted, watched)
        except Exception:  # noqa: BLE001 - the app's reaction to the cut body; the 413 below is the answer
            if not over:
                raise
        if over and not started:
            await self._refuse(send)


def create_app(state: ServeState, on_startup: Optional[Callable[[], None]] = None) -> FastAPI:
    """The app over ``state`` (the model, its batcher and the server's limits); ``on_startup`` runs once the server
    listens."""

    @asynccontextmanager
    async def lifespan(_app):
        if on_startup is not None:
            on_startup()
        yield
        await state.batcher.drain()  # after uvicorn stopped taking requests: finish what is queued

    app = FastAPI(title="pix2pixhd-deploy", version=state.version, lifespan=lifespan,
                  description="NVIDIA pix2pixHD label2city: Cityscapes label maps in, pictures out.")
    app.add_middleware(Arrivals, batcher=state.batcher)
    app.add_middleware(UploadLimit, state=state)
    _add_handlers(app, state)
    _add_probes(app, state)
    _add_page(app, state)
    _add_synthesize(app, state)
    return app


def _add_handlers(app: FastAPI, state: ServeState) -> None:
    @app.exception_handler(HTTPProblem)
    async def problem(_request, exc: HTTPProblem):
        state.metrics.errors.labels(exc.kind).inc()
        state.metrics.requests.labels(str(exc.status)).inc()
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        state.metrics.errors.labels("bad_request").inc()
        state.metrics.requests.labels("400").inc()
        return JSONResponse({"error": f"{where or 'the request'}: {first.get('msg', 'is not valid')}. Send a "
                                      "multipart/form-data POST with a label file field (curl -F label=@map.png)."},
                            status_code=400)


def authorise(state: ServeState, request: Request) -> None:
    """401 unless the server has no API key or the request carries it as a bearer token."""
    if not state.api_key:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), state.api_key.encode()):
        raise HTTPProblem(401, "this server needs an API key: send the header 'Authorization: Bearer <key>'",
                          "unauthorized", {"WWW-Authenticate": "Bearer"})


def _add_probes(app: FastAPI, state: ServeState) -> None:
    @app.get("/healthz", summary="alive")
    async def healthz():
        return {"status": "alive"}

    @app.get("/readyz", summary="model loaded and serving")
    async def readyz():
        if state.model is None:
            reason = state.load_error or "the model is loading"
            return JSONResponse({"status": "not ready", "reason": reason}, status_code=503)
        return {"status": "ready", **state.model.describe()}

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics(request: Request):
        authorise(state, request)
        return Response(state.metrics.text(), media_type=CONTENT_TYPE_LATEST)


def _add_page(app: FastAPI, state: ServeState) -> None:
    from ..data.labels import AMBIGUOUS_IDS

    page = resources.files(__package__).joinpath("static")
    html, js = (page.joinpath(name).read_text(encoding="utf-8") for name in ("index.html", "app.js"))
    class_list = [{"id": lab.id, "name": lab.name, "color": list(lab.color), "paintable": lab.id not in AMBIGUOUS_IDS}
                  for lab in LABELS]

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index():
        return HTMLResponse(html)

    @app.get("/static/app.js", include_in_schema=False)
    async def script():
        return Response(js, media_type="text/javascript")

    @app.get("/v1/info", summary="engines, sizes and limits")
    async def info():
        sizes = state.model.prepared_sizes if state.model else []
        return {"ready": state.model is not None, "sizes": [list(s) for s in sizes] or [list(state.page_size)],
                "max_pixels": state.max_pixels, "max_batch": state.batcher.max_batch,
                "engines": state.model.describe()["engines"] if state.model else []}

    @app.get("/v1/classes", summary="the Cityscapes classes: id, name, colour, and whether painting its colour "
                                    "reads back as it (colours several classes share read as one of them)")
    async def classes():
        return class_list

    @app.get("/v1/scene", summary="a starting scene (synthetic.py) in Cityscapes colours, as PNG")
    async def scene(request: Request, height: int = Query(256, ge=32), width: int = Query(512, ge=32),
                    seed: int = Query(0, ge=0)):
        authorise(state, request)
        if height * width > state.max_pixels:
            raise HTTPProblem(413, f"a {width}x{height} scene is more than this server takes ({state.max_pixels} "
                                   "pixels, --max-pixels)", "too_large")
        from ..data.synthetic import make_scene

        label, _ = await asyncio.to_thread(make_scene, height, width, seed)
        return Response(await asyncio.to_thread(encode_picture, colorize(label), "png"), media_type="image/png")

    @app.post("/v1/colorize", summary="any label map -> its Cityscapes colours, as PNG")
    async def colorize_map(request: Request, label: Optional[UploadFile] = File(None)):
        authorise(state, request)
        source = await _read_field(state, label, "label", required=True)
        options = MapOptions(label_nc=state.label_nc, instances="none", base=1)
        maps = await _decode(state, source, None, options)
        return Response(await asyncio.to_thread(encode_picture, colorize(maps.label), "png"), media_type="image/png")


async def _read_field(state: ServeState, field: Optional[UploadFile], name: str, required: bool):
    if field is None or not hasattr(field, "read"):
        if required:
            raise HTTPProblem(400, f"the request has no {name!r} file field: send the label map as multipart form "
                                   f"data (curl -F {name}=@map.png)", "bad_request")
        return None
    data = await field.read(state.max_upload_bytes + 1)
    if len(data) > state.max_upload_bytes:
        raise HTTPProblem(413, f"{name}: the file is larger than this server takes ({state.max_upload_bytes} "
                               "bytes)", "too_large")
    return upload(name, field.filename, data)


async def _decode(state: ServeState, label, instance, options: MapOptions):
    try:
        async with state.decoding:
            return await asyncio.to_thread(read_maps, label, instance, options, state.max_pixels)
    except TooLarge as exc:
        raise HTTPProblem(413, str(exc), "too_large") from exc
    except UserError as exc:
        raise HTTPProblem(400, str(exc), "bad_request") from exc


def _add_synthesize(app: FastAPI, state: ServeState) -> None:
    @app.post("/v1/synthesize", summary="a label map in, the picture out",
              responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}})
    async def synthesize(request: Request, label: Optional[UploadFile] = File(None),
                         instance: Optional[UploadFile] = File(None), format: str = "png",
                         instances: Optional[str] = None, fit: str = "resize"):
        start = time.perf_counter()
        authorise(state, request)
        try:
            fmt = _choice("format", format.replace("jpeg", "jpg"), ("png", "jpg"))
            options = state.map_options(_choice("instances", instances, ("files", "labels", "none")),
                                        _choice("fit", fit, ("resize", "pad")), has_instance=instance is not None)
        except UserError as exc:
            raise HTTPProblem(400, str(exc), "bad_request") from exc
        if state.model is None:
            raise HTTPProblem(503, state.load_error or "the model is still loading: try again shortly",
                              "not_ready", {"Retry-After": "5"})
        sources = [await _read_field(state, label, "label", True), await _read_field(state, instance, "instance",
                                                                                      False)]
        maps = await _decode(state, *sources, options)
        arrival = getattr(request.state, "arrival", None)
        if arrival is not None:  # its job is about to be queued: a batch need not wait for it any more
            arrival.release()
        done = await _compute(state, maps)
        picture = crop_to(done.picture, maps.size) if options.fit == "pad" else done.picture
        body = await asyncio.to_thread(encode_picture, picture, fmt)
        state.metrics.latency.observe(time.perf_counter() - start)
        state.metrics.requests.labels("200").inc()
        return Response(body, media_type=MEDIA[fmt][1], headers={
            "X-Compute-Seconds": f"{done.compute_s:.4f}", "X-Batch-Size": str(done.batch), "X-Backend": done.backend,
            "Server-Timing": f"compute;dur={done.compute_s * 1000:.1f}"})


async def _compute(state: ServeState, maps):
    try:
        future = state.batcher.submit(maps.label, maps.inst)
    except QueueFull:
        raise HTTPProblem(503, f"the server is busy ({state.batcher.max_queue} maps queued, --max-queue): try "
                               "again shortly", "queue_full", {"Retry-After": "1"}) from None
    try:
        return await future
    except UserError as exc:  # e.g. a size a --model graph does not take
        raise HTTPProblem(400, str(exc), "bad_request") from exc
    except Exception as exc:  # noqa: BLE001 - a bug in a batch: logged with its traceback, answered 500
        log.exception("serve: a batch failed")
        raise HTTPProblem(500, f"the computation failed ({type(exc).__name__}); the server log has the details",
                          "internal") from exc
