//! OOM kills: the `oom:mark_victim` tracepoint, once per victim. Every kill on the machine is
//! reported, whatever the target: a kill is rare and always worth seeing.
use aya_ebpf::{
    bindings::BPF_RB_FORCE_WAKEUP,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel},
    macros::tracepoint,
    programs::TracePointContext,
    EbpfContext,
};
use memtrace_common::{counter, EventKind, OomKill, COMM_LEN};

use crate::{
    config,
    maps::{count, EVENTS},
    memcg,
};

#[tracepoint]
pub fn oom_kill(ctx: TracePointContext) -> u32 {
    let layout = config::oom_layout();
    let read_u64 = |offset: u64| unsafe { ctx.read_at::<u64>(offset as usize) }.unwrap_or(0);
    let read_u32 = |offset: u64| unsafe { ctx.read_at::<u32>(offset as usize) }.unwrap_or(0);
    let Some(mut entry) = EVENTS.reserve::<OomKill>(0) else {
        count(counter::LOST);
        return 0;
    };
    entry.write(OomKill {
        kind: EventKind::OomKill as u32,
        pid: read_u32(layout.pid),
        uid: read_u32(layout.uid),
        oom_score_adj: unsafe { ctx.read_at::<i16>(layout.oom_score_adj as usize) }
            .unwrap_or(0)
            .into(),
        total_vm_kb: read_u64(layout.total_vm),
        anon_rss_kb: read_u64(layout.anon_rss),
        file_rss_kb: read_u64(layout.file_rss),
        shmem_rss_kb: read_u64(layout.shmem_rss),
        pgtables_kb: read_u64(layout.pgtables),
        trigger_memcg: memcg::current_memcg(),
        trigger_pid: (bpf_get_current_pid_tgid() >> 32) as u32,
        _pad: 0,
        comm: victim_comm(&ctx, read_u32(layout.comm)),
    });
    // Userspace reads the victim's cgroup from /proc while it may still be there.
    entry.submit(BPF_RB_FORCE_WAKEUP as u64);
    0
}

/// The comm field, a `__data_loc` string: (length << 16) | offset in the record.
#[inline(always)]
fn victim_comm(ctx: &TracePointContext, data_loc: u32) -> [u8; COMM_LEN] {
    let offset = (data_loc & 0xffff) as usize;
    let source = (ctx.as_ptr() as *const u8).wrapping_add(offset) as *const [u8; COMM_LEN];
    unsafe { bpf_probe_read_kernel(source) }.unwrap_or([0; COMM_LEN])
}
