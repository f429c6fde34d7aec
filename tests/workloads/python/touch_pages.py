"""Touches fresh pages from known Python functions and prints its own minor faults for each.

The oracle of tests/tests/python.rs (faults under Python functions). Each touch_* function
creates a zero-filled bytearray of a known size: CPython mallocs its buffer (glibc maps it
afresh, as it is over the mmap threshold) and memsets it, one minor fault a page. Each
buffer stays alive to the end, so glibc never moves its mmap threshold nor reuses pages.

The faults of each function's call are measured with getrusage(RUSAGE_SELF).ru_minflt
just before and just after it; touch_outer calls touch_inner (measured inside it) and
touches pages of its own besides.

Prints one JSON line: the C workloads' fields, then
  "file": this file as its code objects name it (co_filename),
  "faults": {function: minor faults during its calls},
  "bytes": {function: bytes it allocated itself, its callees' not included},
  "page_size": the page size.
"""
import json
import os
import resource
import time

import workload

MIB = 1 << 20
KEEP = []
FAULTS = {}


def minflt():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def touch_small():
    KEEP.append(bytearray(8 * MIB))


def touch_large():
    KEEP.append(bytearray(32 * MIB))


def touch_inner():
    KEEP.append(bytearray(16 * MIB))


def touch_outer():
    before = minflt()
    touch_inner()
    FAULTS["touch_inner"] = minflt() - before
    KEEP.append(bytearray(4 * MIB))


def measure(function):
    before = minflt()
    function()
    FAULTS[function.__name__] = minflt() - before


def main():
    start = time.monotonic()
    phase_start = resource.getrusage(resource.RUSAGE_SELF)
    measure(touch_small)
    measure(touch_large)
    measure(touch_outer)
    phase_end = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                **workload.phase(phase_start, phase_end, time.monotonic() - start),
                "file": main.__code__.co_filename,
                "faults": FAULTS,
                "bytes": {
                    "touch_small": 8 * MIB,
                    "touch_large": 32 * MIB,
                    "touch_inner": 16 * MIB,
                    "touch_outer": 4 * MIB,
                },
                "page_size": os.sysconf("SC_PAGE_SIZE"),
            }
        ),
        flush=True,
    )


main()
