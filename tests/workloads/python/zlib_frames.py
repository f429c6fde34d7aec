"""Calls into a native extension (zlib, over the system's libz) from a named Python function.

The workload of tests/tests/python.rs (native frames sit above their Python caller):
squeeze() calls zlib.compress(data, 9), whose deflateInit2_ (in libz) mallocs its window
and tables through CPython's allocator; the module calls squeeze() directly. The lines of
the call into zlib and of the module's call of squeeze() carry a marker comment "#@name".

Prints one JSON line: the C workloads' fields, then
  "file": this file as its code objects name it (co_filename),
  "lines": {marker: line number},
  "compressed": the length of squeeze()'s output.
"""
import json
import os
import resource
import time
import zlib

import workload


def squeeze(data):
    return zlib.compress(data, 9)  #@compress


payload = os.urandom(4 << 20)
start = time.monotonic()
before = resource.getrusage(resource.RUSAGE_SELF)
packed = squeeze(payload)  #@caller
after = resource.getrusage(resource.RUSAGE_SELF)
print(
    json.dumps(
        {
            **workload.phase(before, after, time.monotonic() - start),
            "file": squeeze.__code__.co_filename,
            "lines": workload.marked_lines(__file__),
            "compressed": len(packed),
        }
    ),
    flush=True,
)
