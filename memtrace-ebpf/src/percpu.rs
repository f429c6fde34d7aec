//! Each CPU's per-CPU offset (the kernel's `__per_cpu_offset[cpu]`), for reading per-CPU kernel
//! data such as the per-CPU parts of an mm's counters. The kernel exports neither the array
//! (kallsyms lists data symbols only with CONFIG_KALLSYMS_ALL) nor, without CONFIG_DEBUG_INFO_BTF
//! type tags, a way for programs to use `bpf_per_cpu_ptr` on such data. So it is learnt from one
//! of memtrace's own per-CPU maps: a value's address on this CPU minus the map's per-CPU base.
//!
//! The loader runs this program once on each CPU (BPF_PROG_TEST_RUN pinned to the CPU) before
//! attaching anything that reads per-CPU data; it is never attached to the tracepoint.
use aya_ebpf::{
    helpers::{bpf_get_smp_processor_id, bpf_probe_read_kernel},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use core::ptr::{read_volatile, write_volatile};

use crate::{
    config,
    maps::{ADDRESS_SCRATCH, CPU_OFFSETS, PERCPU_PROBE},
};

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn learn_cpu_offset(_ctx: RawTracePointContext) -> i32 {
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let (Some(here), Some(scratch), Some(slot)) = (
        PERCPU_PROBE.get_ptr(0),
        ADDRESS_SCRATCH.get_ptr_mut(0),
        CPU_OFFSETS.get_ptr_mut(cpu),
    ) else {
        return 1;
    };
    // The verifier allows no arithmetic on a map's address, but a privileged program may store
    // it in a map and read it back as a number.
    let launder = |address: u64| unsafe {
        write_volatile(scratch, address);
        read_volatile(scratch)
    };
    let map = launder(&PERCPU_PROBE as *const _ as u64);
    let here = launder(here as u64);
    // bpf_array.pptrs[0]: the per-CPU pointer behind PERCPU_PROBE's only value.
    let Ok(base) =
        (unsafe { bpf_probe_read_kernel((map + config::array_percpu_base()) as *const u64) })
    else {
        return 1;
    };
    unsafe { *slot = here.wrapping_sub(base) };
    0
}
