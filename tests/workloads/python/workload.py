"""What every Python workload's JSON line starts with: the C workloads' fields
(tests/workloads/common.h), from getrusage(RUSAGE_SELF) before and after the measured phase
and the phase's own time."""
import os


def phase(before, after, elapsed_s):
    return {
        "pid": os.getpid(),
        "minflt": after.ru_minflt,
        "majflt": after.ru_majflt,
        "phase_minflt": after.ru_minflt - before.ru_minflt,
        "phase_majflt": after.ru_majflt - before.ru_majflt,
        "elapsed_s": elapsed_s,
    }
