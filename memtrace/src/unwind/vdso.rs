//! The vDSO's image, read from memtrace's own memory: the kernel maps the same one into every
//! 64-bit process, and it has no file to read it from.

/// memtrace's own `[vdso]` bytes; None when the kernel maps none.
pub fn own_image() -> Option<Vec<u8>> {
    // SAFETY: getauxval reads the auxiliary vector; 0 means no such entry.
    let start = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) };
    if start == 0 {
        return None;
    }
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let line = maps.lines().find(|line| line.ends_with("[vdso]"))?;
    let (range, _) = line.split_once(' ')?;
    let (from, to) = range.split_once('-')?;
    let from = u64::from_str_radix(from, 16).ok()?;
    let to = u64::from_str_radix(to, 16).ok()?;
    if from != start || to <= from {
        return None;
    }
    // SAFETY: the range is our own readable [vdso] mapping, mapped for the process's life.
    let bytes = unsafe { std::slice::from_raw_parts(from as *const u8, (to - from) as usize) };
    Some(bytes.to_vec())
}
