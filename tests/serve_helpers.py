"""Helpers of the serve tests: an in-process uvicorn server on a free port, a small model and its maps."""
from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from pathlib import Path

import numpy as np
from conftest import SMALL_LOCAL
from PIL import Image

SIZE = (64, 128)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server_thread(state):
    """The app over ``state`` served by uvicorn in a thread; yields its base URL."""
    import uvicorn

    from pix2pixhd_deploy.serve.app import create_app

    sock = socket.socket()  # bound here and handed to uvicorn: no other process can take the port in between
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(state), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    end = time.monotonic() + 60
    while not server.started and thread.is_alive() and time.monotonic() < end:
        time.sleep(0.02)
    if not server.started:
        server.should_exit = True
        thread.join(30)
        raise AssertionError(f"the test server never started listening on port {port}")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def make_data(root: Path, count: int = 4):
    """A small checkpoint and ``count`` 64x128 Cityscapes-style pairs under ``root``."""
    from pix2pixhd_deploy.data.dataset import cityscapes_pairs
    from pix2pixhd_deploy.data.synthetic import write_cityscapes_split
    from pix2pixhd_deploy.model.network import random_generator, save_checkpoint

    checkpoint = save_checkpoint(random_generator(SMALL_LOCAL, seed=1), root / "ckpt" / "latest_net_G.pth")
    write_cityscapes_split(root / "val", count, height=SIZE[0], width=SIZE[1], city="ulm")
    return checkpoint, cityscapes_pairs(root / "val")


def png_bytes(array: np.ndarray, **kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, **kwargs).save(buf, format="PNG")
    return buf.getvalue()


def picture(body: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(body)))
