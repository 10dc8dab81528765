"""``serve``'s own flags (serving, Ray Serve), a group like the others of :mod:`.args`, parsed into serve's option
objects (:mod:`..serve.options`) once."""
from __future__ import annotations

import argparse
from typing import Optional, Tuple

from ..errors import UserError
from ..runners.open import CITYSCAPES_SIZE, ModelOptions
from ..serve.options import API_KEY_ENV, RayOptions, ServeLimits
from .args import ADDRESS, ENGINE, parse_hw


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    """serve's own flags; the model, device and --label-nc/--no-instance are the groups of :mod:`..cliargs`."""
    p.add_argument("--size", type=parse_hw, action="append", metavar="H,W",
                   help="a map size to prepare a CPU graph for at start-up, repeatable (default 1024,2048); other "
                        "sizes run on torch from the checkpoint")
    http = p.add_argument_group("serving")
    http.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: this machine "
                                                          "only; 0.0.0.0 for every interface)")
    http.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    d = ServeLimits()  # the defaults, written once (serve/options.py)
    http.add_argument("--max-batch", type=int, default=d.max_batch,
                      help=f"maps of one size computed together (default {d.max_batch}; 1: no batching)")
    http.add_argument("--max-wait-ms", type=float, default=d.max_wait_ms,
                      help=f"how long the first map of a batch waits for more (default {d.max_wait_ms:g} ms)")
    http.add_argument("--max-queue", type=int, default=d.max_queue,
                      help=f"maps waiting at most; more get 503 (default {d.max_queue})")
    http.add_argument("--max-pixels", type=int, default=d.max_pixels,
                      help=f"largest map in pixels; larger ones get 413 (default {d.max_pixels})")
    http.add_argument("--api-key", default=None,
                      help=f"require 'Authorization: Bearer KEY' (default: ${API_KEY_ENV} if set, else none)")
    ray = p.add_argument_group("ray", "serve --engine ray: Ray Serve replicas (pip install 'pix2pixhd-deploy[ray]')")
    ENGINE.add(ray)
    ADDRESS.add(ray)
    ray.add_argument("--replicas", type=int, default=None, help="ray: a fixed number of replicas (default 1)")
    ray.add_argument("--min-replicas", type=int, default=None, help="ray: autoscaling lower bound")
    ray.add_argument("--max-replicas", type=int, default=None, help="ray: autoscaling upper bound")
    ray.add_argument("--cpus-per-replica", type=float, default=1.0, help="ray: CPUs per replica (default 1)")
    ray.add_argument("--gpus-per-replica", type=float, default=0.0, help="ray: GPUs per replica (default 0)")



def parse_serve_arguments(args) -> Tuple[ModelOptions, ServeLimits, Optional[RayOptions]]:
    """The parsed groups (``args.opt``: model, device, data) and serve's own flags as serve's option objects."""
    o = args.opt
    options = ModelOptions(model=o.model.path, backend=o.model.backend, device=o.device.device, fp16=o.device.fp16,
                           bf16=o.device.bf16,
                           sizes=tuple(args.size or [CITYSCAPES_SIZE]), label_nc=o.data.label_nc,
                           use_instance=o.data.instances != "none", cache_dir=o.model.cache_dir)
    limits = ServeLimits(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
                         max_pixels=args.max_pixels, api_key=args.api_key)
    ray_given = [f for f in ("address", "replicas", "min_replicas", "max_replicas") if getattr(args, f) is not None]
    if args.engine == "local":
        if ray_given:
            raise UserError(f"--{ray_given[0].replace('_', '-')} applies only to --engine ray",
                            fix="add --engine ray, or drop it")
        return options, limits, None
    ray = RayOptions(address=args.address, replicas=args.replicas, min_replicas=args.min_replicas,
                     max_replicas=args.max_replicas, cpus_per_replica=args.cpus_per_replica,
                     gpus_per_replica=args.gpus_per_replica)
    ray.scaling()  # contradictions are told before anything starts
    return options, limits, ray
