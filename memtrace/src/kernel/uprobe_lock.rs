//! One memtrace at a time attaches or detaches uprobes. Probes on the same instruction share
//! the kernel's `struct uprobe`; when one memtrace's probes were being detached (left to a
//! child after its report, see `Tracer::hand_off_detach`) while another attached its own on
//! the same library, the new probes saw nothing in about one run of three here. An exclusive
//! lock on a file keeps the two apart: attaching waits for detaching, and the reverse.
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Root's runtime directory: only root traces.
const PATH: &std::ffi::CStr = c"/run/memtrace-uprobes.lock";

/// Held while uprobes are attached; released on drop (closing the file releases it).
pub struct UprobeLock {
    _file: OwnedFd,
}

impl UprobeLock {
    /// Waits for any memtrace detaching its uprobes (saying so when it waits), then holds
    /// the lock. None when the lock file cannot be opened: attach without it.
    pub fn exclusive() -> Option<Self> {
        let lock = Self::unlocked()?;
        if lock.lock(libc::LOCK_EX | libc::LOCK_NB) {
            return Some(lock);
        }
        log::warn!("waiting for another memtrace to detach its uprobes");
        lock.lock(libc::LOCK_EX).then_some(lock)
    }

    /// The lock taken without waiting (the agent attaches between other work, and tries
    /// again later rather than stall).
    pub fn try_exclusive() -> TryLock {
        let Some(lock) = Self::unlocked() else {
            return TryLock::NoLockFile;
        };
        if lock.lock(libc::LOCK_EX | libc::LOCK_NB) {
            TryLock::Held(lock)
        } else {
            TryLock::Busy
        }
    }

    /// The lock file, opened, not yet locked.
    fn unlocked() -> Option<Self> {
        let fd = open()?;
        Some(Self {
            _file: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// flock with `operation`: whether it succeeded.
    fn lock(&self, operation: libc::c_int) -> bool {
        unsafe { libc::flock(self._file.as_raw_fd(), operation) == 0 }
    }
}

/// What `UprobeLock::try_exclusive` got.
pub enum TryLock {
    Held(UprobeLock),
    /// Another memtrace (or a thread of this one) is attaching or detaching.
    Busy,
    /// No lock file: attach without it.
    NoLockFile,
}

/// The lock file, opened (created when missing); async-signal-safe, for a forked child.
pub fn open() -> Option<RawFd> {
    let flags = libc::O_RDWR | libc::O_CREAT | libc::O_CLOEXEC;
    let fd = unsafe { libc::open(PATH.as_ptr(), flags, 0o600) };
    (fd >= 0).then_some(fd)
}
