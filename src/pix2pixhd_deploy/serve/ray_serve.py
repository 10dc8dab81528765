"""``serve --engine ray``: the same FastAPI app in Ray Serve replicas (``serve.ingress``), to scale out.

Each replica is a :class:`Replica`: its constructor loads the model once (run's engine choice; on a node without a
cache entry the CPU graph is built there, once) and ``__serve_build_asgi_app__`` gives Ray Serve the app of
:func:`app.create_app` over that replica's state, so routes, limits, batching (per replica) and errors are those of
the local server. ``--replicas N`` fixes the count; ``--min-replicas/--max-replicas`` let Ray Serve autoscale on
ongoing requests. ``--cpus-per-replica`` also sets the replica's runtime threads; ``--gpus-per-replica`` its GPUs.

Ray Serve's proxy listens on ``--host``/``--port``. A replica that dies (killed, or its node lost) is replaced by
Ray Serve; requests it held fail with 500 from the proxy, the others go to live replicas.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import asdict
from typing import Callable, Optional

from ..errors import UserError
from ..ray_auth import check_ray_version, prepare_local_auth
from ..runners.open import ModelOptions
from .options import RayOptions, ServeLimits

log = logging.getLogger(__name__)

APP_NAME = "pix2pixhd"


class Replica:
    """One Ray Serve replica: the model loaded once, the app built over it."""

    def __init__(self, options: dict, limits: dict):
        from .state import ServeState

        self.state = ServeState(ModelOptions(**options), ServeLimits(**limits))
        self.state.load()

    def __serve_build_asgi_app__(self):
        from .app import create_app

        return create_app(self.state)


def deployment(options: ModelOptions, limits: ServeLimits, ray_options: RayOptions):
    """The bound Ray Serve application (one deployment of :class:`Replica`)."""
    from ray import serve

    threads = max(1, int(ray_options.cpus_per_replica))
    model = {**asdict(options), "threads": threads}
    actor = {"num_cpus": ray_options.cpus_per_replica, "num_gpus": ray_options.gpus_per_replica}
    cls = serve.deployment(serve.ingress()(Replica), name="pix2pixhd", ray_actor_options=actor,
                           max_ongoing_requests=max(8, limits.max_queue), **ray_options.scaling())
    return cls.bind(model, asdict(limits))


def serve_ray(options: ModelOptions, limits: ServeLimits, ray_options: RayOptions, *, host: str = "127.0.0.1",
              port: int = 8000, say: Callable[[str], None] = print, stop: Optional[threading.Event] = None) -> None:
    """Start the deployment on the cluster, say where it listens, and keep it until SIGTERM/SIGINT (or ``stop``)."""
    prepare_local_auth(ray_options.address)  # before Ray is imported: a cluster started here takes a token
    ray, serve = import_ray_serve()
    options.check_sizes()
    if ray_options.address or not ray.is_initialized():
        ray.init(address=ray_options.address, ignore_reinit_error=True, log_to_driver=False)
    serve.start(http_options={"host": host, "port": port})
    say(f"serve (ray): loading {options.model} in {ray_options.scaling()} ...")
    serve.run(deployment(options, limits, ray_options), name=APP_NAME, route_prefix="/")
    say(f"serve (ray): ready at http://{host}:{port} (page /, API docs /docs)")
    stop = stop or threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        if threading.current_thread() is threading.main_thread():
            signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    serve.delete(APP_NAME)  # Ray Serve drains each replica's ongoing requests before it stops it
    say("serve (ray): stopped")


def import_ray_serve():
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        raise UserError("serve --engine ray needs Ray Serve", fix="pip install 'pix2pixhd-deploy[ray]'") from exc
    check_ray_version(ray.__version__)
    return ray, serve


def app_from_env(args: Optional[dict] = None):
    """The application for Ray Serve config files and KubeRay's ``serveConfigV2`` (``import_path:
    pix2pixhd_deploy.serve.ray_serve:app_from_env``): the model from ``PIX2PIXHD_CHECKPOINT``, sizes from
    ``PIX2PIXHD_SIZES`` (``H,W;H,W``), replicas and CPUs from ``PIX2PIXHD_REPLICAS`` / ``PIX2PIXHD_CPUS``; the
    API key from ``PIX2PIXHD_API_KEY`` as usual. ``args``: Ray Serve's application arguments, same names in lower
    case without the prefix (they win over the environment)."""

    def setting(name: str, default=None):
        return (args or {}).get(name.lower(), os.environ.get(f"PIX2PIXHD_{name}", default))

    checkpoint = setting("CHECKPOINT")
    if not checkpoint:
        raise UserError("no model for the Ray Serve application", fix="set PIX2PIXHD_CHECKPOINT (or the "
                                                                      "application argument checkpoint)")
    sizes = tuple(tuple(int(v) for v in s.split(",")) for s in str(setting("SIZES", "1024,2048")).split(";"))
    options = ModelOptions(model=str(checkpoint), sizes=sizes)
    return deployment(options, ServeLimits(), RayOptions(replicas=int(setting("REPLICAS", 1)),
                                                         cpus_per_replica=float(setting("CPUS", 1))))
