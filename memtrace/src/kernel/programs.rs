//! Attaching the object's programs to their hooks (`hooks`), and loading every one of them for
//! the verifier's verdict (`memtrace check`).
use std::path::Path;

use anyhow::{bail, Context, Result};
use aya::{
    maps::Array,
    programs::{
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope},
        PerfEvent, RawTracePoint, RawTracePointRunOptions, TestRun, TracePoint, UProbe,
    },
    util::online_cpus,
};

use super::{
    hooks::{self, Attachment, Hook, Point, Probe, UprobeSite},
    tracer::{cpu_list_error, Tracer},
    uprobe_lock,
};

impl Tracer {
    /// Attaches one use of hooks. With `single` (the one traced process), uprobes break in
    /// that process only. False when an uprobe site that is not required could not be hooked.
    pub fn attach(&mut self, attachment: &Attachment, single: Option<u32>) -> Result<bool> {
        match attachment {
            Attachment::Hook(hook) => self.attach_hook(hook).map(|()| true),
            Attachment::Sampled { hook, period } => {
                self.attach_page_faults(hook, *period).map(|()| true)
            }
            Attachment::Uprobes(site) => self.attach_uprobes(site, single),
        }
    }

    /// Attaches a hook on a tracepoint's event (a hook run once, by the loader, is skipped).
    pub fn attach_hook(&mut self, hook: &Hook) -> Result<()> {
        match hook.point {
            Point::Tracepoint(category, name) => {
                self.attach_tracepoint(hook.program, category, name)
            }
            Point::RawTracepoint(_, name) => self.attach_raw_tracepoint(hook.program, name),
            Point::RunOnce(..) => Ok(()),
            Point::PageFaults { .. } => self.attach_page_faults(hook, 1),
            Point::Uprobe => bail!("{}: an uprobe needs a site", hook.program),
        }
    }

    /// The swap programs (see memtrace-ebpf's `swap`): every change of a process's swap
    /// entries, and each page reclaim writes to swap.
    pub fn attach_swap(&mut self) -> Result<()> {
        hooks::SWAP
            .iter()
            .try_for_each(|hook| self.attach_hook(hook))
    }

    /// Attaches a page-fault program on every CPU; `period` 1 records every fault, N one in N.
    fn attach_page_faults(&mut self, hook: &Hook, period: u64) -> Result<()> {
        let Point::PageFaults { major } = hook.point else {
            bail!("{} is not a page-fault program", hook.program);
        };
        let event = if major {
            SoftwareEvent::PageFaultsMaj
        } else {
            SoftwareEvent::PageFaultsMin
        };
        let name = hook.program;
        let cpus = online_cpus().map_err(cpu_list_error)?;
        let program: &mut PerfEvent = self.program(name)?.try_into()?;
        program
            .load()
            .with_context(|| format!("the kernel rejected the {name} program"))?;
        for &cpu in &cpus {
            program
                .attach(
                    PerfEventConfig::Software(event),
                    PerfEventScope::AllProcessesOneCpu { cpu },
                    SamplePolicy::Period(period),
                    false,
                )
                .with_context(|| {
                    format!("attaching {name} to the page-fault event on CPU {cpu}")
                })?;
        }
        Ok(())
    }

    /// Attaches a tracepoint program (`category:name`).
    fn attach_tracepoint(&mut self, program: &str, category: &str, name: &str) -> Result<()> {
        let tracepoint: &mut TracePoint = self.program(program)?.try_into()?;
        tracepoint
            .load()
            .with_context(|| format!("the kernel rejected the {program} program"))?;
        tracepoint
            .attach(category, name)
            .with_context(|| format!("attaching to tracepoint {category}:{name}"))?;
        Ok(())
    }

    fn attach_raw_tracepoint(&mut self, program: &str, name: &str) -> Result<()> {
        let tracepoint: &mut RawTracePoint = self.program(program)?.try_into()?;
        tracepoint
            .load()
            .with_context(|| format!("the kernel rejected the {program} program"))?;
        tracepoint
            .attach(name)
            .with_context(|| format!("attaching to raw tracepoint {name}"))?;
        Ok(())
    }

    /// Attaches a site's probes in order, stopping at the first that fails: an error when
    /// the site is required (saying why), false (said with -v) when not.
    fn attach_uprobes(&mut self, site: &UprobeSite, single: Option<u32>) -> Result<bool> {
        self.attach_site(site, single, &mut |_, _, _| Ok(()))
    }

    /// `attach_uprobes`, handing each probe's link to `keep` as it is attached (the link
    /// stays with its program otherwise).
    pub(super) fn attach_site(
        &mut self,
        site: &UprobeSite,
        single: Option<u32>,
        keep: &mut dyn FnMut(&mut Self, &Probe, UProbeLinkId) -> Result<()>,
    ) -> Result<bool> {
        let attached = (site.probes.iter()).try_for_each(|probe| {
            let link = self.attach_uprobe(probe, &site.symbol, &site.library, single)?;
            keep(self, probe, link)
        });
        match (attached, &site.required) {
            (Ok(()), _) => Ok(true),
            (Err(err), Some(why)) => Err(err.context(why.clone())),
            (Err(err), None) => {
                log::debug!("{} not hooked: {err:#}", site.symbol);
                Ok(false)
            }
        }
    }

    /// Runs memtrace-ebpf's `learn_cpu_offset` on each online CPU, so programs can read the
    /// per-CPU parts of kernel counters (see there).
    pub(super) fn learn_cpu_offsets(&mut self) -> Result<()> {
        let cpus = online_cpus().map_err(cpu_list_error)?;
        let program: &mut RawTracePoint =
            self.program(hooks::LEARN_CPU_OFFSET.program)?.try_into()?;
        program
            .load()
            .context("the kernel rejected the learn_cpu_offset program")?;
        for &cpu in &cpus {
            let mut options = RawTracePointRunOptions::new();
            options.cpu = Some(cpu);
            let result = program
                .test_run(options)
                .with_context(|| format!("learning CPU {cpu}'s per-CPU offset"))?;
            if result.return_value != 0 {
                bail!("could not learn CPU {cpu}'s per-CPU offset");
            }
        }
        let offsets: Array<_, u64> = Array::try_from(self.map("CPU_OFFSETS")?)?;
        let mut seen = std::collections::HashSet::new();
        for &cpu in &cpus {
            let offset = offsets.get(&cpu, 0)?;
            // Distinct and non-zero, or the reading went wrong: refuse rather than miscount.
            if offset == 0 || !seen.insert(offset) {
                bail!("CPU {cpu}'s per-CPU offset came out as {offset:#x}: this kernel's per-CPU layout is not supported");
            }
            log::debug!("CPU {cpu}: per-CPU offset {offset:#x}");
        }
        Ok(())
    }

    /// Attaches an uprobe (or uretprobe) to `symbol` (plus the probe's offset) in `library`,
    /// loading its program the first time. With `process`, the breakpoint is set in that
    /// process only; without, in every process that maps the library (the programs' target
    /// filter narrows what they record, but every call traps).
    fn attach_uprobe(
        &mut self,
        probe: &Probe,
        symbol: &str,
        library: &Path,
        process: Option<u32>,
    ) -> Result<UProbeLinkId> {
        let program = probe.hook.program;
        let (offset, cookie) = (probe.offset, probe.cookie);
        let uprobe: &mut UProbe = self.program(program)?.try_into()?;
        if uprobe.fd().is_err() {
            uprobe
                .load()
                .with_context(|| format!("the kernel rejected the {program} program"))?;
        }
        let link = uprobe
            .attach(
                UProbeAttachPoint {
                    location: UProbeAttachLocation::SymbolOffset(symbol, offset),
                    // Without one, aya attaches without a link (kernels before 5.15).
                    cookie: (cookie != 0).then_some(cookie),
                },
                library,
                process
                    .and_then(std::num::NonZeroU32::new)
                    .map_or(UProbeScope::AllProcesses, UProbeScope::OneProcess),
            )
            .with_context(|| format!("attaching to {symbol} in {}", library.display()))?;
        Ok(link)
    }

    /// Leaves the kernel's detaching of the programs to a child process, so memtrace exits as
    /// soon as its report is out. Each perf event's detach (uprobes, tracepoints) waits for
    /// RCU grace periods, one after the other under the kernel's trace-event lock (about 0.1 s
    /// for an uprobe, 0.07 s for a tracepoint here): 17 probes on glibc kept memtrace 1.8 s
    /// past its report, a fault trace's tracepoints 0.3 s. The child shares the object's
    /// descriptors and waits for memtrace to exit, so its own exit drops the last references
    /// and pays the waits; its standard streams go to /dev/null, so whoever reads memtrace's
    /// output sees it end with memtrace. Call it last, after the report is written.
    pub fn hand_off_detach(&self) {
        // The child must not inherit the uprobe lock held by a thread detaching.
        super::process_uprobes::finish_detaching();
        let parent = unsafe { libc::getpid() };
        let null = c"/dev/null";
        match unsafe { libc::fork() } {
            0 => unsafe {
                // In the child: only async-signal-safe calls.
                let fd = libc::open(null.as_ptr(), libc::O_RDWR);
                if fd >= 0 {
                    for stream in 0..3 {
                        libc::dup2(fd, stream);
                    }
                }
                // Reparented once memtrace's exit has closed its descriptors.
                while libc::getppid() == parent {
                    libc::usleep(10_000);
                }
                // Detach under the lock (`uprobe_lock`): close every descriptor but the
                // lock's now, so the lock is released only once all are closed, at exit.
                if let Some(lock) = uprobe_lock::open() {
                    libc::flock(lock, libc::LOCK_EX);
                    close_range(3, lock - 1);
                    close_range(lock + 1, libc::c_int::MAX);
                }
                libc::_exit(0)
            },
            -1 => log::debug!("fork for detaching: {}", std::io::Error::last_os_error()),
            _ => {}
        }
    }

    /// Loads every program of the object without attaching any: the kernel's verifier judges
    /// each (`memtrace check`). Programs already loaded count as accepted.
    pub fn load_every_program(&mut self) -> Vec<ProgramLoad> {
        use aya::programs::Program;
        let mut loads: Vec<ProgramLoad> = self
            .ebpf
            .programs_mut()
            .map(|(name, program)| {
                let (kind, result) = match program {
                    Program::TracePoint(p) => ("tracepoint", p.load()),
                    Program::RawTracePoint(p) => ("raw_tracepoint", p.load()),
                    Program::PerfEvent(p) => ("perf_event", p.load()),
                    Program::UProbe(p) => ("uprobe", p.load()),
                    other => {
                        let kind = "other";
                        return ProgramLoad {
                            name: name.to_string(),
                            kind,
                            error: Some(format!(
                                "memtrace has no loader for {:?}",
                                other.prog_type()
                            )),
                        };
                    }
                };
                let error = match result {
                    Ok(()) | Err(aya::programs::ProgramError::AlreadyLoaded) => None,
                    Err(err) => Some(verifier_summary(&err)),
                };
                ProgramLoad {
                    name: name.to_string(),
                    kind,
                    error,
                }
            })
            .collect();
        loads.sort_by(|a, b| a.name.cmp(&b.name));
        loads
    }
}

/// close_range(2): every descriptor from `first` to `last` (glibc 2.34's wrapper is too new
/// for some systems).
unsafe fn close_range(first: libc::c_int, last: libc::c_int) {
    if first <= last {
        unsafe { libc::syscall(libc::SYS_close_range, first as u32, last as u32, 0u32) };
    }
}

/// The kernel's verdict on one program (see [`Tracer::load_every_program`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProgramLoad {
    pub name: String,
    /// aya's program type: tracepoint, raw_tracepoint, perf_event, uprobe.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Why the kernel refused it: the error and the verifier log's last lines.
    pub error: Option<String>,
}

/// A load error in a few lines: the verifier's log can run to thousands, and its end says why.
fn verifier_summary(err: &aya::programs::ProgramError) -> String {
    match err {
        aya::programs::ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            let tail: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
            // The three summary lines, and the two before them that say why.
            let tail = tail[tail.len().saturating_sub(5)..].join(" | ");
            format!("{io_error}; verifier: {tail}")
        }
        other => other.to_string(),
    }
}
