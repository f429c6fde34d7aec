//! Starting `-- COMMAND` so that it is traced from its very first instruction: the child is
//! forked but held at a gate until its pid is in the kernel filter and the programs are attached,
//! then released to exec.
use std::{
    ffi::CString,
    io::{Read, Write},
    os::{
        fd::{FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};

use crate::error::CommandNotFound;

/// A forked child waiting at the gate.
pub struct GatedChild {
    pub pid: u32,
    gate: std::fs::File,
    exec_errors: std::fs::File,
    argv: Vec<String>,
}

/// A released child, running the command.
pub struct RunningChild {
    pub pid: u32,
    pub argv: Vec<String>,
}

/// How the child ended, from waitpid.
#[derive(Debug, Clone, Copy)]
pub enum ChildExit {
    Code(i32),
    Signal(i32),
}

/// Resolves the program like a shell does (PATH unless it contains a slash).
pub fn resolve_program(name: &str) -> Result<PathBuf> {
    let is_executable = |path: &Path| {
        let c = CString::new(path.as_os_str().as_bytes()).ok();
        path.is_file() && c.is_some_and(|c| unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0)
    };
    if name.contains('/') {
        let path = PathBuf::from(name);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(CommandNotFound(name.into()).into())
        };
    }
    let path_var =
        std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path_var)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| CommandNotFound(name.into()).into())
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe2");
    }
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Forks the command; it waits at the gate until `release`.
pub fn spawn_gated(argv: &[String]) -> Result<GatedChild> {
    let Some(name) = argv.first() else {
        bail!("no command given")
    };
    let program = resolve_program(name)?;
    let program = CString::new(program.as_os_str().as_bytes())?;
    let args: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()?;
    let mut arg_ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    arg_ptrs.push(std::ptr::null());
    let (gate_read, gate_write) = pipe()?;
    let (error_read, error_write) = pipe()?;
    use std::os::fd::AsRawFd;
    let (gate_fd, error_fd) = (gate_read.as_raw_fd(), error_write.as_raw_fd());
    let (gate_writer_fd, error_reader_fd) = (gate_write.as_raw_fd(), error_read.as_raw_fd());

    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()).context("fork"),
        0 => unsafe {
            // In the child: only async-signal-safe calls until exec. Without the parent's ends
            // of the pipes, the gate reads EOF as soon as memtrace is gone (an error, a kill).
            libc::close(gate_writer_fd);
            libc::close(error_reader_fd);
            let mut byte = 0u8;
            if libc::read(gate_fd, (&mut byte as *mut u8).cast(), 1) != 1 {
                libc::_exit(126); // memtrace went away before releasing us
            }
            libc::execv(program.as_ptr(), arg_ptrs.as_ptr());
            let errno = *libc::__errno_location();
            libc::write(error_fd, (&errno as *const i32).cast(), 4);
            libc::_exit(127)
        },
        pid => Ok(GatedChild {
            pid: pid as u32,
            gate: gate_write.into(),
            exec_errors: error_read.into(),
            argv: argv.to_vec(),
        }),
    }
}

impl GatedChild {
    /// Lets the child exec; fails if exec failed.
    /// The command line it will run.
    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    pub fn release(self) -> Result<RunningChild> {
        let Self {
            pid,
            mut gate,
            mut exec_errors,
            argv,
        } = self;
        gate.write_all(&[1]).context("releasing the command")?;
        drop(gate);
        // The error pipe is close-on-exec: EOF means exec succeeded.
        let mut errno = [0u8; 4];
        if exec_errors.read(&mut errno).unwrap_or(0) == 4 {
            let _ = wait(pid, 0);
            let error = std::io::Error::from_raw_os_error(i32::from_ne_bytes(errno));
            return Err(CommandNotFound(format!("{} ({error})", argv[0])).into());
        }
        Ok(RunningChild { pid, argv })
    }
}

impl RunningChild {
    /// The child's exit, if it has exited (reaps it).
    pub fn try_wait(&self) -> Option<ChildExit> {
        wait(self.pid, libc::WNOHANG)
    }
}

fn wait(pid: u32, flags: i32) -> Option<ChildExit> {
    let mut status = 0;
    let rc = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, flags) };
    if rc != pid as libc::pid_t {
        return None;
    }
    if libc::WIFEXITED(status) {
        Some(ChildExit::Code(libc::WEXITSTATUS(status)))
    } else if libc::WIFSIGNALED(status) {
        Some(ChildExit::Signal(libc::WTERMSIG(status)))
    } else {
        None
    }
}
