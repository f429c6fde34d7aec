//! tracefs, where the kernel lists its tracepoints (aya reads their ids from it): mounted
//! when missing, as bpftrace does.
use std::{ffi::CString, path::Path};

use anyhow::{Context, Result};

const TRACEFS: &str = "/sys/kernel/tracing";

/// Whether this kernel has the tracepoint `category/name` (e.g. `filemap/mm_filemap_fault`);
/// tracefs must be mounted ([`ensure_tracefs`]).
pub fn tracepoint_exists(event: &str) -> bool {
    Path::new(TRACEFS).join("events").join(event).is_dir()
}

/// Mounts tracefs when it is missing (as bpftrace does), or says exactly what to run.
pub fn ensure_tracefs() -> Result<()> {
    if Path::new(TRACEFS).join("events").is_dir() {
        return Ok(());
    }
    let target = CString::new(TRACEFS)?;
    let fstype = CString::new("tracefs")?;
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        return Err(err).with_context(|| {
            format!("tracefs is not mounted and mounting it failed; run: mount -t tracefs tracefs {TRACEFS}")
        });
    }
    log::info!("mounted tracefs at {TRACEFS}");
    Ok(())
}
