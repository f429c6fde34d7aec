//! The memory cgroup a task is in, read from the task itself: right even while the task
//! exits, when /proc/PID/cgroup already shows the root.
use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};

use crate::config;

/// The current task's memory cgroup, as its kernfs node id: task->cgroups->subsys[memory]
/// ->cgroup->kn->id (offsets from BTF).
#[inline(always)]
pub fn current_memcg() -> u64 {
    let chain = config::memcg_chain();
    if chain.css_set == 0 {
        return 0;
    }
    let read = |base: u64, offset: u64| -> u64 {
        if base == 0 {
            return 0;
        }
        unsafe { bpf_probe_read_kernel((base + offset) as *const u64) }.unwrap_or(0)
    };
    let task = unsafe { bpf_get_current_task() };
    let css_set = read(task, chain.css_set);
    let css = read(css_set, chain.memory_css);
    let cgroup = read(css, chain.css_cgroup);
    let kn = read(cgroup, chain.cgroup_kn);
    read(kn, chain.kn_id)
}
