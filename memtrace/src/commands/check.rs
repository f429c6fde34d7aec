//! `memtrace check`: what this kernel offers memtrace, and which subcommands work on it. Every
//! eBPF program is loaded, so the verifier judges each, but none is attached.
use std::{io::Write, path::Path};

use anyhow::Result;
use serde::Serialize;

use crate::{
    bpf::{Filter, KernelConfig, ProgramLoad, Tracer},
    cli::{CheckArgs, TableOrJson},
    features,
    kernel_layout::{ExitLayout, OomTracing, PageTracing, SwapLayout},
    output, outputs, system,
};

/// The tracefs event each tracepoint program attaches to (raw tracepoints name the same
/// event); perf-event and uprobe programs have none.
const HOOKS: &[(&str, &str)] = &[
    ("process_exec", "sched/sched_process_exec"),
    ("task_newtask", "task/task_newtask"),
    ("process_exit", "sched/sched_process_exit"),
    ("exit_counts", "sched/sched_process_exit"),
    ("filemap_fault", "filemap/mm_filemap_fault"),
    ("page_alloc", "kmem/mm_page_alloc"),
    ("oom_kill", "oom/mark_victim"),
    ("swap_rss_stat", "kmem/rss_stat"),
    ("swap_write_folio", "vmscan/mm_vmscan_write_folio"),
    ("learn_cpu_offset", "raw_syscalls/sys_enter"),
    ("mmap_enter", "syscalls/sys_enter_mmap"),
    ("mmap_exit", "syscalls/sys_exit_mmap"),
    ("munmap_enter", "syscalls/sys_enter_munmap"),
];

/// Programs every tracing subcommand attaches (the shared pipeline's process tracking).
const PIPELINE: &[&str] = &["process_exec", "task_newtask"];

/// Kernel structures a subcommand reads, found through BTF or tracefs.
#[derive(Clone, Copy)]
enum Layout {
    Swap,
    Pages,
    Oom,
    Exits,
}

impl Layout {
    const ALL: [Layout; 4] = [Layout::Swap, Layout::Pages, Layout::Oom, Layout::Exits];
}

/// What a subcommand uses besides [`PIPELINE`]: without a `needs` part it cannot run; without
/// an `improves` part it runs and says what it leaves out.
struct Uses {
    command: &'static str,
    needs: (&'static [&'static str], &'static [Layout]),
    improves: (&'static [&'static str], &'static [Layout]),
}

const SWAP_PROGRAMS: &[&str] = &["swap_rss_stat", "swap_write_folio", "learn_cpu_offset"];

const COMMANDS: &[Uses] = &[
    Uses {
        command: "faults",
        needs: (&["minor_fault", "major_fault", "process_exit"], &[]),
        // Names the file of each file fault (else from /proc/PID/maps).
        improves: (&["filemap_fault"], &[]),
    },
    Uses {
        command: "swap",
        needs: (&["major_fault"], &[]),
        // Per-process swap counts (else system figures and major faults only).
        improves: (SWAP_PROGRAMS, &[Layout::Swap]),
    },
    Uses {
        command: "malloc",
        needs: (
            &[
                "malloc_enter",
                "calloc_enter",
                "realloc_enter",
                "reallocarray_enter",
                "posix_memalign_enter",
                "aligned_alloc_enter",
                "memalign_enter",
                "valloc_enter",
                "pvalloc_enter",
                "free_enter",
                "alloc_return",
                "mmap_enter",
                "mmap_exit",
                "munmap_enter",
            ],
            &[],
        ),
        improves: (&[], &[]),
    },
    Uses {
        command: "pages",
        needs: (&["page_alloc"], &[Layout::Pages]),
        improves: (&[], &[]),
    },
    Uses {
        command: "oom",
        needs: (&["oom_kill"], &[Layout::Oom]),
        improves: (&[], &[]),
    },
    Uses {
        command: "diagnose",
        needs: (
            &["minor_fault", "major_fault", "page_alloc"],
            &[Layout::Pages],
        ),
        improves: (SWAP_PROGRAMS, &[Layout::Swap]),
    },
    Uses {
        command: "agent",
        needs: (
            &["minor_fault", "major_fault", "exit_counts", "oom_kill"],
            &[Layout::Exits, Layout::Oom],
        ),
        // page_allocations = true needs page_alloc; swap = "auto" goes without swap counts.
        improves: (
            &[
                "page_alloc",
                "swap_rss_stat",
                "swap_write_folio",
                "learn_cpu_offset",
            ],
            &[Layout::Pages, Layout::Swap],
        ),
    },
];

#[derive(Serialize)]
struct Feature {
    name: String,
    ok: bool,
}

#[derive(Serialize)]
struct Program {
    #[serde(flatten)]
    load: ProgramLoad,
    /// `category/name` under tracefs's events, when it attaches to a tracepoint.
    tracepoint: Option<&'static str>,
    tracepoint_present: Option<bool>,
}

impl Program {
    fn problem(&self) -> Option<String> {
        if let Some(error) = &self.load.error {
            return Some(format!("program {} refused: {error}", self.load.name));
        }
        match (self.tracepoint, self.tracepoint_present) {
            (Some(tp), Some(false)) => {
                Some(format!("tracepoint {} missing", tp.replacen('/', ":", 1)))
            }
            _ => None,
        }
    }
}

#[derive(Serialize)]
struct CommandSupport {
    name: &'static str,
    /// It runs here (perhaps degraded).
    ok: bool,
    /// What keeps it from running here (empty when ok).
    problems: Vec<String>,
    /// What it runs without here, and says so when it does.
    degraded: Vec<String>,
}

#[derive(Serialize)]
struct CheckReport {
    command: &'static str,
    /// The kernel's release (`uname -r`).
    kernel: String,
    /// Every program passed the verifier.
    ok: bool,
    features: Vec<Feature>,
    programs: Vec<Program>,
    commands: Vec<CommandSupport>,
}

pub fn run(args: &CheckArgs) -> Result<()> {
    system::check_privileges()?;
    system::ensure_tracefs()?;
    system::raise_memlock_limit();
    let report = check()?;
    let mut out = outputs::report_writer(args.output.as_deref())?;
    match args.format {
        TableOrJson::Table => write_table(&report, &mut out)?,
        TableOrJson::Json => output::json::write_value(&report, &mut out)?,
    }
    out.flush()?;
    if !report.ok {
        anyhow::bail!("this kernel refused some of memtrace's eBPF programs (see the report)");
    }
    Ok(())
}

fn check() -> Result<CheckReport> {
    let mut features: Vec<Feature> = features::support(true)
        .into_iter()
        .map(|(name, ok)| Feature {
            name: name.to_string(),
            ok,
        })
        .collect();
    features.push(Feature {
        name: "kernel BTF (/sys/kernel/btf/vmlinux)".to_string(),
        ok: Path::new("/sys/kernel/btf/vmlinux").exists(),
    });
    let mut tracer = Tracer::load(&load_only_config())?;
    let programs: Vec<Program> = tracer
        .load_every_program()
        .into_iter()
        .map(|load| {
            let tracepoint = HOOKS
                .iter()
                .find(|(name, _)| *name == load.name)
                .map(|(_, tp)| *tp);
            Program {
                tracepoint_present: tracepoint.map(system::tracepoint_exists),
                tracepoint,
                load,
            }
        })
        .collect();
    // Each layout looked up once (a parse of the kernel's BTF), whatever uses it.
    let layouts = Layout::ALL.map(|layout| discover(layout).err().map(|err| format!("{err:#}")));
    let commands = COMMANDS
        .iter()
        .map(|uses| {
            let needed = problems(uses.needs, true, &programs, &layouts);
            CommandSupport {
                name: uses.command,
                ok: needed.is_empty(),
                problems: needed,
                degraded: problems(uses.improves, false, &programs, &layouts),
            }
        })
        .collect();
    Ok(CheckReport {
        command: "check",
        kernel: kernel_release(),
        ok: programs.iter().all(|p| p.load.error.is_none()),
        features,
        programs,
        commands,
    })
}

/// Enough to load every program: no filter, no stacks kept, every table at one entry (the
/// verifier does not look at sizes), layouts zeroed (programs read through probes).
fn load_only_config() -> KernelConfig {
    KernelConfig {
        filter: Filter::All,
        follow_children: false,
        file_tags: false,
        user_stacks: false,
        kernel_stacks: false,
        page_stacks: false,
        ring_bytes: 4096,
        stack_entries: 1,
        page_count_entries: 1,
        swap: None,
        malloc: None,
        pages: None,
        oom: None,
        stack_sample_period: 1,
        exits: None,
    }
}

/// What is missing of `uses` and `layouts` (with the pipeline's programs when `pipeline`);
/// `missing` holds why each layout was not found ([`Layout::ALL`]'s order).
fn problems(
    (uses, layouts): (&[&str], &[Layout]),
    pipeline: bool,
    programs: &[Program],
    missing: &[Option<String>; 4],
) -> Vec<String> {
    let used = |program: &&Program| {
        let name = program.load.name.as_str();
        (pipeline && PIPELINE.contains(&name)) || uses.contains(&name)
    };
    let mut problems: Vec<String> = programs
        .iter()
        .filter(used)
        .filter_map(Program::problem)
        .collect();
    problems.extend(
        layouts
            .iter()
            .filter_map(|layout| missing[*layout as usize].clone()),
    );
    problems
}

fn discover(layout: Layout) -> Result<()> {
    match layout {
        Layout::Swap => SwapLayout::discover().map(drop),
        Layout::Pages => PageTracing::discover().map(drop),
        Layout::Oom => OomTracing::discover().map(drop),
        Layout::Exits => ExitLayout::discover().map(drop),
    }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

fn write_table(report: &CheckReport, out: &mut dyn Write) -> Result<()> {
    let mark = |ok: bool| if ok { "ok" } else { "MISSING" };
    writeln!(out, "memtrace check: Linux {}", report.kernel)?;
    writeln!(out, "kernel features")?;
    for feature in &report.features {
        writeln!(out, "  {:<8} {}", mark(feature.ok), feature.name)?;
    }
    writeln!(
        out,
        "eBPF programs (loaded so the verifier judges each; none attached)"
    )?;
    for program in &report.programs {
        let verdict = match program.problem() {
            None => "ok".to_string(),
            Some(problem) => problem,
        };
        let hook = program
            .tracepoint
            .map(|tp| tp.replacen('/', ":", 1))
            .unwrap_or_default();
        writeln!(
            out,
            "  {:<20} {:<15} {:<32} {verdict}",
            program.load.name, program.load.kind, hook
        )?;
    }
    writeln!(out, "subcommands")?;
    for command in &report.commands {
        let verdict = if !command.ok {
            format!("not here: {}", command.problems.join("; "))
        } else if command.degraded.is_empty() {
            "ok".to_string()
        } else {
            format!("ok, without: {}", command.degraded.join("; "))
        };
        writeln!(out, "  {:<9} {verdict}", command.name)?;
    }
    writeln!(out, "  {:<9} ok (reads /proc only)", "stat")?;
    Ok(())
}
