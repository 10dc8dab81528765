"""The C allocator of a process that computes picture after picture: freed memory kept and shared by every thread.

On a machine where memory touched for the first time is costly (a virtual machine: about 6 µs a 4 KB page on the
project's), glibc's defaults make a long run pay that again and again. Each thread allocates from its own arena, so
the maps a decoder thread frees do not serve the compute thread's next allocation; blocks above a moving threshold
come from ``mmap`` and go back to the kernel when freed; and the top of a heap is given back once it is large.
:func:`hold_freed_memory` asks glibc for one arena, a fixed 32 MiB ``mmap`` threshold and no trimming, so after the
first picture the blocks under 32 MiB each one needs come from memory the pictures before it freed (``docs/cpu.md``
has the counts: the second picture's page faults from 7% of the first's to 2%). Blocks of 32 MiB or more are still
mapped afresh; the runtime's own large buffers are planned once and kept. Call it early, before other threads
start: an arena a thread already has stays its own, and glibc ignores the limit once it has made more than it.

It changes the whole process, so only the command lines call it (``run`` with the local engine, ``serve``), which
own theirs; the library never does on a user's behalf. Elsewhere than glibc it does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

log = logging.getLogger(__name__)

# mallopt's parameters (glibc's malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
#: blocks below this come from the heap and are reused; glibc's upper bound for the mmap threshold on 64-bit
MMAP_THRESHOLD = 32 << 20
#: never give the top of the heap back (the largest value mallopt takes: INT_MAX)
NO_TRIM = 2 ** 31 - 1


def hold_freed_memory() -> bool:
    """One malloc arena for the threads started from now on, blocks under 32 MiB from the heap, and freed memory
    kept in the process. True if glibc took all three settings; False elsewhere (nothing changed)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # every setting tried, even after a refusal
    results = [mallopt(param, value) for param, value in
               ((M_ARENA_MAX, 1), (M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, NO_TRIM))]
    taken = all(r == 1 for r in results)
    log.debug("allocator: one arena, mmap threshold %d, no trim: %s", MMAP_THRESHOLD, taken)
    return taken
