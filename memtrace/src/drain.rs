//! The one ring-buffer reader every subcommand uses: waits for the kernel's (batched) wake-up
//! or the caller's timer, then hands each record's bytes to the caller.
use anyhow::Result;
use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

pub struct Drain {
    ring: AsyncFd<RingBuf<MapData>>,
}

impl Drain {
    pub fn new(ring: RingBuf<MapData>) -> Result<Self> {
        // SAFETY: the ring buffer owns its fd and lives inside the AsyncFd, so the fd stays open
        // for as long as it is registered.
        let ring = unsafe { AsyncFd::register(ring) }.map_err(std::io::Error::from)?;
        Ok(Self { ring })
    }

    /// Waits until the kernel signals that records are waiting.
    pub async fn readable(&mut self) -> Result<()> {
        let mut guard = self.ring.readable_mut().await?;
        guard.clear_ready();
        Ok(())
    }

    /// Hands every record now in the ring to `on_record`; returns how many there were.
    pub fn drain_now(&mut self, on_record: &mut dyn FnMut(&[u8])) -> usize {
        let ring = self.ring.get_mut();
        let mut records = 0;
        while let Some(item) = ring.next() {
            on_record(&item);
            records += 1;
        }
        records
    }
}
