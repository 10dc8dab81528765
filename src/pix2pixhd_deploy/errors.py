"""The one exception type for mistakes a user can fix.

Library code raises :class:`UserError` with the file, the problem and the fix; the command line turns it into one
line on stderr and a non-zero exit (a traceback only with ``--debug``). Anything else is a bug and keeps its
traceback.
"""
from __future__ import annotations

import os
from typing import Optional, Union

PathLike = Union[str, "os.PathLike[str]"]


class UserError(Exception):
    """An input, setting or environment problem that the user can act on.

    ``str(err)`` is one line: ``<path>: <problem>. <fix>``.
    """

    def __init__(self, problem: str, *, path: Optional[PathLike] = None, fix: Optional[str] = None):
        self.path = os.fspath(path) if path is not None else None
        self.problem = problem.rstrip(".")
        self.fix = fix
        super().__init__(self._line())

    def _line(self) -> str:
        parts = []
        if self.path is not None:
            parts.append(f"{self.path}: ")
        parts.append(self.problem + ".")
        if self.fix:
            parts.append(" " + self.fix.rstrip(".") + ".")
        return "".join(parts).replace("\n", " ")
