//! The embedded eBPF object, loaded with this trace's settings: the handle every other part
//! of `kernel` works through (attaching programs: `programs`; reading tables: `tables`).
use anyhow::{bail, Context, Result};
use aya::{
    maps::{HashMap, MapData, RingBuf},
    Ebpf, EbpfLoader,
};
use memtrace_common::MAX_TARGETS;

use super::config::{Filter, KernelConfig};
use memtrace_common::{filter_mode, stack_flags};

/// The object built by build.rs from memtrace-ebpf (empty when built with MEMTRACE_SKIP_EBPF=1).
pub(super) static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/memtrace"));

/// The allocation sampler's exponential distances: -ln(u) in 16.16 fixed point, for u spread
/// evenly over (0, 1) (see memtrace-ebpf's `malloc::interval`).
fn exponential_table() -> [u32; 1024] {
    std::array::from_fn(|i| {
        let u = (i as f64 + 0.5) / 1024.0;
        (-u.ln() * 65536.0).round() as u32
    })
}

/// aya's error for an unreadable CPU list (which file, why).
pub(super) fn cpu_list_error((what, err): (&'static str, std::io::Error)) -> anyhow::Error {
    anyhow::anyhow!("reading {what}: {err}")
}

pub struct Tracer {
    pub(super) ebpf: Ebpf,
}

impl Tracer {
    pub fn load(config: &KernelConfig) -> Result<Self> {
        if OBJECT.is_empty() {
            bail!("this memtrace was built without its eBPF programs (MEMTRACE_SKIP_EBPF=1); rebuild it without that variable");
        }
        let (mode, cgroup_id, cgroup_level) = match config.filter {
            Filter::All => (filter_mode::ALL, 0u64, 0u32),
            Filter::Tgids(_) => (filter_mode::TGIDS, 0, 0),
            Filter::Cgroup { id, level } => (filter_mode::CGROUP, id, level),
        };
        let stacks = if config.user_stacks {
            stack_flags::USER
        } else {
            0
        } | if config.kernel_stacks {
            stack_flags::KERNEL
        } else {
            0
        } | if config.page_stacks {
            stack_flags::PAGE_ALLOCS
        } else {
            0
        };
        let follow = u32::from(config.follow_children);
        let single_tgid = config.single_process().unwrap_or(0);
        let wakeup = config.wakeup_bytes();
        let self_tgid = std::process::id();
        let file_tags = u32::from(config.file_tags);
        // Maps a subcommand does not use get one entry: they are created (and preallocated)
        // at load whether used or not.
        let sized = |used: bool, entries: u32| if used { entries } else { 1 };
        let swap = config.swap.is_some();
        let sample_bytes = config.malloc.unwrap_or(0);
        let pages = config.pages.unwrap_or_default();
        let oom = config.oom.unwrap_or_default();
        let swap_entries = sized(swap, MAX_TARGETS);
        // Zeros when swap is not traced: its programs are never attached.
        let layout = config.swap.unwrap_or_default();
        let swap_page = layout.do_swap_page.unwrap_or((0, 0));
        let possible_cpus = aya::util::nr_cpus().map_err(cpu_list_error)? as u32;
        let ebpf = EbpfLoader::new()
            .override_global("FILTER_MODE", &mode, true)
            .override_global("STACK_FLAGS", &stacks, true)
            .override_global("CGROUP_ID", &cgroup_id, true)
            .override_global("CGROUP_LEVEL", &cgroup_level, true)
            .override_global("FOLLOW_CHILDREN", &follow, true)
            .override_global("SINGLE_TGID", &single_tgid, true)
            .override_global("WAKEUP_BYTES", &wakeup, true)
            .override_global("SELF_TGID", &self_tgid, true)
            .override_global("FILE_TAGS", &file_tags, true)
            .override_global("DO_SWAP_PAGE_START", &swap_page.0, true)
            .override_global("DO_SWAP_PAGE_END", &swap_page.1, true)
            .override_global("MM_SWAP_COUNTER", &u64::from(layout.swap_counter), true)
            .override_global("COUNTER_COUNT", &u64::from(layout.counter_count), true)
            .override_global("COUNTER_PERCPU", &u64::from(layout.counter_percpu), true)
            .override_global("TASK_MM", &u64::from(layout.task_mm), true)
            .override_global(
                "ARRAY_PERCPU_BASE",
                &u64::from(layout.array_percpu_base),
                true,
            )
            .override_global("NR_CPUS", &possible_cpus, true)
            .override_global(
                "ORIG_AX",
                &u64::from(layout.fault_error_code.unwrap_or(0)),
                true,
            )
            .map_max_entries("EVENTS", config.ring_bytes)
            .map_max_entries("STACKS", config.stack_entries.max(1))
            .map_max_entries("USER_STACKS", config.stack_entries.max(1))
            .map_max_entries("FILE_FAULTS", sized(config.file_tags, 4096))
            .map_max_entries("SWAP_COUNTS", swap_entries)
            .map_max_entries("MM_STATE", swap_entries)
            .map_max_entries("SWAP_STAGED", sized(swap, 4096))
            .map_max_entries("CPU_OFFSETS", sized(swap, possible_cpus))
            .override_global("SAMPLE_BYTES", &sample_bytes, true)
            .override_global("SAMPLE_PERIOD", &config.stack_sample_period, true)
            .override_global(
                "EXIT_LAYOUT",
                &config.exits.unwrap_or_default().fields,
                true,
            )
            .override_global("TASK_FLAGS", &u64::from(pages.task_flags), true)
            .override_global("TASK_STACK", &u64::from(pages.task_stack), true)
            .override_global("REGS_SP", &u64::from(pages.regs_sp), true)
            .override_global("OOM_FIELDS", &oom.fields, true)
            .override_global("MEMCG_CHAIN", &oom.memcg_chain, true)
            .map_max_entries(
                "PAGE_COUNTS",
                sized(config.pages.is_some(), config.page_count_entries),
            )
            .override_global("EXP_TABLE", &exponential_table(), true)
            .map_max_entries(
                "PENDING_ALLOCS",
                sized(config.malloc.is_some(), memtrace_common::PENDING_SLOTS),
            )
            .map_max_entries("SAMPLE_COUNTDOWN", sized(sample_bytes > 0, 16384))
            .map_max_entries("SAMPLED_BLOCKS", sized(sample_bytes > 0, 1 << 20))
            .load(OBJECT)
            .context("loading the eBPF maps and programs failed")?;
        let mut tracer = Self { ebpf };
        if swap {
            tracer.learn_cpu_offsets()?;
        }
        if let Filter::Tgids(tgids) = &config.filter {
            for &tgid in tgids {
                tracer.add_target(tgid)?;
            }
        }
        Ok(tracer)
    }

    /// Starts forwarding the eBPF programs' log records to `log` (seen with -v).
    pub fn init_logger(&mut self) -> Option<aya_log::EbpfLogger<&'static dyn log::Log>> {
        match aya_log::EbpfLogger::init(&mut self.ebpf) {
            Ok(logger) => Some(logger),
            Err(err) => {
                log::debug!("eBPF log not available: {err}");
                None
            }
        }
    }

    pub fn add_target(&mut self, tgid: u32) -> Result<()> {
        let mut targets: HashMap<_, u32, u8> = HashMap::try_from(self.map_mut("TARGET_TGIDS")?)?;
        targets
            .insert(tgid, 1, 0)
            .with_context(|| format!("adding pid {tgid} to the kernel filter"))
    }

    /// Total run time and runs of memtrace's attached programs (zero unless the kernel keeps
    /// run-time statistics).
    pub fn program_runs(&self) -> (std::time::Duration, u64) {
        self.ebpf
            .programs()
            .filter_map(|(_, program)| program.info().ok())
            .fold((std::time::Duration::ZERO, 0), |(time, runs), info| {
                (time + info.run_time(), runs + info.run_count())
            })
    }

    /// The event ring buffer, for the drain (can be taken once).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map("EVENTS")
            .context("EVENTS map missing or already taken")?;
        Ok(RingBuf::try_from(map)?)
    }

    pub(super) fn program(&mut self, name: &str) -> Result<&mut aya::programs::Program> {
        self.ebpf
            .program_mut(name)
            .with_context(|| format!("eBPF program {name} missing"))
    }

    pub(super) fn map(&self, name: &str) -> Result<&aya::maps::Map> {
        self.ebpf
            .map(name)
            .with_context(|| format!("eBPF map {name} missing"))
    }

    pub(super) fn map_mut(&mut self, name: &str) -> Result<&mut aya::maps::Map> {
        self.ebpf
            .map_mut(name)
            .with_context(|| format!("eBPF map {name} missing"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::{Object, ObjectSection, SectionFlags};

    /// The BPF helpers the object's programs call (`call imm` with src_reg 0), by number.
    fn helpers_called(elf: &[u8]) -> std::collections::BTreeSet<i32> {
        let file = object::File::parse(elf).expect("the eBPF object is an ELF file");
        let mut helpers = std::collections::BTreeSet::new();
        for section in file.sections() {
            let executable = matches!(section.flags(), SectionFlags::Elf { sh_flags }
                if sh_flags & u64::from(object::elf::SHF_EXECINSTR) != 0);
            if !executable {
                continue;
            }
            let code = section.data().expect("section data");
            for insn in code.chunks_exact(8) {
                // BPF_JMP | BPF_CALL, src_reg 0: a helper (1: a BPF-to-BPF call, 2: a kfunc).
                if insn[0] == 0x85 && insn[1] >> 4 == 0 {
                    helpers.insert(i32::from_le_bytes(insn[4..8].try_into().unwrap()));
                }
            }
        }
        helpers
    }

    /// memtrace only observes: no program can write a process's memory, change a function's
    /// return value, or signal a process.
    #[test]
    fn programs_call_no_helper_that_changes_the_traced_system() {
        if OBJECT.is_empty() {
            assert!(
                !std::env::var("CI").is_ok_and(|ci| ci == "true"),
                "built with MEMTRACE_SKIP_EBPF=1: no eBPF object to check, and CI never skips"
            );
            return;
        }
        let helpers = helpers_called(OBJECT);
        // Sanity of the decoding: every program asks which process it runs in.
        const GET_CURRENT_PID_TGID: i32 = 14;
        assert!(helpers.contains(&GET_CURRENT_PID_TGID), "{helpers:?}");
        for (id, name) in [
            (36, "bpf_probe_write_user"),
            (58, "bpf_override_return"),
            (109, "bpf_send_signal"),
            (117, "bpf_send_signal_thread"),
        ] {
            assert!(
                !helpers.contains(&id),
                "a program calls {name}: {helpers:?}"
            );
        }
    }
}
