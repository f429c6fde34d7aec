//! The vDSO's image, read from memtrace's own memory: the kernel maps the same one into every
//! 64-bit process, and it has no file to read it from.
use procfs::process::{MMapPath, Process};

/// memtrace's own `[vdso]` bytes; None when the kernel maps none.
pub fn own_image() -> Option<Vec<u8>> {
    let maps = Process::myself().ok()?.maps().ok()?;
    let (start, end) = maps
        .iter()
        .find(|map| map.pathname == MMapPath::Vdso)?
        .address;
    // SAFETY: our own readable [vdso] mapping, mapped for the process's whole life.
    let bytes = unsafe { std::slice::from_raw_parts(start as *const u8, (end - start) as usize) };
    Some(bytes.to_vec())
}
