"""The one exception type for mistakes a user can fix.

Library code raises :class:`UserError` with the file, the problem and the fix; the command line turns it into one
line on stderr and a non-zero exit (a traceback only with ``--debug``). Anything else is a bug and keeps its
traceback.
"""
from __future__ import annotations

import logging
import os
from typing import Dict, Optional, Union

PathLike = Union[str, "os.PathLike[str]"]
log = logging.getLogger(__name__)


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


class Failures:
    """The inputs a ``--keep-going`` run skipped: one record for ``preprocess``, ``infer`` and ``run`` (local and
    Ray), and one summary line.

    ``records`` is the JSON they all write (run's manifest, infer's summary, preprocess's sizes sidecar):
    ``{name: {"error", "path", "fix"}}`` in the order met, where ``name`` is what the run calls the input (a pair's
    label stem; infer's first input file). ``what`` names the inputs in the summary line (``image``, ``pair``...).
    """

    def __init__(self, what: str):
        self.what = what
        self.records: Dict[str, Dict[str, str]] = {}

    def add(self, exc: UserError, *names: str) -> None:
        """Log ``exc`` once and record it for each of ``names`` (the first error of an input is the one kept)."""
        log.error("%s", exc)
        for name in names:
            self.records.setdefault(name, {"error": exc.problem, "path": exc.path or "", "fix": exc.fix or ""})

    def __len__(self) -> int:
        return len(self.records)

    def __contains__(self, name: object) -> bool:
        return name in self.records

    def error(self, done: int, *, path: Optional[PathLike] = None, limit: int = 5) -> UserError:
        """The error that ends the run: how many failed, which and why, and how many were written.

        ``<path>: N <what>(s) failed (<name>: <error>; ...[ and K more]); the other <done> were written. <fix>.``
        """
        shown = "; ".join(f"{name}: {r['error']}" for name, r in list(self.records.items())[:limit])
        more = f" and {len(self) - limit} more" if len(self) > limit else ""
        return UserError(f"{len(self)} {self.what}(s) failed ({shown}{more}); the other {done} were written",
                         path=path, fix="fix or remove those inputs and run again: finished outputs are kept")
