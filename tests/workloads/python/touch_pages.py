"""Touches fresh pages from known Python functions and prints its own minor faults for each.

The oracle of tests/tests/python.rs (faults under Python functions). Each touch_* function
creates a zero-filled bytearray of a known size: CPython mallocs its buffer (glibc maps it
afresh, as it is over the mmap threshold) and memsets it, one minor fault a page. Each
buffer stays alive to the end, so glibc never moves its mmap threshold nor reuses pages.

The faults of each function's call are measured with getrusage(RUSAGE_SELF).ru_minflt
just before and just after it; touch_outer calls touch_inner (measured inside it) and
touches pages of its own besides.

touch_two_sites calls touch_leaf from two lines by turns, and touch_leaf maps one page and
writes it: one fault a call. The leaf's frame, its instruction and the native stack under
it are the same at both lines, and only the caller's instruction tells the two apart: so
each fault's stack differs from the one before it in that alone (what memtrace must see
when it compares a stack with the CPU's last one instead of walking it).

Prints one JSON line: the C workloads' fields, then
  "file": this file as its code objects name it (co_filename),
  "faults": {function: minor faults during its calls},
  "bytes": {function: bytes it allocated itself, its callees' not included},
  "sites": {marker: minor faults during touch_two_sites's calls on the line so marked},
  "lines": {marker: line number},
  "page_size": the page size.
"""
import json
import mmap
import os
import resource
import time

import workload

MIB = 1 << 20
KEEP = []
FAULTS = {}
SITE_FAULTS = {"first_site": 0, "second_site": 0}
SITE_CALLS = 1000


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


def touch_leaf():
    page = mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_PRIVATE)
    page[0] = 1
    KEEP.append(page)


def touch_two_sites():
    for _ in range(SITE_CALLS):
        before = minflt()
        touch_leaf()  #@first_site
        middle = minflt()
        touch_leaf()  #@second_site
        SITE_FAULTS["first_site"] += middle - before
        SITE_FAULTS["second_site"] += minflt() - middle


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
    touch_two_sites()
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
                "sites": SITE_FAULTS,
                "lines": workload.marked_lines(__file__),
                "page_size": os.sysconf("SC_PAGE_SIZE"),
            }
        ),
        flush=True,
    )


main()
