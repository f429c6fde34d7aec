//! Settings written by the loader into .rodata before the programs load: the verifier sees them
//! as constants and prunes the branches they switch off, so an unused feature costs nothing.
use core::ptr::read_volatile;

use memtrace_common::Settings;
pub use memtrace_common::EXP_TABLE_SIZE;

/// Written whole by the loader (`override_global("SETTINGS", ..)`); each accessor below reads
/// one field with a volatile load at a constant offset, which the verifier resolves from the
/// frozen map (what each field is: see `Settings`).
#[unsafe(no_mangle)]
static SETTINGS: Settings = Settings::ZERO;

#[inline(always)]
pub fn filter_mode() -> u32 {
    unsafe { read_volatile(&raw const SETTINGS.filter_mode) }
}
#[inline(always)]
pub fn stack_flags() -> u32 {
    unsafe { read_volatile(&raw const SETTINGS.stack_flags) }
}
#[inline(always)]
pub fn cgroup_id() -> u64 {
    unsafe { read_volatile(&raw const SETTINGS.cgroup_id) }
}
#[inline(always)]
pub fn cgroup_level() -> u32 {
    unsafe { read_volatile(&raw const SETTINGS.cgroup_level) }
}
#[inline(always)]
pub fn follow_children() -> bool {
    unsafe { read_volatile(&raw const SETTINGS.follow_children) != 0 }
}
#[inline(always)]
pub fn single_tgid() -> u32 {
    unsafe { read_volatile(&raw const SETTINGS.single_tgid) }
}
#[inline(always)]
pub fn first_tgid() -> u32 {
    unsafe { read_volatile(&raw const SETTINGS.first_tgid) }
}
#[inline(always)]
pub fn file_tags() -> bool {
    unsafe { read_volatile(&raw const SETTINGS.file_tags) != 0 }
}
#[inline(always)]
pub fn do_swap_page() -> (u64, u64) {
    unsafe {
        (
            read_volatile(&raw const SETTINGS.do_swap_page_start),
            read_volatile(&raw const SETTINGS.do_swap_page_end),
        )
    }
}
#[inline(always)]
pub fn self_tgid() -> u32 {
    unsafe { read_volatile(&raw const SETTINGS.self_tgid) }
}
#[inline(always)]
pub fn wakeup_bytes() -> u64 {
    unsafe { read_volatile(&raw const SETTINGS.wakeup_bytes) }
}

/// Byte offsets in kernel structs (see memtrace's `kernel::layout::SwapLayout`).
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
            swap_counter: read_volatile(&raw const SETTINGS.mm_swap_counter),
            counter_count: read_volatile(&raw const SETTINGS.counter_count),
            counter_percpu: read_volatile(&raw const SETTINGS.counter_percpu),
            task_mm: read_volatile(&raw const SETTINGS.task_mm),
        }
    }
}
#[inline(always)]
pub fn array_percpu_base() -> u64 {
    unsafe { read_volatile(&raw const SETTINGS.array_percpu_base) }
}
#[inline(always)]
pub fn nr_cpus() -> u32 {
    unsafe { read_volatile(&raw const SETTINGS.nr_cpus) }
}
/// enum vm_event_item's (SWPIN_ZERO, SWPOUT_ZERO); (0, 0) when not counted.
#[inline(always)]
pub fn zero_events() -> (u32, u32) {
    unsafe {
        (
            read_volatile(&raw const SETTINGS.swpin_zero_event),
            read_volatile(&raw const SETTINGS.swpout_zero_event),
        )
    }
}
#[inline(always)]
pub fn orig_ax_offset() -> u64 {
    unsafe { read_volatile(&raw const SETTINGS.orig_ax) }
}
#[inline(always)]
pub fn exit_layout(index: usize) -> u64 {
    unsafe { read_volatile(&raw const SETTINGS.exit_layout[index]) }
}
#[inline(always)]
pub fn task_flags() -> u64 {
    unsafe { read_volatile(&raw const SETTINGS.task_flags) }
}
#[inline(always)]
pub fn task_stack() -> u64 {
    unsafe { read_volatile(&raw const SETTINGS.task_stack) }
}
#[inline(always)]
pub fn regs_sp() -> u64 {
    unsafe { read_volatile(&raw const SETTINGS.regs_sp) }
}
#[inline(always)]
pub fn sample_period() -> u64 {
    unsafe { read_volatile(&raw const SETTINGS.sample_period) }
}
#[inline(always)]
pub fn sample_bytes() -> u64 {
    unsafe { read_volatile(&raw const SETTINGS.sample_bytes) }
}
#[inline(always)]
pub fn exp_table(index: usize) -> u32 {
    unsafe { read_volatile(&raw const SETTINGS.exp_table[index % EXP_TABLE_SIZE]) }
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
    let field = |i: usize| unsafe { read_volatile(&raw const SETTINGS.oom_fields[i]) };
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
    let step = |i: usize| unsafe { read_volatile(&raw const SETTINGS.memcg_chain[i]) };
    MemcgChain {
        css_set: step(0),
        memory_css: step(1),
        css_cgroup: step(2),
        cgroup_kn: step(3),
        kn_id: step(4),
    }
}
#[inline(always)]
pub fn unwind_tables() -> bool {
    unsafe { read_volatile(&raw const SETTINGS.unwind_tables) != 0 }
}
