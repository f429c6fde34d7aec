//! Which file a fault was served from, decided in the kernel at fault time: filemap_fault fires
//! inside the fault handler (tracepoint filemap:mm_filemap_fault, with the file's device and
//! inode), and the perf fault event fires at the end of the same handler on the same thread.
//! The thread id links the two, even when a major fault sleeps and moves to another CPU.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use memtrace_common::FileTag;

use crate::{filter, maps::FILE_FAULTS};

// Offsets in filemap:mm_filemap_fault's format (stable since 4.x: i_ino, s_dev, index).
const INO_OFFSET: usize = 8;
const DEV_OFFSET: usize = 16;

#[tracepoint]
pub fn filemap_fault(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !filter::is_target((pid_tgid >> 32) as u32) {
        return 0;
    }
    let (Ok(ino), Ok(dev)) = (unsafe { ctx.read_at::<u64>(INO_OFFSET) }, unsafe {
        ctx.read_at::<u32>(DEV_OFFSET)
    }) else {
        return 0;
    };
    let tag = FileTag { dev, _pad: 0, ino };
    let _ = FILE_FAULTS.insert(pid_tgid as u32, tag, 0);
    0
}

/// The file of the fault now finishing on this thread, if it was served from one.
#[inline(always)]
pub fn take(tid: u32) -> Option<FileTag> {
    let tag = unsafe { FILE_FAULTS.get(tid) }.copied()?;
    let _ = FILE_FAULTS.remove(tid);
    Some(tag)
}
