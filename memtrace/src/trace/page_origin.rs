//! Whom a kernel page allocation is credited to: interrupts and kernel threads allocate for
//! the kernel, never for the task that happened to be running (`memtrace pages`, the agent's
//! page counters, diagnose's allocation churn).
use memtrace_common::{PageContext, PageDetail, PageKey};

use crate::trace::processes::Processes;

/// Who a page allocation is credited to: a process, a kernel thread, or interrupts (pid 0).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Origin {
    pub pid: u32,
    pub context: PageContext,
}

impl Origin {
    pub fn of(tgid: u32, context: PageContext) -> Self {
        let pid = if context == PageContext::Interrupt {
            0
        } else {
            tgid
        };
        Self { pid, context }
    }

    /// Whom an entry of the kernel's count table is credited to.
    pub fn of_key(key: &PageKey) -> Self {
        Self::of(key.tgid, PageDetail::unpack(key.detail).context)
    }

    /// Its name: "[interrupt]"; else the process's as memtrace knows it; else `recorded`
    /// (the kernel's, at its first counted allocation: the process may be gone).
    pub fn name(self, known: &Processes, recorded: impl FnOnce() -> String) -> String {
        if self.context == PageContext::Interrupt {
            return "[interrupt]".to_owned();
        }
        let name = known.name(self.pid);
        if name.is_empty() {
            recorded()
        } else {
            name
        }
    }
}

/// The context as reports name it.
pub fn context_name(context: PageContext) -> &'static str {
    match context {
        PageContext::Process => "process",
        PageContext::KernelThread => "kernel thread",
        PageContext::Interrupt => "interrupt",
    }
}
