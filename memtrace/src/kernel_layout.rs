//! Where the kernel keeps what memtrace swap reads directly, found in the kernel's BTF.
//!
//! The swap program runs on the raw `rss_stat` tracepoint, which passes only the mm and which
//! counter changed: the classic tracepoint would also compute the counter's total on every RSS
//! change of every process (a locked sum over CPUs), which cost 1.1-1.2x on a fault storm. The
//! program reads the total itself, and only for the swap-entry counter: a `percpu_counter`
//! (Linux 6.2+), its shared `count` plus each CPU's share.
use anyhow::{bail, Context, Result};

use crate::btf::Btf;

/// Index of the swap-entry counter in mm_struct's rss_stat (enum MM_SWAPENTS, stable).
const MM_SWAPENTS: u32 = 2;

/// Byte offsets the swap program reads at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SwapLayout {
    /// mm_struct.rss_stat[MM_SWAPENTS], a struct percpu_counter.
    pub swap_counter: u32,
    /// percpu_counter.count: the shared part of the total.
    pub counter_count: u32,
    /// percpu_counter.counters: the per-CPU parts (a per-CPU pointer to s32).
    pub counter_percpu: u32,
    /// task_struct.mm: whether a change is made by the mm's own process.
    pub task_mm: u32,
    /// bpf_array.pptrs: the per-CPU base of one of memtrace's own maps, from which each CPU's
    /// per-CPU offset is learnt (see memtrace-ebpf's `percpu`).
    pub array_percpu_base: u32,
    /// pt_regs.orig_ax, where x86-64 keeps a page fault's error code (None on other
    /// architectures): tells swap-ins in user-mode faults without a kernel-stack walk.
    pub fault_error_code: Option<u32>,
    /// do_swap_page's address range (kallsyms), for telling swap-ins from freed swap entries.
    pub do_swap_page: Option<(u64, u64)>,
}

impl SwapLayout {
    pub fn discover() -> Result<Self> {
        let btf = Btf::vmlinux()?;
        Self::from_btf(&btf).context(
            "memtrace swap reads the kernel's per-process swap counters and does not recognise \
             this kernel's layout (it needs Linux 6.2+, where they are per-CPU counters)",
        )
    }

    fn from_btf(btf: &Btf) -> Result<Self> {
        let rss = btf.struct_member("mm_struct", "rss_stat")?;
        let element = btf
            .element_of(rss.type_id)
            .context("mm_struct.rss_stat is not an array")?;
        let element_name = btf.type_name(element).unwrap_or_default();
        if element_name != "percpu_counter" {
            bail!("mm_struct.rss_stat holds {element_name:?}, not percpu_counter");
        }
        let stride = btf
            .size_of(element)
            .context("no size for struct percpu_counter")?;
        Ok(Self {
            swap_counter: rss.offset + MM_SWAPENTS * stride,
            counter_count: btf.struct_member("percpu_counter", "count")?.offset,
            counter_percpu: btf.struct_member("percpu_counter", "counters")?.offset,
            task_mm: btf.struct_member("task_struct", "mm")?.offset,
            array_percpu_base: btf.struct_member("bpf_array", "pptrs")?.offset,
            fault_error_code: cfg!(target_arch = "x86_64")
                .then(|| btf.struct_member("pt_regs", "orig_ax").ok())
                .flatten()
                .map(|m| m.offset),
            do_swap_page: kernel_function_range("do_swap_page"),
        })
    }
}

/// The address range of kernel function `name`: its address up to the next symbol's.
fn kernel_function_range(name: &str) -> Option<(u64, u64)> {
    let symbols = aya::util::kernel_symbols().ok()?;
    let (&start, _) = symbols.iter().find(|(_, symbol)| symbol.as_str() == name)?;
    let (&end, _) = symbols.range(start + 1..).next()?;
    (start != 0).then_some((start, end))
}

/// What the page-allocation program needs (see memtrace-ebpf's `pages`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PageTracing {
    /// Record 1 allocation in this many (0 or 1: every one).
    pub sample_period: u64,
    /// task_struct.flags: tells kernel threads (PF_KTHREAD) from processes.
    pub task_flags: u32,
    /// task_struct.stack: interrupts run on other stacks than the task's.
    pub task_stack: u32,
    /// pt_regs.sp: the stack pointer at the tracepoint.
    pub regs_sp: u32,
}

impl PageTracing {
    pub fn discover(sample_period: u64) -> Result<Self> {
        let btf = Btf::vmlinux()?;
        let member = |object: &str, name: &str| {
            btf.struct_member(object, name)
                .with_context(|| format!("memtrace pages reads {object}.{name}"))
                .map(|m| m.offset)
        };
        Ok(Self {
            sample_period,
            task_flags: member("task_struct", "flags")?,
            task_stack: member("task_struct", "stack")?,
            regs_sp: member("pt_regs", "sp")?,
        })
    }
}
