//! Each traced process's executable mappings, with their binaries' tables, written into the
//! kernel's per-process map when the programs ask: a process they had not seen, or code
//! outside the mappings they were given (a library loaded since). Tables are built once per
//! binary (by file identity) and shared by every process that maps it.
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use aya::maps::{HashMap as KernelHashMap, MapData};
use memtrace_common::unwind::{ProcessMappings, UnwindMapping, MAX_MAPPINGS, NO_TABLE};
use object::{Object, ObjectSegment};
use procfs::process::{MMPermissions, MMapPath, Process};
use serde::Serialize;

use super::{
    rows,
    store::{Capacity, TableFigures, TableStore},
    vdso,
};
use crate::{
    host::process_exists,
    kernel::tracer::Tracer,
    python::{interpreter::Interpreter, processes::PythonProcesses},
    trace::memory_maps::FileId,
};

/// A process's maps are read again at most this often on the walks' requests: a walk that
/// keeps meeting code outside every mapping (a corrupt frame) must not turn into a maps read
/// per event. Short: a program starting up maps its libraries within milliseconds, and its
/// stacks wait for them.
const REREAD_INTERVAL: Duration = Duration::from_millis(2);
/// How long a started command's exec waits for its loader to map its libraries.
const LOADER_WAIT: Duration = Duration::from_millis(50);
/// How often the processes that exited are forgotten (a long-running agent sees many).
const FORGET_INTERVAL: Duration = Duration::from_secs(10);

/// What the report says of the tables and the processes they served.
#[derive(Clone, Debug, Serialize)]
pub struct UnwindFigures {
    #[serde(flatten)]
    pub tables: TableFigures,
    /// Processes whose mappings were given to the kernel, and how many times.
    pub processes: u64,
    pub process_loads: u64,
    /// Processes with more executable mappings than the kernel keeps (the rest are walked by
    /// frame pointers).
    pub processes_over_mapping_limit: u64,
}

/// A binary as the walk needs it: its table, and where its segments load (to turn a mapping's
/// address into the binary's own).
struct Binary {
    table: u32,
    /// (file offset, address, file size) of each executable segment.
    segments: Vec<(u64, u64, u64)>,
    /// The CPython interpreter it holds, if any (see `python`).
    python: Option<Interpreter>,
}

impl Binary {
    fn build(image: &[u8], store: &mut TableStore) -> Result<Binary> {
        let elf = object::File::parse(image)?;
        // Executable segments only: a read-only segment can share the code's first page, and
        // its address is not the code's.
        let executable = |segment: &object::Segment| {
            matches!(segment.flags(), object::SegmentFlags::Elf { p_flags }
                if p_flags & object::elf::PF_X != 0)
        };
        let segments = elf
            .segments()
            .filter(executable)
            .map(|segment| {
                let (offset, size) = segment.file_range();
                (offset, segment.address(), size)
            })
            .collect();
        let rows = rows::compact(rows::ranges(&elf)?);
        let table = store.add(&rows)?.unwrap_or(NO_TABLE);
        Ok(Binary {
            table,
            segments,
            python: crate::python::interpreter::find(&elf),
        })
    }

    /// The load bias of a mapping of this binary at `start`, from file offset `offset` (a
    /// segment's offset rounded down to its page: the loader maps whole pages).
    fn bias(&self, start: u64, offset: u64) -> u64 {
        let (segment_offset, address, _) = (self.segments.iter())
            .find(|&&(at, _, size)| at & !0xfff <= offset && offset < at + size.max(1))
            .copied()
            .unwrap_or((0, 0, 0));
        start
            .wrapping_sub(offset)
            .wrapping_sub(address.wrapping_sub(segment_offset))
    }
}

pub struct Unwinder {
    store: TableStore,
    processes: KernelHashMap<MapData, u32, ProcessMappings>,
    binaries: HashMap<FileId, Option<Binary>>,
    vdso: Option<Option<Binary>>,
    /// When each live process's maps were last read, and the processes waiting to be read
    /// again.
    read_at: HashMap<u32, Instant>,
    waiting: BTreeMap<u32, Instant>,
    /// Processes whose maps were read, exited ones included, and when the exited ones were
    /// last forgotten.
    processes_read: u64,
    forgotten_at: Instant,
    /// The files a command's loader will map (see `prebuild`), until its exec is seen.
    expected: Vec<FileId>,
    /// Lists given to the kernel, and processes with more mappings than it keeps.
    process_loads: u64,
    processes_over_mapping_limit: u64,
    /// The Python processes among them.
    pub python: PythonProcesses,
}

impl Unwinder {
    /// Takes the unwind maps from the loaded object; `python_frames`: Python processes are
    /// given to the walk (see `python`).
    pub fn new(tracer: &mut Tracer, capacity: Capacity, python_frames: bool) -> Result<Self> {
        let store = TableStore::new(
            tracer.take_map("UNWIND_ROWS")?,
            tracer.take_map("UNWIND_PAGES")?,
            tracer.take_map("UNWIND_TABLES")?,
            capacity,
        )?;
        let processes = KernelHashMap::try_from(tracer.take_map("UNWIND_PROCESSES")?)?;
        let python = PythonProcesses::new(tracer, python_frames)?;
        Ok(Self {
            python,
            store,
            processes,
            binaries: HashMap::new(),
            vdso: None,
            read_at: HashMap::new(),
            waiting: BTreeMap::new(),
            processes_read: 0,
            forgotten_at: Instant::now(),
            expected: Vec::new(),
            process_loads: 0,
            processes_over_mapping_limit: 0,
        })
    }

    /// The programs asked for `pid`'s mappings: read them now, or once the last read is old
    /// enough.
    pub fn on_request(&mut self, pid: u32) {
        let now = Instant::now();
        match self.read_at.get(&pid) {
            Some(&at) if now.duration_since(at) < REREAD_INTERVAL => {
                self.waiting.insert(pid, at + REREAD_INTERVAL);
            }
            _ => self.load(pid),
        }
    }

    /// The kernel recorded a new executable mapping in `pid` (a library loaded, the dynamic
    /// loader mapping a command's libraries; only a command's processes' are watched): its
    /// maps are read again once this batch of records is handled, before its walks meet the
    /// new code.
    pub fn on_new_mapping(&mut self, pid: u32) {
        self.waiting.entry(pid).or_insert_with(Instant::now);
    }

    /// Reads the processes whose wait is over.
    pub fn tick(&mut self) {
        let now = Instant::now();
        let due: Vec<u32> = (self.waiting.iter())
            .filter(|&(_, &at)| at <= now)
            .map(|(&pid, _)| pid)
            .collect();
        for pid in due {
            self.waiting.remove(&pid);
            self.load(pid);
        }
        if now.duration_since(self.forgotten_at) >= FORGET_INTERVAL {
            self.forgotten_at = now;
            self.forget_exited();
        }
    }

    /// Drops what is kept of processes that exited (the kernel's map forgets them itself:
    /// it is an LRU).
    fn forget_exited(&mut self) {
        self.read_at.retain(|&pid, _| process_exists(pid));
        self.waiting.retain(|&pid, _| process_exists(pid));
        self.python.forget(process_exists);
    }

    /// Reads `pid`'s executable mappings, builds the tables it lacks, and gives the list to
    /// the kernel. A process already gone is skipped.
    pub fn load(&mut self, pid: u32) {
        self.load_mapping(pid);
    }

    /// A process called exec: its program's mappings are given now. The command memtrace
    /// started is waited for until its loader has mapped the files `prebuild` expected (at
    /// most `LOADER_WAIT`): a program that works at once would otherwise run its first
    /// milliseconds before memtrace saw its libraries, and those stacks would stop there.
    pub fn on_exec(&mut self, pid: u32) {
        let expected = std::mem::take(&mut self.expected);
        let started = Instant::now();
        loop {
            let Some(mapped) = self.load_mapping(pid) else {
                return;
            };
            let all_mapped = expected.iter().all(|id| mapped.contains(id));
            log::debug!(
                "unwind: exec of pid {pid}: {} of {} expected files mapped",
                expected.iter().filter(|id| mapped.contains(id)).count(),
                expected.len()
            );
            if all_mapped || started.elapsed() >= LOADER_WAIT {
                return;
            }
            std::thread::yield_now();
        }
    }

    /// `load`; returns the files the process maps (None when it is gone).
    fn load_mapping(&mut self, pid: u32) -> Option<Vec<FileId>> {
        let started = Instant::now();
        if self.read_at.insert(pid, started).is_none() {
            self.processes_read += 1;
        }
        let (mappings, files, interpreter) = self.mappings_of(pid)?;
        self.python.on_mappings(pid, interpreter);
        let mut value = ProcessMappings::EMPTY;
        if mappings.len() > MAX_MAPPINGS {
            self.processes_over_mapping_limit += 1;
        }
        for (slot, mapping) in value.mappings.iter_mut().zip(&mappings) {
            *slot = *mapping;
        }
        value.count = mappings.len().min(MAX_MAPPINGS) as u32;
        for mapping in &mappings {
            log::debug!(
                "unwind: pid {pid} {:#x}-{:#x} bias {:#x} table {}",
                mapping.start,
                mapping.end,
                mapping.bias,
                mapping.table as i32
            );
        }
        if let Err(err) = self.processes.insert(pid, value, 0) {
            log::debug!("unwind mappings of pid {pid}: {err}");
            return None;
        }
        self.process_loads += 1;
        self.store.figures.build_ms += started.elapsed().as_secs_f64() * 1e3;
        Some(files)
    }

    /// The process's executable mappings, sorted, each with its binary's table; the files
    /// they map; and the Python interpreter among them, with its load bias.
    #[allow(clippy::type_complexity)]
    fn mappings_of(
        &mut self,
        pid: u32,
    ) -> Option<(Vec<UnwindMapping>, Vec<FileId>, Option<(Interpreter, u64)>)> {
        let maps = Process::new(pid as i32).ok()?.maps().ok()?;
        let mut mappings = Vec::new();
        let mut files = Vec::new();
        let mut interpreter = None;
        for map in maps.iter() {
            if !map.perms.contains(MMPermissions::EXECUTE) {
                continue;
            }
            let (start, end) = map.address;
            let binary = match &map.pathname {
                MMapPath::Path(_) => {
                    let key = FileId {
                        dev: map.dev,
                        inode: map.inode,
                    };
                    files.push(key);
                    if !self.binaries.contains_key(&key) {
                        let built = self.build_file(pid, start, end);
                        self.binaries.insert(key, built);
                    }
                    self.binaries.get(&key).and_then(Option::as_ref)
                }
                MMapPath::Vdso => {
                    if self.vdso.is_none() {
                        let built =
                            vdso::own_image().and_then(|image| self.build_image(&image, "[vdso]"));
                        self.vdso = Some(built);
                    }
                    self.vdso.as_ref().and_then(Option::as_ref)
                }
                _ => None,
            };
            let bias = binary.map_or(0, |b| b.bias(start, map.offset));
            if let Some(python) = binary.and_then(|b| b.python) {
                interpreter = Some((python, bias));
            }
            mappings.push(UnwindMapping {
                start,
                end,
                bias,
                table: binary.map_or(NO_TABLE, |b| b.table),
                _pad: 0,
            });
        }
        mappings.sort_by_key(|m| m.start);
        Some((mappings, files, interpreter))
    }

    /// Builds the tables of files a command will map, before it starts: its first stacks then
    /// wait only for its mappings to be listed, not for tables to be built.
    pub fn prebuild(&mut self, files: &[PathBuf]) {
        let started = Instant::now();
        for path in files {
            let Ok(file) = File::open(path) else {
                continue;
            };
            let Ok(metadata) = file.metadata() else {
                continue;
            };
            let device = metadata.dev();
            let key = FileId {
                dev: (libc::major(device) as i32, libc::minor(device) as i32),
                inode: metadata.ino(),
            };
            self.expected.push(key);
            if self.binaries.contains_key(&key) {
                continue;
            }
            let built = self.build_mapped(&file, &path.to_string_lossy());
            self.binaries.insert(key, built);
        }
        self.store.figures.build_ms += started.elapsed().as_secs_f64() * 1e3;
    }

    /// A mapped file's binary, read through the process's own view of it (which works for
    /// files deleted or in another mount namespace).
    fn build_file(&mut self, pid: u32, start: u64, end: u64) -> Option<Binary> {
        let path = format!("/proc/{pid}/map_files/{start:x}-{end:x}");
        let file = File::open(&path).ok()?;
        self.build_mapped(&file, &path)
    }

    fn build_mapped(&mut self, file: &File, name: &str) -> Option<Binary> {
        // SAFETY: read-only mapping of a file; a binary being rewritten in place while mapped
        // would already break the process running it.
        let image = unsafe { memmap2::Mmap::map(file) }.ok()?;
        self.build_image(&image, name)
    }

    fn build_image(&mut self, image: &[u8], name: &str) -> Option<Binary> {
        match Binary::build(image, &mut self.store) {
            Ok(binary) => Some(binary),
            Err(err) => {
                log::debug!("no unwind table for {name}: {err:#}");
                self.store.figures.binaries_without_frame_info += 1;
                None
            }
        }
    }

    /// What the tables hold now.
    pub fn figures(&self) -> UnwindFigures {
        UnwindFigures {
            tables: self.store.figures.clone(),
            processes: self.processes_read,
            process_loads: self.process_loads,
            processes_over_mapping_limit: self.processes_over_mapping_limit,
        }
    }
}
