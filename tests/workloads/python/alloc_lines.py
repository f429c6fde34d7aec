"""Allocates known amounts from known Python lines and prints what tracemalloc saw.

The oracle of tests/tests/python.rs (malloc bytes by Python line, and attaching to a running
interpreter). Every block is over 512 bytes, so CPython takes it from malloc (or calloc,
or realloc(NULL, n)) and never from its own arenas, and every block stays alive in KEEP to
the end. The lines that allocate carry a marker comment "#@name"; the report maps each
name to its line.

Usage: python3.11 alloc_lines.py [--wait] [--linger]
  --wait:   print "ready <pid>" and wait for a line on stdin before allocating;
  --linger: after the report line, wait for another line (or EOF) before exiting.

Prints one JSON line (the fields of the C workloads' line, then):
  "file": this file as its code objects name it (co_filename),
  "lines": {marker: line number},
  "tracemalloc": [{"filename", "lineno", "size", "count"}, ...] for this file's lines, from
                 tracemalloc.take_snapshot().statistics("lineno") (one frame per trace).
Then it ends with os._exit(0): no interpreter teardown, so every block is still allocated.
"""
import json
import os
import resource
import sys
import threading
import time
import tracemalloc

import workload

tracemalloc.start(1)

KIB = 1024
MIB = 1024 * KIB
KEEP = []


def leaf(n):
    return b"d" * n  #@depth3


def middle(n, count):
    for _ in range(count):
        KEEP.append(leaf(n))


def outer(n, count):
    middle(n, count)


class Cache:
    def build(self, n, count):
        for _ in range(count):
            KEEP.append(bytes(n))  #@method


def chunks(n, count):
    for _ in range(count):
        yield os.urandom(n)  #@generator


make = lambda n: bytearray(n)  #@lambda


def worker(n, count):
    for _ in range(count):
        KEEP.append(b"t" * n)  #@thread


def big_blocks(count):
    for _ in range(count):
        KEEP.append(bytearray(2 * MIB))  #@large


def allocate():
    outer(4 * KIB, 1024)
    Cache().build(128 * KIB, 32)
    KEEP.extend(chunks(32 * KIB, 128))
    for _ in range(16):
        KEEP.append(make(256 * KIB))
    thread = threading.Thread(target=worker, args=(16 * KIB, 256), name="alloc-worker")
    thread.start()
    thread.join()
    big_blocks(3)


def main():
    wait, linger = "--wait" in sys.argv[1:], "--linger" in sys.argv[1:]
    if wait:
        print(f"ready {os.getpid()}", flush=True)
        sys.stdin.readline()
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.monotonic()
    allocate()
    elapsed = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    snapshot = tracemalloc.take_snapshot()
    code_file = allocate.__code__.co_filename
    mine = snapshot.filter_traces([tracemalloc.Filter(True, code_file)])
    stats = [
        {
            "filename": s.traceback[0].filename,
            "lineno": s.traceback[0].lineno,
            "size": s.size,
            "count": s.count,
        }
        for s in mine.statistics("lineno")
    ]
    report = {
        **workload.phase(before, after, elapsed),
        "file": code_file,
        "blocks": len(KEEP),
        "lines": workload.marked_lines(__file__),
        "tracemalloc": stats,
    }
    print(json.dumps(report), flush=True)
    if linger:
        sys.stdin.readline()
    os._exit(0)


main()
