//! Address -> function names with blazesym, each unique address once. User addresses go through
//! the maps snapshot (`memory_maps`) to a file offset in a file we keep open, so they resolve after
//! the process exited; kernel addresses through kallsyms.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use blazesym::symbolize::source::{Elf, Kernel, Source};
use blazesym::symbolize::{self, Input, Symbolized};

use crate::report::{CodeFile, CodeMapping, Frame};
use crate::trace::{
    build_id::gnu_build_id,
    memory_maps::{FileId, Mapping, MapsCache},
};

/// What an address resolved to, minus the address itself.
#[derive(Clone, Debug, Default)]
struct Resolved {
    function: Option<String>,
    offset: u64,
    module: Option<String>,
}

impl Resolved {
    fn frame(&self, address: u64) -> Frame {
        Frame {
            address,
            function: self.function.clone(),
            offset: self.offset,
            module: self.module.clone(),
            mapping: None,
            source: None,
        }
    }
}

pub struct Symbolizer {
    inner: symbolize::Symbolizer,
    /// Keyed by file and offset, not by pid and address: a library shared by many processes
    /// (or loaded at different addresses) is resolved once per instruction.
    user: HashMap<(FileId, u64), Resolved>,
    kernel: HashMap<u64, Resolved>,
    /// Each executable file's path and build id, read once.
    files: HashMap<FileId, Arc<CodeFile>>,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Symbolizer {
    pub fn new() -> Self {
        // Frames carry no file/line, so skip the costlier DWARF line work; names still come
        // from DWARF when present, demangled.
        let inner = symbolize::Symbolizer::builder()
            .enable_code_info(false)
            .enable_inlined_fns(false)
            .enable_demangling(true)
            .build();
        Self {
            inner,
            user: HashMap::new(),
            kernel: HashMap::new(),
            files: HashMap::new(),
        }
    }

    /// Frames for user addresses of `pid` in its address space `generation` (see
    /// `MapsCache::exec`), in the order given, resolved through the snapshot in `maps` (no
    /// refresh: capture before the process exits). A return address (`returns[i]`; missing
    /// entries are not) is symbolized at the byte before it, inside the call, as perf and
    /// debuggers do: a call that ends its function returns into the next one.
    pub fn user_frames(
        &mut self,
        maps: &MapsCache,
        pid: u32,
        generation: u32,
        addrs: &[u64],
        returns: &[bool],
    ) -> Vec<Frame> {
        let lookups: Vec<u64> = (addrs.iter().enumerate())
            .map(|(i, &addr)| addr - u64::from(returns.get(i) == Some(&true) && addr > 0))
            .collect();
        // Gather what is not cached yet, one batch per file.
        let mut batches: HashMap<PathBuf, (FileId, String, Vec<u64>)> = HashMap::new();
        for &addr in &lookups {
            let Some(m) = maps.lookup_in(pid, generation, addr) else {
                continue;
            };
            let (Some(id), Some(path)) = (m.file_id(), m.symbol_path()) else {
                continue;
            };
            let offset = m.file_offset(addr);
            if self.user.contains_key(&(id, offset)) {
                continue;
            }
            let batch = batches
                .entry(path)
                .or_insert_with(|| (id, m.module(), Vec::new()));
            if !batch.2.contains(&offset) {
                batch.2.push(offset);
            }
        }
        for (path, (id, module, offsets)) in batches {
            let src = Source::Elf(Elf::new(&path));
            let syms = self.inner.symbolize(&src, Input::FileOffset(&offsets));
            let resolved = resolve_batch(syms, offsets.len(), &path.to_string_lossy());
            for (offset, mut r) in offsets.into_iter().zip(resolved) {
                r.module = Some(module.clone());
                self.user.insert((id, offset), r);
            }
        }

        (addrs.iter().zip(&lookups))
            .map(|(&addr, &lookup)| {
                let Some(m) = maps.lookup_in(pid, generation, lookup) else {
                    return Resolved::default().frame(addr);
                };
                let cached = m
                    .file_id()
                    .and_then(|id| self.user.get(&(id, m.file_offset(lookup))));
                let mut frame = match cached {
                    Some(r) if r.function.is_some() => {
                        let mut frame = r.frame(addr);
                        frame.offset += addr - lookup;
                        frame
                    }
                    // No symbol covers it, or vdso, anonymous (JIT) code, a file we could not
                    // keep open: where it is in its module.
                    _ => Resolved {
                        function: None,
                        offset: m.file_offset(addr),
                        module: Some(m.module()),
                    }
                    .frame(addr),
                };
                frame.mapping = self.code_mapping(m);
                frame
            })
            .collect()
    }

    /// The mapping as a profile names it, for an executable file kept open.
    fn code_mapping(&mut self, m: &Mapping) -> Option<CodeMapping> {
        let (id, file, path) = (m.file_id()?, m.open_file()?, m.path()?);
        let known = self.files.get(&id).filter(|known| known.path == path);
        let file = match known {
            Some(known) => Arc::clone(known),
            // Read once per file (a file replaced at the same inode is read again).
            None => {
                let code = Arc::new(CodeFile {
                    path: path.to_owned(),
                    build_id: gnu_build_id(file),
                });
                self.files.insert(id, Arc::clone(&code));
                code
            }
        };
        Some(CodeMapping {
            start: m.start,
            end: m.end,
            offset: m.offset,
            file,
        })
    }

    /// Frames for kernel addresses, in the order given (kallsyms, or vmlinux when found).
    pub fn kernel_frames(&mut self, addrs: &[u64]) -> Vec<Frame> {
        let mut missing: Vec<u64> = addrs
            .iter()
            .copied()
            .filter(|a| !self.kernel.contains_key(a))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if !missing.is_empty() {
            let src = Source::Kernel(Kernel::default());
            let syms = self.inner.symbolize(&src, Input::AbsAddr(&missing));
            let resolved = resolve_batch(syms, missing.len(), "the kernel");
            for (addr, mut r) in missing.into_iter().zip(resolved) {
                r.module = Some(kernel_module(r.module.as_deref()));
                self.kernel.insert(addr, r);
            }
        }
        addrs
            .iter()
            .map(|&addr| self.kernel[&addr].frame(addr))
            .collect()
    }
}

/// `[kernel]` for the kernel image (kallsyms reports no module, vmlinux its path), the module
/// name (`ext4`) for a loadable module's `.ko` file.
fn kernel_module(reported: Option<&str>) -> String {
    let name = reported.and_then(|m| std::path::Path::new(m).file_name()?.to_str());
    match name {
        Some(name) if !name.starts_with("vmlinux") => {
            name.split(".ko").next().unwrap_or(name).to_owned()
        }
        _ => "[kernel]".to_owned(),
    }
}

/// One `Resolved` per input; an error fails no more than the names of that batch.
fn resolve_batch(
    syms: blazesym::Result<Vec<Symbolized<'_>>>,
    len: usize,
    what: &str,
) -> Vec<Resolved> {
    match syms {
        Ok(syms) => syms
            .into_iter()
            .map(|s| match s {
                Symbolized::Sym(sym) => Resolved {
                    function: Some(sym.name.into_owned()),
                    offset: sym.offset as u64,
                    module: sym.module.map(|m| m.to_string_lossy().into_owned()),
                },
                Symbolized::Unknown(_) => Resolved::default(),
            })
            .collect(),
        Err(err) => {
            log::debug!("symbolizing {len} addresses in {what}: {err}");
            vec![Resolved::default(); len]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Command;
    use std::time::{Duration, Instant};

    #[inline(never)]
    fn known_function_for_symbolization() -> u64 {
        std::hint::black_box(42)
    }

    fn own_maps() -> (MapsCache, u32) {
        let pid = std::process::id();
        let mut maps = MapsCache::default();
        assert!(maps.capture(pid));
        (maps, pid)
    }

    #[test]
    fn own_function() {
        let (maps, pid) = own_maps();
        let addr = known_function_for_symbolization as *const () as u64;
        let mut symbolizer = Symbolizer::new();
        let frames = symbolizer.user_frames(&maps, pid, 0, &[addr, addr + 1, addr], &[]);
        let name = frames[0].function.as_deref().unwrap_or_default();
        assert!(
            name.contains("known_function_for_symbolization"),
            "{:?}",
            frames[0]
        );
        assert_eq!(frames[0].offset, 0);
        assert_eq!(frames[1].function, frames[0].function);
        assert_eq!(frames[1].offset, 1);
        assert_eq!(frames[2], frames[0]);
        let exe = std::env::current_exe().unwrap();
        let exe_name = exe.file_name().unwrap().to_str().unwrap();
        assert_eq!(frames[0].module.as_deref(), Some(exe_name));
        // Two unique offsets, each symbolized once.
        assert_eq!(symbolizer.user.len(), 2);
        // The file the frame came from, for profiles: where our text is mapped.
        let mapping = frames[0].mapping.as_ref().expect("a file mapping");
        assert_eq!(Path::new(&mapping.file.path), exe);
        assert!((mapping.start..mapping.end).contains(&addr));
        let file = std::fs::File::open(&exe).unwrap();
        assert_eq!(mapping.file.build_id, gnu_build_id(&file));
        assert!(mapping.file.build_id.is_some());
    }

    #[test]
    fn libc_function_and_unmapped() {
        let (maps, pid) = own_maps();
        let addr = libc::malloc as *const () as u64;
        let frames = Symbolizer::new().user_frames(&maps, pid, 0, &[addr, 0x10], &[]);
        let name = frames[0].function.as_deref().unwrap_or_default();
        assert!(name.contains("malloc"), "{:?}", frames[0]);
        assert!(
            frames[0]
                .module
                .as_deref()
                .unwrap_or_default()
                .contains("libc"),
            "{:?}",
            frames[0]
        );
        assert_eq!(frames[1].function, None);
        assert_eq!(frames[1].module, None);
    }

    #[test]
    fn kernel_symbol() {
        let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap();
        let (addr, name) = kallsyms
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let addr = u64::from_str_radix(fields.next()?, 16).ok()?;
                let kind = fields.next()?;
                let name = fields.next()?;
                let wanted = ["__x64_sys_openat", "do_sys_open"].contains(&name);
                (wanted && kind.eq_ignore_ascii_case("t") && addr != 0).then_some((addr, name))
            })
            .next()
            .expect("a known symbol in /proc/kallsyms (are we root?)");
        let frames = Symbolizer::new().kernel_frames(&[addr, addr + 4]);
        assert_eq!(frames[0].function.as_deref(), Some(name), "{:?}", frames[0]);
        assert_eq!(frames[1].function.as_deref(), Some(name));
        assert_eq!(frames[1].offset, 4);
        assert_eq!(frames[0].module.as_deref(), Some("[kernel]"));
    }

    #[test]
    fn after_exit() {
        // Where our own malloc sits in libc: the child maps the same file.
        let (mut maps, self_pid) = own_maps();
        let malloc = libc::malloc as *const () as u64;
        let ours = maps.lookup(self_pid, malloc).unwrap();
        let (libc_id, malloc_off) = (ours.file_id().unwrap(), ours.file_offset(malloc));

        let mut child = Command::new("/bin/sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        // The dynamic loader maps libc shortly after exec: poll for it.
        let deadline = Instant::now() + Duration::from_secs(5);
        let (child_malloc, sleep_code) = loop {
            assert!(maps.capture(pid));
            let mappings = maps.process(pid).unwrap().mappings();
            let libc_text = mappings.iter().find(|m| {
                m.is_exec()
                    && m.file_id() == Some(libc_id)
                    && (m.offset..m.offset + (m.end - m.start)).contains(&malloc_off)
            });
            let sleep_text = mappings
                .iter()
                .find(|m| m.is_exec() && m.module() == "sleep");
            if let (Some(l), Some(s)) = (libc_text, sleep_text) {
                break (l.start + malloc_off - l.offset, s.start + 0x40);
            }
            assert!(Instant::now() < deadline, "libc never mapped in the child");
            std::thread::sleep(Duration::from_millis(5));
        };

        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!maps.capture(pid));

        let frames = Symbolizer::new().user_frames(&maps, pid, 0, &[child_malloc, sleep_code], &[]);
        let name = frames[0].function.as_deref().unwrap_or_default();
        assert!(name.contains("malloc"), "{:?}", frames[0]);
        assert!(frames[0]
            .module
            .as_deref()
            .unwrap_or_default()
            .contains("libc"));
        // sleep is stripped: the name may be missing, the module must not be.
        assert_eq!(
            frames[1].module.as_deref(),
            Some("sleep"),
            "{:?}",
            frames[1]
        );
    }
}
