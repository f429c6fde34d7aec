//! The one target filter every hook asks: is the current task one we trace?
use aya_ebpf::helpers::generated::bpf_get_current_ancestor_cgroup_id;
use memtrace_common::filter_mode;

use crate::{config, maps::TARGET_TGIDS};

/// For events about another process's pages (reclaim runs in kswapd or any process): is the
/// owner traced? A cgroup cannot be checked from another task: `in_cgroup` is what the owner's
/// own last event found (see `swap`).
#[inline(always)]
pub fn is_owner_target(owner: u32, in_cgroup: bool) -> bool {
    match config::filter_mode() {
        filter_mode::TGIDS => in_target_set(owner),
        filter_mode::CGROUP => in_cgroup,
        _ => owner != config::self_tgid(),
    }
}

#[inline(always)]
pub fn is_target(tgid: u32) -> bool {
    match config::filter_mode() {
        filter_mode::TGIDS => in_target_set(tgid),
        filter_mode::CGROUP if tgid != config::self_tgid() => {
            // The ancestor at the target's level is the target itself for tasks in it or below.
            let level = config::cgroup_level() as i32;
            unsafe { bpf_get_current_ancestor_cgroup_id(level) == config::cgroup_id() }
        }
        filter_mode::CGROUP => false,
        _ => tgid != config::self_tgid(),
    }
}

/// 1 once the single traced process (`config::single_tgid`, or `first_tgid`) has exited: its
/// pid may then be
/// given to a new process before userspace notices, and that one is not the target. (With a
/// set, the exit removes the pid from the set instead.) In .bss: the one writable global.
#[unsafe(no_mangle)]
static mut SINGLE_TGID_EXITED: u32 = 0;

/// The process `tgid` has exited (its thread-group leader has): it leaves the target set,
/// before its pid can be reused.
#[inline(always)]
pub fn target_exited(tgid: u32) {
    let _ = TARGET_TGIDS.remove(tgid);
    if tgid == config::single_tgid() || tgid == config::first_tgid() {
        unsafe { core::ptr::write_volatile(&raw mut SINGLE_TGID_EXITED, 1) };
    }
}

#[inline(always)]
fn in_target_set(tgid: u32) -> bool {
    let exited = || unsafe { core::ptr::read_volatile(&raw const SINGLE_TGID_EXITED) } != 0;
    match config::single_tgid() {
        // A command and its children: the command's own events need no lookup.
        0 if tgid != 0 && tgid == config::first_tgid() && !exited() => true,
        // One compare instead of a hash lookup, on every event of the commonest case.
        0 => unsafe { TARGET_TGIDS.get(tgid).is_some() },
        single => tgid == single && !exited(),
    }
}
