"""``hold_freed_memory``: the memory one thread frees serves another thread's next allocation without fresh page
faults (each seen in a fresh process, as the allocator's state is the process's)."""
from __future__ import annotations

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="mallopt is glibc's")

SCRIPT = """
import ctypes, resource, sys, threading
ctypes.CDLL("libc.so.6").prctl(41, 1, 0, 0, 0)  # PR_SET_THP_DISABLE: one fault a page on any THP setting
from pix2pixhd_deploy.cli.allocator import hold_freed_memory
held = hold_freed_memory() if sys.argv[1] == "hold" else None
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
SIZE = 8 << 20
faults, freed, done = [], threading.Event(), threading.Event()

def allocate_touch_free(stay):
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    block = libc.malloc(SIZE)
    ctypes.memset(block, 1, SIZE)
    faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
    libc.free(block)
    freed.set()
    if stay:  # alive, as a run's decoder thread is, while the next thread allocates
        done.wait(30)

# a decoder thread's maps, freed; then the compute thread's next block of the same size, both threads alive
decoder = threading.Thread(target=allocate_touch_free, args=(True,))
decoder.start()
freed.wait(30)
computer = threading.Thread(target=allocate_touch_free, args=(False,))
computer.start()
computer.join()
done.set()
decoder.join()
print(held, *faults)
"""


def faults_of(mode: str):
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True).stdout
    held, first, second = out.split()
    return held, int(first), int(second)


def test_a_block_freed_by_one_thread_serves_the_next_thread_without_page_faults():
    pages = (8 << 20) // 4096
    held, first, second = faults_of("hold")
    assert held == "True"
    assert first >= pages * 0.9 and second < pages * 0.05, (first, second)
    # glibc's defaults: the second thread's block is fresh memory again (what the run paid on every picture)
    held, first, second = faults_of("default")
    assert held == "None" and first >= pages * 0.9 and second >= pages * 0.9, (first, second)
