//! The one ring-buffer reader every subcommand uses: waits for the kernel's (batched) wake-up
//! or the caller's timer, then hands each record's bytes to the consumer, after the
//! executable-mapping records that came in meanwhile.
use anyhow::Result;
use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

use crate::{mmap_records::MmapWatch, session::Consumer};

pub struct Drain {
    ring: AsyncFd<RingBuf<MapData>>,
    mappings: Option<MmapWatch>,
    /// Mapping records the kernel could not deliver (its buffer was full).
    mappings_lost: u64,
}

impl Drain {
    pub fn new(ring: RingBuf<MapData>, mappings: Option<MmapWatch>) -> Result<Self> {
        // SAFETY: the ring buffer owns its fd and lives inside the AsyncFd, so the fd stays open
        // for as long as it is registered.
        let ring = unsafe { AsyncFd::register(ring) }.map_err(std::io::Error::from)?;
        Ok(Self {
            ring,
            mappings,
            mappings_lost: 0,
        })
    }

    pub fn mappings_lost(&self) -> u64 {
        self.mappings_lost
    }

    /// Waits until the kernel signals that records are waiting.
    pub async fn readable(&mut self) -> Result<()> {
        let mut guard = self.ring.readable_mut().await?;
        guard.clear_ready();
        Ok(())
    }

    /// Hands every record now in the ring to the consumer; returns how many there were.
    /// Mapping records go first: the mappings were made before the events that use them.
    pub fn drain_now(&mut self, consumer: &mut dyn Consumer) -> usize {
        if let Some(watch) = self.mappings.as_mut() {
            self.mappings_lost +=
                watch.read(&mut |record| consumer.processes().on_mmap_record(record));
        }
        let ring = self.ring.get_mut();
        let mut records = 0;
        while let Some(item) = ring.next() {
            consumer.on_record(&item);
            records += 1;
        }
        records
    }
}
