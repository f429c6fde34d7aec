//! The embedded eBPF object, loaded with this trace's settings: the handle every other part
//! of `kernel` works through (attaching programs: `programs`; reading tables: `tables`).
use anyhow::{bail, Context, Result};
use aya::{
    maps::{HashMap, MapData, RingBuf},
    Ebpf, EbpfLoader,
};
use memtrace_common::MAX_TARGETS;

use super::{
    config::{Filter, KernelConfig},
    settings,
};

/// Processes whose executable mappings the stack walk keeps at once (LRU beyond).
const UNWIND_PROCESSES: u32 = 1024;

/// The object built by build.rs from memtrace-ebpf (empty when built with MEMTRACE_SKIP_EBPF=1).
pub(super) static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/memtrace"));

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
        // Maps a subcommand does not use get one entry: they are created (and preallocated)
        // at load whether used or not.
        let sized = |used: bool, entries: u32| if used { entries } else { 1 };
        let swap = config.swap.is_some();
        let sample_bytes = config.malloc.unwrap_or(0);
        let swap_entries = sized(swap, MAX_TARGETS);
        let unwind = config.unwind_tables();
        let possible_cpus = aya::util::nr_cpus().map_err(cpu_list_error)? as u32;
        let settings = settings::settings(config, possible_cpus);
        let ebpf = EbpfLoader::new()
            .override_global("SETTINGS", &settings, true)
            .map_max_entries("EVENTS", config.ring_bytes)
            .map_max_entries("STACKS", config.stack_entries.max(1))
            .map_max_entries("USER_STACKS", config.stack_entries.max(1))
            .map_max_entries("PYTHON_STACKS", config.stack_entries.max(1))
            .map_max_entries("FILE_FAULTS", sized(config.file_tags, 4096))
            .map_max_entries("SWAP_COUNTS", swap_entries)
            .map_max_entries("MM_STATE", swap_entries)
            .map_max_entries("SWAP_STAGED", sized(swap, 4096))
            .map_max_entries("CPU_OFFSETS", sized(swap, possible_cpus))
            .map_max_entries(
                "PAGE_COUNTS",
                sized(config.pages.is_some(), config.page_count_entries),
            )
            .map_max_entries(
                "PENDING_ALLOCS",
                sized(config.malloc.is_some(), memtrace_common::PENDING_SLOTS),
            )
            .map_max_entries("SAMPLE_COUNTDOWN", sized(sample_bytes > 0, 16384))
            .map_max_entries("SAMPLED_BLOCKS", sized(sample_bytes > 0, 1 << 20))
            .map_max_entries("UNWIND_ROWS", unwind.map_or(1, |c| c.rows))
            .map_max_entries("UNWIND_PAGES", unwind.map_or(1, |c| c.pages))
            .map_max_entries("UNWIND_TABLES", unwind.map_or(1, |c| c.tables))
            .map_max_entries(
                "UNWIND_PROCESSES",
                sized(unwind.is_some(), UNWIND_PROCESSES),
            )
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

    /// A map the loader owns from now on (the unwind tables' arrays).
    pub fn take_map(&mut self, name: &str) -> Result<aya::maps::Map> {
        self.ebpf
            .take_map(name)
            .with_context(|| format!("eBPF map {name} missing or already taken"))
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
    use object::{Object, ObjectSection, ObjectSymbol, SectionFlags};

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

    /// False when built with MEMTRACE_SKIP_EBPF=1 (no object to check), which CI never does.
    fn object_built() -> bool {
        if OBJECT.is_empty() {
            assert!(
                !std::env::var("CI").is_ok_and(|ci| ci == "true"),
                "built with MEMTRACE_SKIP_EBPF=1: no eBPF object to check, and CI never skips"
            );
            return false;
        }
        true
    }

    /// memtrace only observes: no program can write a process's memory, change a function's
    /// return value, or signal a process.
    #[test]
    fn programs_call_no_helper_that_changes_the_traced_system() {
        if !object_built() {
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

    /// The loader writes a `memtrace_common::Settings` over the programs' `SETTINGS`: the
    /// global must be that size (aya refuses a value of another size), in the read-only data
    /// the verifier takes as constants.
    #[test]
    fn settings_global_has_the_loaders_layout() {
        if !object_built() {
            return;
        }
        let file = object::File::parse(OBJECT).expect("the eBPF object is an ELF file");
        let symbol = file
            .symbols()
            .find(|s| s.name() == Ok("SETTINGS"))
            .expect("the eBPF object has a SETTINGS symbol");
        assert_eq!(
            symbol.size(),
            std::mem::size_of::<memtrace_common::Settings>() as u64
        );
        let section = file
            .section_by_index(symbol.section_index().expect("SETTINGS is in a section"))
            .expect("SETTINGS's section");
        assert!(
            section.name().is_ok_and(|name| name.starts_with(".rodata")),
            "SETTINGS is in {:?}, not .rodata",
            section.name()
        );
    }

    /// Every program of the object is declared once in `hooks` (where it attaches, what it
    /// reads), and every hook names a program of the object: `memtrace check` and the
    /// subcommands' declarations see them all.
    #[test]
    fn every_program_has_one_hook() {
        if !object_built() {
            return;
        }
        let file = object::File::parse(OBJECT).expect("the eBPF object is an ELF file");
        let mut programs: Vec<&str> = file
            .symbols()
            .filter(|symbol| symbol.kind() == object::SymbolKind::Text && symbol.is_global())
            .filter(|symbol| {
                let section = symbol
                    .section_index()
                    .and_then(|i| file.section_by_index(i).ok());
                // Programs sit in sections named by their type; .text holds helpers (memset).
                section.is_some_and(|s| s.name().is_ok_and(|name| name != ".text"))
            })
            .filter_map(|symbol| symbol.name().ok())
            .collect();
        programs.sort_unstable();
        let mut hooked: Vec<&str> = crate::kernel::hooks::all().map(|h| h.program).collect();
        hooked.sort_unstable();
        assert_eq!(programs, hooked);
    }
}
