//! Uprobes in one process, attached and detached while tracing goes on: the agent's heap
//! profiling follows the processes its config names as they come and go.
use std::{sync::Mutex, thread::JoinHandle};

use anyhow::Result;
use aya::programs::{uprobe::UProbeLink, UProbe};

use super::{hooks::UprobeSite, tracer::Tracer, uprobe_lock};

/// One process's probes; they stay until `detach_in_background` (or drop, which detaches at
/// once).
pub struct ProcessUprobes {
    links: Vec<UProbeLink>,
    /// The sites that could not be hooked (not required ones; said with -v).
    pub missed: usize,
}

impl Tracer {
    /// Attaches the probes of `sites` to break in process `pid` only, under the uprobe lock
    /// (see `uprobe_lock`); None, at once, while the lock is busy (probes being detached can
    /// take seconds: try again later). A required site that fails fails the whole (its
    /// probes attached so far are detached in the background).
    pub fn attach_process_uprobes(
        &mut self,
        sites: &[UprobeSite],
        pid: u32,
    ) -> Result<Option<ProcessUprobes>> {
        let lock = match uprobe_lock::UprobeLock::try_exclusive() {
            uprobe_lock::TryLock::Busy => return Ok(None),
            uprobe_lock::TryLock::Held(lock) => Some(lock),
            uprobe_lock::TryLock::NoLockFile => None,
        };
        let mut attached = ProcessUprobes {
            links: Vec::new(),
            missed: 0,
        };
        for site in sites {
            // In order, the return probe first (see `malloc::probes::sites`).
            let hooked = self.attach_site(site, Some(pid), &mut |tracer, probe, link| {
                let program: &mut UProbe = tracer.program(probe.hook.program)?.try_into()?;
                attached.links.push(program.take_link(link)?);
                Ok(())
            });
            match hooked {
                Ok(true) => {}
                Ok(false) => attached.missed += 1,
                Err(err) => {
                    drop(lock);
                    attached.detach_in_background();
                    return Err(err);
                }
            }
        }
        Ok(Some(attached))
    }
}

impl ProcessUprobes {
    /// Probes attached.
    pub fn len(&self) -> usize {
        self.links.len()
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// Detaches the probes in a thread of its own: each detach waits for RCU grace periods
    /// (about 0.1 s an uprobe), which the tracing loop must not. Under the uprobe lock, so
    /// that no probe on the same instruction is attached meanwhile (see `uprobe_lock`).
    pub fn detach_in_background(self) {
        if self.links.is_empty() {
            return;
        }
        let links = self.links;
        let spawned = std::thread::Builder::new()
            .name("uprobe-detach".to_owned())
            .spawn(move || {
                let _lock = uprobe_lock::UprobeLock::exclusive();
                drop(links);
            });
        match spawned {
            Ok(thread) => {
                let mut detaching = DETACHING.lock().unwrap_or_else(|e| e.into_inner());
                detaching.retain(|thread| !thread.is_finished());
                detaching.push(thread);
            }
            Err(err) => log::warn!("cannot detach uprobes in the background ({err}): detached now"),
        }
    }
}

/// The threads detaching probes (see `detach_in_background`).
static DETACHING: Mutex<Vec<JoinHandle<()>>> = Mutex::new(Vec::new());

/// Waits for the probes being detached in the background. Before a fork: a child forked while
/// a thread holds the uprobe lock would inherit the held lock, and keep it held for good.
pub fn finish_detaching() {
    let threads = std::mem::take(&mut *DETACHING.lock().unwrap_or_else(|e| e.into_inner()));
    for thread in threads {
        let _ = thread.join();
    }
}
