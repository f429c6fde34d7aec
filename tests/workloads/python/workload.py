"""What the Python workloads share: their JSON line's first fields (the C workloads',
tests/workloads/common.h), and the lines they mark for the tests."""
import os
import re


def phase(before, after, elapsed_s):
    return {
        "pid": os.getpid(),
        "minflt": after.ru_minflt,
        "majflt": after.ru_majflt,
        "phase_minflt": after.ru_minflt - before.ru_minflt,
        "phase_majflt": after.ru_majflt - before.ru_majflt,
        "elapsed_s": elapsed_s,
    }


def marked_lines(path):
    """{marker: line} of the lines of `path` ending in a "#@name" comment."""
    marker = re.compile(r"#@(\w+)\s*$")
    with open(path) as source:
        return {
            m.group(1): number
            for number, line in enumerate(source, 1)
            if (m := marker.search(line))
        }
