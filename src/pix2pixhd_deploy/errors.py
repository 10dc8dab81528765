"""The one exception type for mistakes a user can fix.

Library code raises :class:`UserError` with the file, the problem and the fix; the command line turns it into one
line on stderr and a non-zero exit (a traceback only with ``--debug``). Anything else is a bug and keeps its
traceback.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence, Tuple, Union

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


def failed_inputs_error(failed: Sequence[Tuple[str, str]], done: int, *, what: str,
                        path: Optional[PathLike] = None, limit: int = 5) -> UserError:
    """The error that ends a ``--keep-going`` run with bad inputs: how many, which and why, and what was kept.

    ``failed``: (file, problem) pairs in the order they were met.
    """
    shown = "; ".join(f"{name}: {why}" for name, why in failed[:limit])
    more = f" and {len(failed) - limit} more" if len(failed) > limit else ""
    return UserError(f"{len(failed)} {what}(s) failed ({shown}{more}); the other {done} were written", path=path,
                     fix="fix or remove those inputs and run again: finished outputs are kept")
