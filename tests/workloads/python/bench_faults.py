"""The benchmark of Python frames on page faults (`cargo xtask bench python`): a fault storm
driven from Python. Each iteration, 8 Python calls deep, creates a zero-filled bytearray of
MIB MiB and drops it.

bytearray(n) mallocs its buffer (glibc maps it afresh: 64 MiB is over its largest mmap
threshold, 32 MiB) and memsets it, one minor fault a page (no huge pages: glibc does not
madvise them); dropping it unmaps it, so the next one faults again. With the defaults, 16
iterations of 64 MiB touch 1 GiB: about 262k faults. Each fault's stack: touch_leaf,
level_7 ... level_1, run, main, <module> (11 Python frames), under memset and the
interpreter's native frames.

Usage: python3.11 bench_faults.py [MIB [ITERATIONS]]     (defaults: 64 16)

Prints one JSON line, the C workloads' fields (tests/workloads/common.h: "pid", "minflt",
"majflt", "phase_minflt", "phase_majflt", "elapsed_s": the loop's own time, start-up and
imports excluded), then "mib", "iterations", "pages_touched" and "depth": the Python calls
from run to touch_leaf.
"""
import json
import os
import resource
import sys
import time

import workload

MIB = 1 << 20


def touch_leaf(size):
    buffer = bytearray(size)
    return len(buffer)


def level_7(size):
    return touch_leaf(size)


def level_6(size):
    return level_7(size)


def level_5(size):
    return level_6(size)


def level_4(size):
    return level_5(size)


def level_3(size):
    return level_4(size)


def level_2(size):
    return level_3(size)


def level_1(size):
    return level_2(size)


DEPTH = 8  # level_1 ... level_7, touch_leaf


def run(size, iterations):
    total = 0
    for _ in range(iterations):
        total += level_1(size)
    return total


def main():
    mib = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    iterations = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.monotonic()
    touched = run(mib * MIB, iterations)
    elapsed = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                **workload.phase(before, after, elapsed),
                "mib": mib,
                "iterations": iterations,
                "pages_touched": touched // os.sysconf("SC_PAGE_SIZE"),
                "depth": DEPTH,
            }
        ),
        flush=True,
    )


main()
