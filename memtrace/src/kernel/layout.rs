//! Where the kernel keeps what memtrace swap reads directly, found in the kernel's BTF.
//!
//! The swap program runs on the raw `rss_stat` tracepoint, which passes only the mm and which
//! counter changed: the classic tracepoint would also compute the counter's total on every RSS
//! change of every process (a locked sum over CPUs), which cost 1.1-1.2x on a fault storm. The
//! program reads the total itself, and only for the swap-entry counter: a `percpu_counter`
//! (Linux 6.2+), its shared `count` plus each CPU's share.
use anyhow::{bail, Context, Result};

use crate::kernel::btf::Btf;

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
    /// enum vm_event_item's (SWPIN_ZERO, SWPOUT_ZERO): the zero-filled pages the kernel swaps
    /// without I/O (Linux 6.12+); None on kernels that write every page.
    pub zero_events: Option<(u32, u32)>,
}

impl SwapLayout {
    pub fn discover() -> Result<Self> {
        let btf = Btf::vmlinux()?;
        let layout = Self::from_btf(&btf).context(
            "memtrace swap reads the kernel's per-process swap counters and does not recognise \
             this kernel's layout (it needs Linux 6.2+, where they are per-CPU counters)",
        )?;
        Ok(Self {
            do_swap_page: kernel_function_range("do_swap_page"),
            ..layout
        })
    }

    /// The offsets in `btf`; `do_swap_page` (from kallsyms) is left to `discover`.
    pub fn from_btf(btf: &Btf) -> Result<Self> {
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
        let swap_counter = (MM_SWAPENTS.checked_mul(stride))
            .and_then(|offset| offset.checked_add(rss.offset))
            .context("mm_struct.rss_stat[MM_SWAPENTS] lies beyond 4 GiB")?;
        Ok(Self {
            swap_counter,
            counter_count: btf.struct_member("percpu_counter", "count")?.offset,
            counter_percpu: btf.struct_member("percpu_counter", "counters")?.offset,
            task_mm: btf.struct_member("task_struct", "mm")?.offset,
            array_percpu_base: btf.struct_member("bpf_array", "pptrs")?.offset,
            fault_error_code: cfg!(target_arch = "x86_64")
                .then(|| btf.struct_member("pt_regs", "orig_ax").ok())
                .flatten()
                .map(|m| m.offset),
            do_swap_page: None,
            zero_events: zero_events(btf),
        })
    }
}

/// The kernel's event numbers for zero-filled pages swapped out and in, when it has them.
fn zero_events(btf: &Btf) -> Option<(u32, u32)> {
    let items = btf.enum_values("vm_event_item").ok()?;
    let value = |name: &str| {
        let (_, value) = items.iter().find(|(item, _)| item == name)?;
        // 0 is PGPGIN, never one of these: the programs read 0 as "not counted".
        u32::try_from(*value).ok().filter(|&v| v > 0)
    };
    Some((value("SWPIN_ZERO")?, value("SWPOUT_ZERO")?))
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
    /// task_struct.flags: tells kernel threads (PF_KTHREAD) from processes.
    pub task_flags: u32,
    /// task_struct.stack: interrupts run on other stacks than the task's.
    pub task_stack: u32,
    /// pt_regs.sp: the stack pointer at the tracepoint.
    pub regs_sp: u32,
}

impl PageTracing {
    pub fn discover() -> Result<Self> {
        Self::from_btf(&Btf::vmlinux()?)
    }

    pub fn from_btf(btf: &Btf) -> Result<Self> {
        let member = |object: &str, name: &str| {
            btf.struct_member(object, name)
                .with_context(|| format!("memtrace pages reads {object}.{name}"))
                .map(|m| m.offset)
        };
        Ok(Self {
            task_flags: member("task_struct", "flags")?,
            task_stack: member("task_struct", "stack")?,
            regs_sp: member("pt_regs", "sp")?,
        })
    }
}

/// Where the OOM program reads (see memtrace-ebpf's `oom`): oom:mark_victim's fields, from its
/// format in tracefs (they grew over kernel versions; a missing one reads as offset 0 and is
/// reported as 0), and the path from a task to its memory cgroup, from BTF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OomTracing {
    /// pid, comm, total_vm, anon_rss, file_rss, shmem_rss, uid, pgtables, oom_score_adj.
    pub fields: [u64; 9],
    /// task_struct.cgroups, css_set.subsys[memory], cgroup_subsys_state.cgroup, cgroup.kn,
    /// kernfs_node.id (all 0: the cgroup is not read).
    pub memcg_chain: [u64; 5],
}

/// mark_victim's fields in the order of `OomTracing::fields`.
const OOM_FIELDS: [&str; 9] = [
    "pid",
    "comm",
    "total_vm",
    "anon_rss",
    "file_rss",
    "shmem_rss",
    "uid",
    "pgtables",
    "oom_score_adj",
];

impl OomTracing {
    pub fn discover() -> Result<Self> {
        let path = "/sys/kernel/tracing/events/oom/mark_victim/format";
        let format = std::fs::read_to_string(path)
            .with_context(|| format!("reading {path} (the OOM killer's tracepoint)"))?;
        let offsets = tracepoint_offsets(&format);
        let field = |name: &str| offsets.get(name).copied();
        if field("pid").is_none() {
            bail!("{path} has no pid field");
        }
        let fields = OOM_FIELDS.map(|name| field(name).unwrap_or(0));
        let memcg_chain = memcg_chain().unwrap_or_else(|err| {
            log::debug!("memory cgroup of OOM kills not read: {err:#}");
            [0; 5]
        });
        Ok(Self {
            fields,
            memcg_chain,
        })
    }
}

/// The byte offset of each field of a tracepoint's format text.
pub fn tracepoint_offsets(format: &str) -> std::collections::HashMap<String, u64> {
    format
        .lines()
        .filter_map(|line| {
            let declaration = line.trim().strip_prefix("field:")?.split(';').next()?;
            let name = declaration.split_whitespace().last()?;
            let name = name.split('[').next()?.to_owned();
            let offset = line
                .split("offset:")
                .nth(1)?
                .split(';')
                .next()?
                .parse()
                .ok()?;
            Some((name, offset))
        })
        .collect()
}

/// task->cgroups->subsys[memory_cgrp_id]->cgroup->kn->id, as byte offsets.
fn memcg_chain() -> Result<[u64; 5]> {
    memcg_chain_in(&Btf::vmlinux()?)
}

/// The offsets of `memcg_chain` in `btf`.
pub fn memcg_chain_in(btf: &Btf) -> Result<[u64; 5]> {
    let subsystems = btf.enum_values("cgroup_subsys_id")?;
    let memory = subsystems
        .iter()
        .find(|(name, _)| name == "memory_cgrp_id")
        .map(|(_, value)| *value as u64)
        .context("no memory cgroup controller in this kernel")?;
    let offset = |object: &str, member: &str| -> Result<u64> {
        Ok(u64::from(btf.struct_member(object, member)?.offset))
    };
    let cgroups = offset("task_struct", "cgroups")?;
    let subsys = offset("css_set", "subsys")?;
    let memory_subsys = (memory.checked_mul(8))
        .and_then(|at| at.checked_add(subsys))
        .context("css_set.subsys[memory_cgrp_id] is out of range")?;
    Ok([
        cgroups,
        memory_subsys,
        offset("cgroup_subsys_state", "cgroup")?,
        offset("cgroup", "kn")?,
        offset("kernfs_node", "id")?,
    ])
}

/// Where the exit program reads a process's lifetime fault counts (see memtrace-ebpf's
/// `exits`): task_struct.signal, signal_struct.live, .min_flt, .maj_flt, task_struct.min_flt,
/// .maj_flt, .group_leader, .start_boottime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExitLayout {
    pub fields: [u64; 8],
}

impl ExitLayout {
    pub fn discover() -> Result<Self> {
        Self::from_btf(&Btf::vmlinux()?)
    }

    pub fn from_btf(btf: &Btf) -> Result<Self> {
        let offset = |object: &str, member: &str| -> Result<u64> {
            Ok(u64::from(
                btf.struct_member(object, member)
                    .with_context(|| format!("the agent reads {object}.{member}"))?
                    .offset,
            ))
        };
        Ok(Self {
            fields: [
                offset("task_struct", "signal")?,
                offset("signal_struct", "live")?,
                offset("signal_struct", "min_flt")?,
                offset("signal_struct", "maj_flt")?,
                offset("task_struct", "min_flt")?,
                offset("task_struct", "maj_flt")?,
                offset("task_struct", "group_leader")?,
                offset("task_struct", "start_boottime")?,
            ],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracepoint_offsets_from_a_format() {
        let format = "name: mark_victim\nformat:\n\
            \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
            \tfield:int pid;\toffset:8;\tsize:4;\tsigned:1;\n\
            \tfield:__data_loc char[] comm;\toffset:12;\tsize:4;\tsigned:0;\n\
            \tfield:short oom_score_adj;\toffset:64;\tsize:2;\tsigned:1;\n";
        let offsets = tracepoint_offsets(format);
        assert_eq!(offsets["pid"], 8);
        assert_eq!(offsets["comm"], 12);
        assert_eq!(offsets["oom_score_adj"], 64);
        assert_eq!(offsets["common_type"], 0);
    }

    #[test]
    fn this_kernels_oom_layout() {
        let Ok(layout) = OomTracing::discover() else {
            assert!(
                std::env::var("CI").is_err(),
                "tracefs and BTF are needed under CI"
            );
            return;
        };
        assert_eq!(layout.fields[0], 8, "pid right after the common header");
        // task_struct.cgroups and cgroup.kn lie well inside their structs.
        assert!(layout.memcg_chain[0] > 0 && layout.memcg_chain[3] > 0);
    }

    /// Found by fuzzing (cargo xtask fuzz btf), cut down: offsets computed from a BTF's sizes
    /// and enum values overflowed.
    #[test]
    fn out_of_range_offsets_are_errors() {
        use crate::kernel::btf::blob::*;
        let mut b = Blob::default();
        let (count, rss_stat, subsys) = (b.name("count"), b.name("rss_stat"), b.name("subsys"));
        let (cgroups, memory) = (b.name("cgroups"), b.name("memory_cgrp_id"));
        let int = b.add("int", KIND_INT << 24, 4, &[32]);
        // A 2 GiB percpu_counter: rss_stat[MM_SWAPENTS] lies at 4 GiB.
        let counter = b.add(
            "percpu_counter",
            KIND_STRUCT << 24 | 1,
            1 << 31,
            &[count, int, 0],
        );
        let counters = b.add("", KIND_ARRAY << 24, 0, &[counter, int, 4]);
        b.add(
            "mm_struct",
            KIND_STRUCT << 24 | 1,
            8,
            &[rss_stat, counters, 0],
        );
        // memory_cgrp_id = -1: css_set.subsys[-1].
        b.add("task_struct", KIND_STRUCT << 24 | 1, 8, &[cgroups, int, 0]);
        b.add("css_set", KIND_STRUCT << 24 | 1, 8, &[subsys, int, 64]);
        b.add(
            "cgroup_subsys_id",
            1 << 31 | KIND_ENUM << 24 | 1,
            4,
            &[memory, u32::MAX],
        );
        let btf = Btf::parse(&b.bytes()).unwrap();

        let err = SwapLayout::from_btf(&btf).unwrap_err();
        assert!(format!("{err:#}").contains("beyond 4 GiB"), "{err:#}");
        let err = memcg_chain_in(&btf).unwrap_err();
        assert!(format!("{err:#}").contains("out of range"), "{err:#}");
    }
}
