"""The flags of ``pix2pixhd-deploy serve``, in groups (model, serving, Ray Serve), each parsed into its object once."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from ..errors import UserError
from .uploads import DEFAULT_MAX_PIXELS

#: the environment variable that holds the API key when --api-key is not given
API_KEY_ENV = "PIX2PIXHD_API_KEY"


@dataclass
class ServeLimits:
    """The serving settings of ``serve`` (batching, queue, sizes, access)."""

    max_batch: int = 4
    max_wait_ms: float = 10.0
    max_queue: int = 64
    max_pixels: int = DEFAULT_MAX_PIXELS
    api_key: Optional[str] = None
    decoders: int = 4            # uploads decoded at once (each holds its maps in memory)

    def resolved_api_key(self) -> Optional[str]:
        return self.api_key or os.environ.get(API_KEY_ENV) or None


@dataclass
class RayOptions:
    """``serve --engine ray``: a fixed number of replicas, or autoscaling between min and max."""

    address: Optional[str] = None
    replicas: Optional[int] = None
    min_replicas: Optional[int] = None
    max_replicas: Optional[int] = None
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0

    def scaling(self) -> dict:
        """Ray Serve's ``num_replicas`` or ``autoscaling_config``."""
        if self.replicas is not None and (self.min_replicas is not None or self.max_replicas is not None):
            raise UserError("--replicas contradicts --min-replicas/--max-replicas",
                            fix="pass a fixed --replicas N, or autoscaling bounds, not both")
        if self.min_replicas is None and self.max_replicas is None:
            return {"num_replicas": self.replicas or 1}
        low, high = self.min_replicas or 1, self.max_replicas or max(self.min_replicas or 1, 1)
        if not 0 <= low <= high or high < 1:
            raise UserError(f"--min-replicas {low} --max-replicas {high} is no range", fix="pass 0 <= min <= max, "
                                                                                           "max >= 1")
        return {"autoscaling_config": {"min_replicas": low, "max_replicas": high, "target_ongoing_requests": 4}}




