//! Knowing when a traced process has exited, without racing pid reuse: a pidfd becomes readable
//! when its process exits, and stays tied to that process even if the pid is reused.
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A traced process, to know when it has exited.
pub struct TargetExit {
    pub pid: u32,
    pidfd: Option<OwnedFd>,
}

impl TargetExit {
    /// None when no such process exists.
    pub fn new(pid: u32) -> Option<Self> {
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd >= 0 {
            return Some(Self {
                pid,
                pidfd: Some(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
            });
        }
        // Kernels without pidfd_open (before 5.3): fall back to /proc.
        crate::host::process_exists(pid).then_some(Self { pid, pidfd: None })
    }

    pub fn has_exited(&self) -> bool {
        match &self.pidfd {
            Some(fd) => {
                let mut poll = libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                unsafe { libc::poll(&mut poll, 1, 0) > 0 && poll.revents & libc::POLLIN != 0 }
            }
            None => !crate::host::process_exists(self.pid),
        }
    }
}
