//! SIGINT and SIGTERM, which stop a trace, with who sent them: a terminal's Ctrl-C reaches the
//! whole foreground process group (the command memtrace started too), a `kill` reaches
//! memtrace alone, and then the command must be told (see `pipeline`). tokio's signal streams
//! do not say who sent a signal, so the handler is memtrace's own: it notes the signal and
//! wakes the loop through a pipe.
use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::atomic::{AtomicBool, AtomicI32, Ordering},
};

use anyhow::{Context, Result};
use tokio::io::unix::AsyncFd;

/// The last stop signal, whether the kernel sent it (a terminal), and the pipe to wake on.
static SIGNAL: AtomicI32 = AtomicI32::new(0);
static FROM_KERNEL: AtomicBool = AtomicBool::new(false);
static WAKE: AtomicI32 = AtomicI32::new(-1);

/// A stop signal received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopSignal {
    pub signal: i32,
    /// Sent by a process (`kill`), not by the kernel for a terminal (Ctrl-C, which the
    /// terminal's whole foreground process group receives).
    pub sent_to_memtrace_alone: bool,
}

pub struct StopSignals {
    wake: AsyncFd<OwnedFd>,
}

extern "C" fn on_signal(signal: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Only async-signal-safe work: atomics and write(2).
    let code = if info.is_null() {
        0
    } else {
        unsafe { (*info).si_code }
    };
    SIGNAL.store(signal, Ordering::SeqCst);
    FROM_KERNEL.store(code == libc::SI_KERNEL, Ordering::SeqCst);
    let fd = WAKE.load(Ordering::SeqCst);
    if fd >= 0 {
        let byte = 1u8;
        unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
    }
}

impl StopSignals {
    /// Installs the handler for SIGINT and SIGTERM (for the rest of memtrace's life).
    pub fn install() -> Result<Self> {
        let mut fds = [0; 2];
        let flags = libc::O_CLOEXEC | libc::O_NONBLOCK;
        if unsafe { libc::pipe2(fds.as_mut_ptr(), flags) } != 0 {
            return Err(std::io::Error::last_os_error()).context("pipe2 for signals");
        }
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // The write end lives as long as the handler may run: memtrace's whole life.
        let old = WAKE.swap(write.as_raw_fd(), Ordering::SeqCst);
        std::mem::forget(write);
        if old >= 0 {
            unsafe { libc::close(old) };
        }
        for signal in [libc::SIGINT, libc::SIGTERM] {
            let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
            action.sa_sigaction = on_signal as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            unsafe { libc::sigemptyset(&mut action.sa_mask) };
            if unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) } != 0 {
                return Err(std::io::Error::last_os_error()).context("sigaction");
            }
        }
        Ok(Self {
            // SAFETY: the pipe's read end is owned here and lives inside the AsyncFd.
            wake: unsafe { AsyncFd::register(read) }.map_err(std::io::Error::from)?,
        })
    }

    /// Waits for the next stop signal.
    pub async fn recv(&mut self) -> Result<StopSignal> {
        loop {
            let mut guard = self.wake.readable().await?;
            let mut buffer = [0u8; 64];
            let fd = self.wake.get_ref().as_raw_fd();
            let read = unsafe { libc::read(fd, buffer.as_mut_ptr().cast(), buffer.len()) };
            if read > 0 {
                return Ok(StopSignal {
                    signal: SIGNAL.load(Ordering::SeqCst),
                    sent_to_memtrace_alone: !FROM_KERNEL.load(Ordering::SeqCst),
                });
            }
            guard.clear_ready();
        }
    }
}
