//! The one ring-buffer reader every subcommand uses: waits for the kernel's (batched) wake-up
//! or the caller's timer, decodes each record once, applies what it says of processes (forks,
//! execs, names, executable and shared mappings that came in meanwhile), and hands it to the
//! consumer.
use std::os::fd::OwnedFd;

use anyhow::Result;
use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

use memtrace_common::EventKind;

use crate::{
    trace::{
        consumer::Consumer,
        mapping_records::{drain_epoll, Lost, MappingKind, MappingRecords, MmapRecord},
        processes::Processes,
        records::Record,
    },
    unwind::Unwinder,
};

pub struct Drain {
    ring: AsyncFd<RingBuf<MapData>>,
    mappings: Option<MappingRecords>,
    /// Readable when a command's mapping records wait (see `MappingRecords::wake_fd`).
    mappings_waiting: Option<AsyncFd<OwnedFd>>,
    /// Gives the stack walk each process's unwind tables when it asks (None: `--unwind fp`,
    /// or no user stacks).
    pub unwinder: Option<Unwinder>,
    /// Mapping records the kernel could not deliver (its buffer was full).
    mappings_lost: Lost,
    /// What is known of the traced processes, kept current by the records as they pass.
    pub processes: Processes,
}

impl Drain {
    pub fn new(
        ring: RingBuf<MapData>,
        mappings: Option<MappingRecords>,
        unwinder: Option<Unwinder>,
    ) -> Result<Self> {
        // SAFETY: the ring buffer owns its fd and lives inside the AsyncFd, so the fd stays open
        // for as long as it is registered.
        let ring = unsafe { AsyncFd::register(ring) }.map_err(std::io::Error::from)?;
        // Only the unwind tables need a mapping at once; without them, records are read with
        // the events.
        let wake_fd = match (&mappings, &unwinder) {
            (Some(mappings), Some(_)) => mappings.wake_fd()?,
            _ => None,
        };
        // SAFETY: the epoll fd is owned by the AsyncFd, so it stays open while registered.
        let mappings_waiting = wake_fd
            .map(|fd| unsafe { AsyncFd::register(fd) })
            .transpose()
            .map_err(std::io::Error::from)?;
        Ok(Self {
            ring,
            mappings,
            mappings_waiting,
            unwinder,
            mappings_lost: Lost::default(),
            processes: Processes::default(),
        })
    }

    pub fn mappings_lost(&self) -> Lost {
        self.mappings_lost
    }

    /// Waits until the kernel signals that records are waiting: events, or a command's new
    /// mappings.
    pub async fn readable(&mut self) -> Result<()> {
        let Some(mappings) = self.mappings_waiting.as_ref() else {
            let mut guard = self.ring.readable_mut().await?;
            guard.clear_ready();
            return Ok(());
        };
        tokio::select! {
            guard = self.ring.readable_mut() => guard?.clear_ready(),
            guard = mappings.readable() => {
                let mut guard = guard?;
                drain_epoll(guard.get_inner());
                guard.clear_ready();
            }
        }
        Ok(())
    }

    /// Hands every record now in the ring to the consumer; returns how many there were.
    /// Mapping records go first: the mappings were made before the events that use them.
    pub fn drain_now(&mut self, consumer: &mut dyn Consumer) -> usize {
        let processes = &mut self.processes;
        let mut unwinder = self.unwinder.as_mut();
        if let Some(mappings) = self.mappings.as_mut() {
            self.mappings_lost += mappings.read(&mut |record| {
                if let (Some(unwinder), MmapRecord::Mapping(mapping)) = (&mut unwinder, &record) {
                    if mapping.kind == MappingKind::Code {
                        unwinder.on_new_mapping(mapping.pid);
                    }
                }
                processes.on_mapping_record(record)
            });
        }
        let ring = self.ring.get_mut();
        let mut records = 0;
        while let Some(item) = ring.next() {
            records += 1;
            let Some(record) = Record::decode(&item) else {
                processes.count_undecodable();
                continue;
            };
            if let (Record::Event(event), Some(unwinder)) = (&record, self.unwinder.as_mut()) {
                match event.kind {
                    EventKind::UnwindRequest => {
                        unwinder.on_request(event.raw.tgid);
                        continue;
                    }
                    // Its program's first mappings, before the walks need them.
                    EventKind::Exec => unwinder.on_exec(event.raw.tgid),
                    _ => {}
                }
            }
            if processes.admit(&record) {
                consumer.on_record(&record, processes);
            }
            if let (Record::Event(event), Some(unwinder)) = (&record, self.unwinder.as_mut()) {
                // A Python stack's code objects are read while the process lives.
                let (pid, stack) = (event.raw.tgid, event.raw.user_stack);
                if stack != 0 {
                    unwinder.python.on_stack(pid, stack, &mut processes.maps);
                }
            }
        }
        if let Some(unwinder) = self.unwinder.as_mut() {
            unwinder.tick();
        }
        records
    }
}
