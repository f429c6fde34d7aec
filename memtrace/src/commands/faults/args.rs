//! `memtrace faults`'s command line.
use clap::{Args, ValueEnum};

use crate::commands::options::{
    parse_fault_sample, parse_ring_size, OutputArgs, RunArgs, Stacks, TargetArgs, UnwindArgs,
};

const FAULTS_HELP: &str = "\
What is counted:
  minor  a page made present without I/O (first touch of fresh memory, copy-on-write, a page
         already in the page cache). A high rate means allocation churn.
  major  the page had to be read from disk (a file or swap). Any steady rate hurts latency.
  The counts come from the kernel's own fault accounting (perf software events), the same
  place getrusage() and /proc/PID/stat count, so they agree.

Targets (choose one; default: the whole system):
  --pid PID ...       running processes, all their threads
  -- COMMAND ARGS...  start COMMAND, trace it from its first instruction, report when it exits
  --cgroup PATH       every task in a cgroup v2 directory (a container) and below it

The report: per process, per memory region ([heap], [stack], [anon], [vdso], or the mapped
file's path, named by the kernel at fault time; [anon, since unmapped] for anonymous memory
whose mapping was gone before memtrace could read the process's maps, such as freed buffers;
shared memory: [shared anon] for MAP_SHARED|MAP_ANONYMOUS and /dev/zero, listed by the kernel
as /dev/zero (deleted), such as postgres's shared_buffers; [sysv shm key K shmid N] for a
System V segment, as ipcs -m lists it; [memfd:NAME] for a memfd_create file), and the top call
stacks split minor/major, with user and kernel frames.
Kernel frames appear when the fault was taken inside the kernel (for example read() copying
into untouched memory); a fault taken by user code has only user frames.

Examples:
  sudo memtrace faults --pid 1234 --duration 10s
  sudo memtrace faults --top 5 --stacks user -- ./load-test.sh
  sudo memtrace faults --cgroup /sys/fs/cgroup/system.slice/nginx.service --interval 1s
  sudo memtrace faults --sample 100 --format json --output faults.json
  sudo memtrace faults --pid 1234 --format folded | flamegraph.pl > faults.svg";

/// Page faults, minor and major, per process, memory region and call stack.
#[derive(Debug, Args)]
#[command(after_help = FAULTS_HELP)]
pub struct FaultsArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub run: RunArgs,
    /// Which faults to trace.
    #[arg(short, long, value_enum, default_value_t = Kind::All)]
    pub kind: Kind,
    /// Which call stacks to record per fault.
    #[arg(short, long, value_enum, default_value_t = Stacks::Both)]
    pub stacks: Stacks,
    /// Trace 1 in N faults (counts are rescaled by N and marked as estimates).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = parse_fault_sample)]
    pub sample: u64,
    /// The kernel-to-memtrace ring buffer's size (a power of two: 64K, 8M, 64M). Larger
    /// rides out longer bursts; a full ring loses events, which the report counts.
    #[arg(long, value_name = "SIZE", default_value = "8M", value_parser = parse_ring_size)]
    pub ring_buffer: u32,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub unwind: UnwindArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    Minor,
    Major,
    All,
}
