#!/usr/bin/env python3
"""Writes the fuzz targets' seed inputs (memtrace/fuzz/seeds/<target>/).

ring_records and btf: records and a BTF blob built here, laid out as memtrace-common's
#[repr(C)] structs and the kernel's BTF format (little-endian x86-64). proc_text: this machine's
/proc and /sys files (skipped where missing), a few trimmed, plus cgroup files made up here.
Run it from anywhere; it overwrites the seeds it writes.
"""
import os
import struct
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    os.makedirs(os.path.join(HERE, target), exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(HERE, target, name), "wb") as f:
        f.write(data)


def comm(text):
    return text.encode().ljust(16, b"\0")


# --- ring_records -------------------------------------------------------------------------

def stack_event(kind, tgid=4242, tid=4243, kstack=-14, file_dev=0, detail=0, user_stack=0x1234,
                addr=0x7f0000001000, file_ino=0, weight=1, name="worker"):
    return struct.pack("<IIIiIIQQQQ", kind, tgid, tid, kstack, file_dev, detail, user_stack, addr,
                       file_ino, weight) + comm(name)


def oom_kill():
    return struct.pack("<IIIiQQQQQQII", 8, 777, 1000, 0, 1 << 20, 900000, 1000, 0, 2000, 4242,
                       778, 0) + comm("hog")


def process_exit():
    return struct.pack("<IIQQQQ", 9, 4242, 1500, 3, 123456789000, 4242) + comm("worker")


def perf_record(kind, misc, body, pid, time):
    body = body + b"\0" * (-len(body) % 8)
    size = 8 + len(body) + 16
    return struct.pack("<IHH", kind, misc, size) + body + struct.pack("<IIQ", pid, pid, time)


def perf_records():
    path = b"/usr/lib/x86_64-linux-gnu/libc.so.6\0"
    mmap2 = struct.pack("<IIQQQIIQQII", 4242, 4242, 0x7f0000028000, 0x165000, 0x28000, 254, 1,
                        1234, 7, 5, 2) + path
    exec_comm = struct.pack("<II", 4242, 4242) + b"true\0"
    lost = struct.pack("<QQ", 9, 5)
    return (perf_record(10, 2, mmap2, 4242, 20) + perf_record(3, 1 << 13, exec_comm, 4242, 10)
            + perf_record(2, 0, lost, 0, 15))


def ring_records():
    write("ring_records", "minor_fault", stack_event(1))
    write("ring_records", "major_fault_file", stack_event(2, file_dev=254 << 20 | 1,
                                                          file_ino=99))
    # order 2, migratetype 1, process context; GFP_HIGHUSER_MOVABLE.
    write("ring_records", "page_alloc", stack_event(7, detail=2 | 1 << 8, addr=0x100cca,
                                                    weight=4))
    write("ring_records", "alloc", stack_event(5, detail=1, weight=4096))
    write("ring_records", "oom_kill", oom_kill())
    write("ring_records", "process_exit", process_exit())
    write("ring_records", "perf_records", perf_records())


# --- btf ------------------------------------------------------------------------------------

INT, PTR, ARRAY, STRUCT, UNION, ENUM, TYPEDEF, CONST = 1, 2, 3, 4, 5, 6, 8, 10
FUNC_PROTO, VAR, DATASEC, DECL_TAG, ENUM64 = 13, 14, 15, 17, 19


class Blob:
    def __init__(self):
        self.strings = b"\0"
        self.types = b""
        self.count = 0

    def name(self, text):
        if not text:
            return 0
        offset = len(self.strings)
        self.strings += text.encode() + b"\0"
        return offset

    def add(self, name, kind, vlen, size_or_type, extra=b"", kind_flag=0):
        info = kind_flag << 31 | kind << 24 | vlen
        self.types += struct.pack("<III", self.name(name), info, size_or_type) + extra
        self.count += 1
        return self.count

    def int(self, name, size):
        return self.add(name, INT, 0, size, struct.pack("<I", size * 8))

    def array(self, element, index, count):
        return self.add("", ARRAY, 0, 0, struct.pack("<III", element, index, count))

    def struct(self, name, size, members, kind=STRUCT):
        extra = b"".join(struct.pack("<III", self.name(m), t, bits) for m, t, bits in members)
        return self.add(name, kind, len(members), size, extra)

    def enum(self, name, values, signed=0):
        extra = b"".join(struct.pack("<Ii", self.name(n), v) for n, v in values)
        return self.add(name, ENUM, len(values), 4, extra, signed)

    def data(self):
        header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(self.types), len(self.types),
                             len(self.strings))
        return header + self.types + self.strings


def btf():
    b = Blob()
    int_ = b.int("int", 4)
    long_ = b.int("long", 8)
    ptr = b.add("", PTR, 0, 0)
    u64 = b.add("u64", TYPEDEF, 0, long_)
    const_u64 = b.add("", CONST, 0, u64)
    counter = b.struct("percpu_counter", 40, [("lock", int_, 0), ("count", long_, 64),
                                               ("counters", ptr, 256)])
    counters = b.array(counter, int_, 4)
    # rss_stat inside an unnamed struct, as the kernel nests many members.
    inner = b.struct("", 160, [("rss_stat", counters, 64)])
    b.struct("mm_struct", 1024, [("mmap_base", long_, 0), ("", inner, 512)])
    b.struct("task_struct", 4096, [
        ("flags", int_, 44 * 8), ("stack", ptr, 32 * 8), ("mm", ptr, 1000 * 8),
        ("signal", ptr, 1600 * 8), ("min_flt", long_, 1400 * 8), ("maj_flt", long_, 1408 * 8),
        ("group_leader", ptr, 1200 * 8), ("start_boottime", u64, 1392 * 8),
        ("cgroups", ptr, 2800 * 8)])
    b.struct("signal_struct", 1024, [("live", int_, 4 * 8), ("min_flt", long_, 600 * 8),
                                     ("maj_flt", long_, 608 * 8)])
    b.struct("bpf_array", 384, [("map", int_, 0), ("pptrs", b.array(ptr, int_, 0), 320 * 8)])
    b.struct("pt_regs", 168, [("sp", long_, 152 * 8), ("orig_ax", long_, 120 * 8)])
    b.struct("css_set", 512, [("subsys", b.array(ptr, int_, 14), 0)])
    b.struct("cgroup_subsys_state", 200, [("cgroup", ptr, 0)])
    b.struct("cgroup", 2048, [("kn", ptr, 264 * 8)])
    b.struct("kernfs_node", 128, [("id", const_u64, 104 * 8)])
    b.struct("", 8, [("a", int_, 0), ("b", int_, 0)], kind=UNION)
    b.enum("cgroup_subsys_id", [("cpuset_cgrp_id", 0), ("cpu_cgrp_id", 1),
                                ("memory_cgrp_id", 4), ("CGROUP_SUBSYS_COUNT", 14)])
    b.enum("migratetype", [("MIGRATE_UNMOVABLE", 0), ("MIGRATE_MOVABLE", 1),
                           ("MIGRATE_RECLAIMABLE", 2), ("MIGRATE_PCPTYPES", 3),
                           ("MIGRATE_HIGHATOMIC", 3), ("__MIGRATE_TYPE_END", 3),
                           ("MIGRATE_ISOLATE", 4), ("MIGRATE_TYPES", 5)])
    b.enum("signed_enum", [("MINUS", -1), ("PLUS", 1)], signed=1)
    b.add("big", ENUM64, 1, 8, struct.pack("<III", b.name("BIG"), 0, 1 << 8))
    # Kinds with trailing data the parser must step over.
    b.add("", FUNC_PROTO, 2, int_, struct.pack("<IIII", b.name("x"), int_, b.name("y"), long_))
    var = b.add("some_var", VAR, 0, int_, struct.pack("<I", 1))
    b.add(".data", DATASEC, 1, 4, struct.pack("<III", var, 0, 4))
    b.add("tag", DECL_TAG, 0, var, struct.pack("<i", -1))
    write("btf", "kernel_layout", b.data())

    small = Blob()
    small.enum("migratetype", [("MIGRATE_UNMOVABLE", 0), ("MIGRATE_MOVABLE", 1)])
    write("btf", "one_enum", small.data())


# --- proc_text ------------------------------------------------------------------------------

def read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def smaps_sample(text, keep=6):
    """The first `keep` mappings of an smaps text, plus its [heap] and a private anonymous one."""
    lines = text.decode(errors="replace").splitlines(keepends=True)
    entries, current = [], []
    for line in lines:
        first = line.split(" ", 1)[0]
        if "-" in first and all(c in "0123456789abcdef-" for c in first) and current:
            entries.append(current)
            current = []
        current.append(line)
    if current:
        entries.append(current)
    chosen = entries[:keep]
    chosen += [e for e in entries[keep:] if "[heap]" in e[0]][:1]
    chosen += [e for e in entries[keep:] if len(e[0].split()) == 5 and " rw-p " in e[0]][:1]
    return "".join("".join(e) for e in chosen)


def proc_text():
    # A process of our own, sleeping, whose files we read.
    sleeper = subprocess.Popen(["sleep", "30"])
    pid = sleeper.pid
    try:
        for name in ["stat", "status", "limits", "maps", "statm"]:
            data = read(f"/proc/{pid}/{name}")
            if data is not None:
                write("proc_text", name, data)
        smaps = read(f"/proc/{pid}/smaps")
        if smaps is not None:
            write("proc_text", "smaps", smaps_sample(smaps))
    finally:
        sleeper.kill()
        sleeper.wait()
    for name, path in [("vmstat", "/proc/vmstat"), ("meminfo", "/proc/meminfo"),
                       ("pressure_memory", "/proc/pressure/memory"),
                       ("mm_page_alloc_format",
                        "/sys/kernel/tracing/events/kmem/mm_page_alloc/format"),
                       ("mark_victim_format", "/sys/kernel/tracing/events/oom/mark_victim/format")]:
        data = read(path)
        if data is not None:
            write("proc_text", name, data)
    # /proc/mounts and /proc/PID/cgroup as on a Debian host with cgroup v1 and v2 mounted (not
    # this machine's, which say more about it than the parsers need).
    write("proc_text", "mounts",
          "sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0\n"
          "proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0\n"
          "/dev/vda1 / ext4 rw,relatime,errors=remount-ro 0 0\n"
          "tmpfs /sys/fs/cgroup tmpfs ro,nosuid,nodev,noexec,mode=755 0 0\n"
          "cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nosuid,nodev,noexec,relatime 0 0\n"
          "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,nodev,noexec,relatime,cpu,cpuacct 0 0\n"
          "cgroup /sys/fs/cgroup/memory cgroup rw,nosuid,nodev,noexec,relatime,memory 0 0\n"
          "tracefs /sys/kernel/tracing tracefs rw,nosuid,nodev,noexec,relatime 0 0\n")
    write("proc_text", "cgroup",
          "12:pids:/system.slice/docker-3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b.scope\n"
          "4:memory:/system.slice/docker-3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b.scope\n"
          "2:cpu,cpuacct:/\n"
          "1:name=systemd:/system.slice/docker.service\n"
          "0::/system.slice/docker.service\n")
    # A process in a Kubernetes pod's container (systemd driver), cgroup v2 and v1.
    write("proc_text", "cgroup_kubepods",
          "0::/kubepods.slice/kubepods-burstable.slice/"
          "kubepods-burstable-pod1f2e3d4c_5b6a_7980_a1b2_c3d4e5f60718.slice/"
          "cri-containerd-3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b.scope\n"
          "4:memory:/kubepods/pod1f2e3d4c-5b6a-7980-a1b2-c3d4e5f60718/"
          "3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b\n")
    # A cgroup directory's files, NUL-separated in the order of proc_text.rs's CGROUP_FILES:
    # memory.max, .current, .events, .failcnt, .memsw.failcnt, .oom_control, .limit_in_bytes,
    # .usage_in_bytes.
    write("proc_text", "cgroup_v2_files", "\0".join([
        "536870912", "536805376", "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0",
        "", "", "", "", ""]))
    write("proc_text", "cgroup_v1_files", "\0".join([
        "", "", "", "3", "0", "oom_kill_disable 0\nunder_oom 0\noom_kill 1",
        "9223372036854771712", "104857600"]))


if __name__ == "__main__":
    ring_records()
    btf()
    proc_text()
