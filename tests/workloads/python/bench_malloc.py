"""The benchmark of Python frames on malloc (`cargo xtask bench python`): a loop that allocates
and frees bytes objects of 1-4 KiB, each made 8 Python calls deep, keeping (leaking) one in
LEAK_EVERY to the end.

Every block is over 512 bytes, so CPython takes it from malloc and never from its own arenas:
`b"m" * n` is one malloc of the object (header and n bytes), and its free is one free. Each
iteration's stack: alloc_leaf, level_7 ... level_1, run, main, <module> (11 Python frames),
over the interpreter's native frames.

Usage: python3.11 bench_malloc.py [COUNT]     (default: 400000 allocations)

It ends with os._exit(0) once its line is printed: no interpreter teardown, so the kept blocks
are still allocated when the process exits (what `memtrace malloc --leaks` reports).

Prints one JSON line, the C workloads' fields (tests/workloads/common.h: "pid", "minflt",
"majflt", "phase_minflt", "phase_majflt", "elapsed_s": the loop's own time, start-up and
imports excluded), then "allocations": COUNT, "leaked": blocks kept, "depth": the Python
calls from run to alloc_leaf.
"""
import json
import os
import resource
import sys
import time

import workload

LEAK_EVERY = 32
KEPT = []


def alloc_leaf(i):
    # 1 KiB to 4 KiB, in steps of 8 bytes.
    block = b"m" * (1024 + (i * 8) % 3072)
    if i % LEAK_EVERY == 0:
        KEPT.append(block)
    return len(block)


def level_7(i):
    return alloc_leaf(i)


def level_6(i):
    return level_7(i)


def level_5(i):
    return level_6(i)


def level_4(i):
    return level_5(i)


def level_3(i):
    return level_4(i)


def level_2(i):
    return level_3(i)


def level_1(i):
    return level_2(i)


DEPTH = 8  # level_1 ... level_7, alloc_leaf


def run(count):
    total = 0
    for i in range(count):
        total += level_1(i)
    return total


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 400_000
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.monotonic()
    run(count)
    elapsed = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                **workload.phase(before, after, elapsed),
                "allocations": count,
                "leaked": len(KEPT),
                "depth": DEPTH,
            }
        ),
        flush=True,
    )
    os._exit(0)


main()
