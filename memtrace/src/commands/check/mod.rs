//! `memtrace check`: what this kernel offers memtrace, and which subcommands work on it. Every
//! eBPF program is loaded, so the verifier judges each, but none is attached. Which hooks a
//! subcommand uses comes from its own declaration (`HOOKS`, listed in `commands::SUBCOMMANDS`).
pub mod args;
mod table;

use std::{io::Write, path::Path};

use anyhow::Result;
use serde::Serialize;

use self::args::CheckArgs;
use crate::{
    commands::{options::TableOrJson, SUBCOMMANDS},
    kernel::{
        access,
        config::{Filter, KernelConfig},
        features,
        hooks::{self, CommandHooks, Hook, Layout},
        layout::{ExitLayout, OomTracing, PageTracing, SwapLayout},
        programs::ProgramLoad,
        tracefs,
        tracer::Tracer,
    },
    output::{files, json},
    trace::pipeline,
};

/// It loads programs, attaches none.
pub const HOOKS: CommandHooks = CommandHooks::NONE;

#[derive(Serialize)]
pub struct Feature {
    pub name: String,
    pub ok: bool,
}

#[derive(Serialize)]
pub struct Program {
    #[serde(flatten)]
    pub load: ProgramLoad,
    /// `category/name` under tracefs's events, when it attaches to a tracepoint.
    pub tracepoint: Option<String>,
    pub tracepoint_present: Option<bool>,
}

impl Program {
    pub fn problem(&self) -> Option<String> {
        if let Some(error) = &self.load.error {
            return Some(format!("program {} refused: {error}", self.load.name));
        }
        match (&self.tracepoint, self.tracepoint_present) {
            (Some(tp), Some(false)) => {
                Some(format!("tracepoint {} missing", tp.replacen('/', ":", 1)))
            }
            _ => None,
        }
    }
}

#[derive(Serialize)]
pub struct CommandSupport {
    pub name: &'static str,
    /// It runs here (perhaps degraded).
    pub ok: bool,
    /// What keeps it from running here (empty when ok).
    pub problems: Vec<String>,
    /// What it runs without here, and says so when it does.
    pub degraded: Vec<String>,
}

#[derive(Serialize)]
pub struct CheckReport {
    pub command: &'static str,
    /// The kernel's release (`uname -r`).
    pub kernel: String,
    /// Every program passed the verifier.
    pub ok: bool,
    pub features: Vec<Feature>,
    pub programs: Vec<Program>,
    pub commands: Vec<CommandSupport>,
}

pub async fn run(args: CheckArgs) -> Result<()> {
    access::check_privileges()?;
    tracefs::ensure_tracefs()?;
    access::raise_memlock_limit();
    let report = check()?;
    let mut out = files::report_writer(args.output.as_deref())?;
    match args.format {
        TableOrJson::Table => table::write(&report, &mut out)?,
        TableOrJson::Json => json::write_value(&report, &mut out)?,
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
            let tracepoint = hooks::all()
                .find(|hook| hook.program == load.name)
                .and_then(Hook::tracefs_event);
            Program {
                tracepoint_present: tracepoint.as_deref().map(tracefs::tracepoint_exists),
                tracepoint,
                load,
            }
        })
        .collect();
    // Each layout looked up once (a parse of the kernel's BTF), whatever uses it.
    let layouts = Layout::ALL.map(|layout| discover(layout).err().map(|err| format!("{err:#}")));
    let commands = SUBCOMMANDS
        .iter()
        .filter(|(_, hooks)| !hooks.needs.is_empty())
        .map(|(name, hooks)| {
            let needed = problems(hooks.needs, true, &programs, &layouts);
            CommandSupport {
                name,
                ok: needed.is_empty(),
                problems: needed,
                degraded: problems(hooks.improves, false, &programs, &layouts),
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
        // User stacks on, so the stack walks are verified too.
        user_stacks: true,
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
        unwind: Some(crate::unwind::store::Capacity::of_mib(1)),
    }
}

/// What is missing of `uses` (with the pipeline's own hooks when `pipeline`): programs
/// refused, tracepoints missing, and the kernel structures their programs read that were not
/// found; `missing` holds why each layout was not found ([`Layout::ALL`]'s order).
fn problems(
    uses: &[&Hook],
    pipeline: bool,
    programs: &[Program],
    missing: &[Option<String>; 4],
) -> Vec<String> {
    let pipeline_hooks: &[&Hook] = if pipeline { pipeline::HOOKS.needs } else { &[] };
    let used = |program: &&Program| {
        let name = program.load.name.as_str();
        (pipeline_hooks.iter().chain(uses)).any(|hook| hook.program == name)
    };
    let mut problems: Vec<String> = programs
        .iter()
        .filter(used)
        .filter_map(Program::problem)
        .collect();
    let mut layouts: Vec<Layout> = Vec::new();
    for layout in uses.iter().filter_map(|hook| hook.reads) {
        if !layouts.contains(&layout) {
            layouts.push(layout);
        }
    }
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
