//! Settings written by the loader into .rodata before the programs load: the verifier sees them
//! as constants and prunes the branches they switch off, so an unused feature costs nothing.
use core::ptr::read_volatile;

#[unsafe(no_mangle)]
static FILTER_MODE: u32 = 0;
#[unsafe(no_mangle)]
static STACK_FLAGS: u32 = 0;
#[unsafe(no_mangle)]
static CGROUP_ID: u64 = 0;
#[unsafe(no_mangle)]
static CGROUP_LEVEL: u32 = 0;
#[unsafe(no_mangle)]
static FOLLOW_CHILDREN: u32 = 0;
/// The traced process when it is the only one (no children followed): the target filter
/// compares with it instead of looking the set up (0: a set, or not filtering by process).
#[unsafe(no_mangle)]
static SINGLE_TGID: u32 = 0;
/// 1 when filemap:mm_filemap_fault tags are collected: only when every fault runs a program
/// that takes its tag (all kinds, no sampling); otherwise a leftover tag could be taken by a
/// later, unrelated fault of the same thread.
#[unsafe(no_mangle)]
static FILE_TAGS: u32 = 0;
/// do_swap_page's address range, from kallsyms (0, 0 when not found).
#[unsafe(no_mangle)]
static DO_SWAP_PAGE_START: u64 = 0;
#[unsafe(no_mangle)]
static DO_SWAP_PAGE_END: u64 = 0;
/// Kernel struct offsets for the swap program (see memtrace's `kernel_layout`).
#[unsafe(no_mangle)]
static MM_SWAP_COUNTER: u64 = 0;
#[unsafe(no_mangle)]
static COUNTER_COUNT: u64 = 0;
#[unsafe(no_mangle)]
static COUNTER_PERCPU: u64 = 0;
#[unsafe(no_mangle)]
static TASK_MM: u64 = 0;
#[unsafe(no_mangle)]
static ARRAY_PERCPU_BASE: u64 = 0;
/// pt_regs.orig_ax (x86-64 only; 0 elsewhere): see `swap::in_user_fault`.
#[unsafe(no_mangle)]
static ORIG_AX: u64 = 0;
/// task_struct.flags and .stack (from BTF): tell kernel threads and interrupts (see `pages`).
#[unsafe(no_mangle)]
static TASK_FLAGS: u64 = 0;
#[unsafe(no_mangle)]
static TASK_STACK: u64 = 0;
/// pt_regs.sp (from BTF).
#[unsafe(no_mangle)]
static REGS_SP: u64 = 0;
/// --sample N for tracepoint programs that sample themselves (0 or 1: every event).
#[unsafe(no_mangle)]
static SAMPLE_PERIOD: u64 = 0;
/// Offsets of oom:mark_victim's fields, from its format (see `OomLayout`).
#[unsafe(no_mangle)]
static OOM_FIELDS: [u64; 9] = [0; 9];
/// task->cgroups->subsys[memory]->cgroup->kn->id, offsets from BTF (see `MemcgChain`).
#[unsafe(no_mangle)]
static MEMCG_CHAIN: [u64; 5] = [0; 5];
/// task_struct.signal, signal_struct.live, .min_flt, .maj_flt, task_struct.min_flt,
/// .maj_flt, .group_leader, .start_boottime (from BTF; see `exits`).
#[unsafe(no_mangle)]
static EXIT_LAYOUT: [u64; 8] = [0; 8];
/// memtrace malloc --sample-bytes (0: every block).
#[unsafe(no_mangle)]
static SAMPLE_BYTES: u64 = 0;
/// -ln((i + 0.5) / EXP_TABLE_SIZE) in 16.16 fixed point, written by the loader: the
/// sampler's exponential distances (see `malloc::interval`).
#[unsafe(no_mangle)]
static EXP_TABLE: [u32; EXP_TABLE_SIZE] = [0; EXP_TABLE_SIZE];
pub const EXP_TABLE_SIZE: usize = 1024;
/// Possible CPUs: how many per-CPU parts a counter has.
#[unsafe(no_mangle)]
static NR_CPUS: u32 = 0;
/// memtrace's own process, never traced: its work on events would make more events.
#[unsafe(no_mangle)]
static SELF_TGID: u32 = 0;
/// Wake the reader only once this many bytes wait in the ring buffer (the reader also polls on
/// a timer), so a fault storm does not wake userspace once per event.
#[unsafe(no_mangle)]
static WAKEUP_BYTES: u64 = 0;

#[inline(always)]
pub fn filter_mode() -> u32 {
    unsafe { read_volatile(&FILTER_MODE) }
}
#[inline(always)]
pub fn stack_flags() -> u32 {
    unsafe { read_volatile(&STACK_FLAGS) }
}
#[inline(always)]
pub fn cgroup_id() -> u64 {
    unsafe { read_volatile(&CGROUP_ID) }
}
#[inline(always)]
pub fn cgroup_level() -> u32 {
    unsafe { read_volatile(&CGROUP_LEVEL) }
}
#[inline(always)]
pub fn follow_children() -> bool {
    unsafe { read_volatile(&FOLLOW_CHILDREN) != 0 }
}
#[inline(always)]
pub fn single_tgid() -> u32 {
    unsafe { read_volatile(&SINGLE_TGID) }
}
#[inline(always)]
pub fn file_tags() -> bool {
    unsafe { read_volatile(&FILE_TAGS) != 0 }
}
#[inline(always)]
pub fn do_swap_page() -> (u64, u64) {
    unsafe {
        (
            read_volatile(&DO_SWAP_PAGE_START),
            read_volatile(&DO_SWAP_PAGE_END),
        )
    }
}
#[inline(always)]
pub fn self_tgid() -> u32 {
    unsafe { read_volatile(&SELF_TGID) }
}
#[inline(always)]
pub fn wakeup_bytes() -> u64 {
    unsafe { read_volatile(&WAKEUP_BYTES) }
}

/// Byte offsets in kernel structs (see memtrace's `kernel_layout::SwapLayout`).
pub struct SwapLayout {
    pub swap_counter: u64,
    pub counter_count: u64,
    pub counter_percpu: u64,
    pub task_mm: u64,
}

#[inline(always)]
pub fn swap_layout() -> SwapLayout {
    unsafe {
        SwapLayout {
            swap_counter: read_volatile(&MM_SWAP_COUNTER),
            counter_count: read_volatile(&COUNTER_COUNT),
            counter_percpu: read_volatile(&COUNTER_PERCPU),
            task_mm: read_volatile(&TASK_MM),
        }
    }
}
#[inline(always)]
pub fn array_percpu_base() -> u64 {
    unsafe { read_volatile(&ARRAY_PERCPU_BASE) }
}
#[inline(always)]
pub fn nr_cpus() -> u32 {
    unsafe { read_volatile(&NR_CPUS) }
}
#[inline(always)]
pub fn orig_ax_offset() -> u64 {
    unsafe { read_volatile(&ORIG_AX) }
}
#[inline(always)]
pub fn exit_layout(index: usize) -> u64 {
    unsafe { read_volatile(&EXIT_LAYOUT[index]) }
}
#[inline(always)]
pub fn task_flags() -> u64 {
    unsafe { read_volatile(&TASK_FLAGS) }
}
#[inline(always)]
pub fn task_stack() -> u64 {
    unsafe { read_volatile(&TASK_STACK) }
}
#[inline(always)]
pub fn regs_sp() -> u64 {
    unsafe { read_volatile(&REGS_SP) }
}
#[inline(always)]
pub fn sample_period() -> u64 {
    unsafe { read_volatile(&SAMPLE_PERIOD) }
}
#[inline(always)]
pub fn sample_bytes() -> u64 {
    unsafe { read_volatile(&SAMPLE_BYTES) }
}
#[inline(always)]
pub fn exp_table(index: usize) -> u32 {
    unsafe { read_volatile(&EXP_TABLE[index % EXP_TABLE_SIZE]) }
}

/// Where oom:mark_victim's fields are in its record (this kernel's format).
pub struct OomLayout {
    pub pid: u64,
    pub comm: u64,
    pub total_vm: u64,
    pub anon_rss: u64,
    pub file_rss: u64,
    pub shmem_rss: u64,
    pub uid: u64,
    pub pgtables: u64,
    pub oom_score_adj: u64,
}

#[inline(always)]
pub fn oom_layout() -> OomLayout {
    let field = |i: usize| unsafe { read_volatile(&OOM_FIELDS[i]) };
    OomLayout {
        pid: field(0),
        comm: field(1),
        total_vm: field(2),
        anon_rss: field(3),
        file_rss: field(4),
        shmem_rss: field(5),
        uid: field(6),
        pgtables: field(7),
        oom_score_adj: field(8),
    }
}

/// The offsets from a task to its memory cgroup's kernfs node id (0: unknown).
pub struct MemcgChain {
    /// task_struct.cgroups
    pub css_set: u64,
    /// css_set.subsys[memory_cgrp_id]
    pub memory_css: u64,
    /// cgroup_subsys_state.cgroup
    pub css_cgroup: u64,
    /// cgroup.kn
    pub cgroup_kn: u64,
    /// kernfs_node.id
    pub kn_id: u64,
}

#[inline(always)]
pub fn memcg_chain() -> MemcgChain {
    let step = |i: usize| unsafe { read_volatile(&MEMCG_CHAIN[i]) };
    MemcgChain {
        css_set: step(0),
        memory_css: step(1),
        css_cgroup: step(2),
        cgroup_kn: step(3),
        kn_id: step(4),
    }
}
