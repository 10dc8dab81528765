"""Ray clusters this tool starts take a token: the one place that says how, for ``run --engine ray`` and
``serve --engine ray`` alike (docs/ray.md). Nothing here imports Ray: the mode has to be set before Ray is imported,
because Ray reads it then."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Optional

from .errors import UserError

log = logging.getLogger(__name__)

#: the first Ray with token authentication: an older one lets anyone who reaches its ports run code as the user
RAY_FLOOR = (2, 52)


def check_ray_version(version: str,
                      install_hint: str = "pip install 'pix2pixhd-deploy[ray]' (Ray 2.52 or later)") -> None:
    """A UserError for a Ray older than :data:`RAY_FLOOR`, whose clusters take no token."""
    numbers = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
    if numbers < RAY_FLOOR:
        raise UserError(f"Ray {version} has no token authentication: the cluster it starts would run code for anyone "
                        "who reaches its ports", fix=install_hint)


def prepare_local_auth(address: Optional[str]) -> None:
    """Before Ray is imported (it reads ``RAY_AUTH_MODE`` then): when this process will start a cluster of its own
    (no ``--address``, no ``RAY_ADDRESS``) and the user set no mode, ``RAY_AUTH_MODE=token`` and a token
    (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``, made here readable by the user alone when
    there is none), so a driver without the token, another user's or one from elsewhere, is refused. Ray 2.59 and
    later do the same for local clusters by themselves; 2.52 to 2.58 need it said. A mode the user set is theirs:
    ``RAY_AUTH_MODE=disabled`` is warned about in one line."""
    if address or os.environ.get("RAY_ADDRESS"):
        return  # joining a cluster: its own mode and token apply
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is None and "ray" not in sys.modules:
        ensure_ray_token()
        os.environ["RAY_AUTH_MODE"] = "token"
    elif mode not in (None, "token"):
        log.warning("RAY_AUTH_MODE=%s: the local Ray cluster takes drivers without a token; anyone who reaches its "
                    "ports can run code as you (unset it to have a token)", mode)


def ensure_ray_token() -> None:
    """A token where Ray looks for one: kept if given, else 32 random bytes written to ``~/.ray/auth_token`` (0600,
    in a 0700 folder; Ray's own default file is readable by every user of the machine)."""
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return
    path = Path.home() / ".ray" / "auth_token"
    if path.is_file() and path.stat().st_size:
        return
    import secrets
    import tempfile

    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".auth_token.", dir=path.parent)  # 0600 from the start
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32))
    os.replace(tmp, path)
