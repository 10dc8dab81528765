"""``pix2pixhd-deploy serve``: the app under uvicorn, in this process.

Start-up says the URL at once, loads the model in a thread (``/healthz`` answers meanwhile, ``/readyz`` says 503)
and says ``ready`` with the engine when it is loaded. SIGTERM or Ctrl-C: uvicorn stops taking connections, the
requests in flight (queued ones included) are answered, then the process exits 0.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from typing import Callable, Optional

from ..errors import UserError
from ..runners.open import ModelOptions
from .options import ServeLimits
from .state import ServeState

log = logging.getLogger(__name__)

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def check_exposure(host: str, api_key: Optional[str]) -> None:
    """A server on another interface than loopback without an API key: allowed, said loudly."""
    if host not in LOCAL_HOSTS and not api_key:
        log.warning("serve: listening on %s without --api-key: anyone who can reach this machine can use the model "
                    "(set --api-key or PIX2PIXHD_API_KEY)", host)


def _draining_server(config):
    """uvicorn's server, ending with exit status 0 after SIGTERM/SIGINT once the requests are answered (uvicorn
    itself raises the signal again after its clean shutdown, which makes the exit status -15 for a clean stop)."""
    import uvicorn

    class DrainingServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return DrainingServer(config)


def serve(options: ModelOptions, limits: ServeLimits, *, host: str = "127.0.0.1", port: int = 8000,
          say: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)) -> None:
    """Serve until SIGTERM/SIGINT. ``say``: where the start-up lines go (the CLI: stderr, as they happen)."""
    import uvicorn

    from .app import create_app

    options.check_sizes()
    if limits.max_batch < 1 or limits.max_queue < 1 or limits.max_pixels < 1:
        raise UserError("--max-batch, --max-queue and --max-pixels must be at least 1", fix="pass positive numbers")
    state = ServeState(options, limits)
    check_exposure(host, state.api_key)
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"

    def announce() -> None:
        say(f"serve: {url}  (page {url}/, API docs {url}/docs); loading {options.model} ...")
        state.load_in_background(lambda s: say(f"serve: ready at {url}: " + "; ".join(
            e["reason"] for e in s.model.describe()["engines"])))

    app = create_app(state, on_startup=announce)

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=120)
    server = _draining_server(config)
    try:
        server.run()
    finally:
        state.close()
    if not server.started:
        raise UserError(f"could not listen on {host}:{port} (the port is in use or not allowed)",
                        fix="pass another --port, or stop what uses it")
    say("serve: stopped (the requests in flight were answered)")
