//! Snapshots of `/proc/PID/maps`, kept after the process exits: they classify fault addresses
//! into regions and give the symbolizer the files behind executable mappings. A traced command
//! often exits before the report is made, so nothing here may need the process to still exist.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use procfs::process::{MMPermissions, MMapPath, MemoryMap, Process};

use crate::python::CodeObjects;
use crate::trace::mapping_records::{MappingKind, NewMapping};
use crate::trace::region::Region;

/// A miss re-reads maps at most this often per pid: a storm of faults on fresh mappings must
/// not turn into one maps read per event.
const REFRESH_INTERVAL: Duration = Duration::from_millis(10);
/// A stack's miss re-reads maps at most this often per pid (see `MapsCache::cover`).
const COVER_INTERVAL: Duration = Duration::from_secs(1);

/// Identity of a mapped file: (device major/minor, inode) as maps reports them. Unique while
/// we hold the file open (an open inode is not reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId {
    pub dev: (i32, i32),
    pub inode: u64,
}

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug)]
pub struct Mapping {
    pub start: u64,
    /// Exclusive.
    pub end: u64,
    pub perms: MMPermissions,
    /// Offset of `start` in the backing file.
    pub offset: u64,
    pub dev: (i32, i32),
    pub inode: u64,
    pub region: Region,
    /// Kept open for executable file mappings so symbols resolve after the process exits.
    file: Option<Arc<File>>,
}

impl Mapping {
    pub fn is_exec(&self) -> bool {
        self.perms.contains(MMPermissions::EXECUTE)
    }

    /// Offset of `addr` in the backing file (meaningful for file-backed mappings).
    pub fn file_offset(&self, addr: u64) -> u64 {
        // Wrapping: a bogus maps line (or an address outside the mapping) must not panic.
        addr.wrapping_sub(self.start).wrapping_add(self.offset)
    }

    /// The backing file's identity, for file-backed mappings (a memfd's too).
    pub fn file_id(&self) -> Option<FileId> {
        (self.region.is_file() && self.inode != 0).then_some(FileId {
            dev: self.dev,
            inode: self.inode,
        })
    }

    /// A path to the backing file that stays valid after the process exited and even when the
    /// file was deleted: `/proc/self/fd/N` of our own open descriptor. Only executable file
    /// mappings have one.
    pub fn symbol_path(&self) -> Option<PathBuf> {
        let file = self.file.as_ref()?;
        Some(PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd())))
    }

    /// The file kept open behind an executable file mapping.
    pub fn open_file(&self) -> Option<&File> {
        self.file.as_deref()
    }

    /// The mapped file's path as the process saw it (without the kernel's " (deleted)").
    pub fn path(&self) -> Option<&str> {
        match &self.region {
            Region::File(path) => Some(path.strip_suffix(" (deleted)").unwrap_or(path)),
            _ => None,
        }
    }

    /// Short module name for frames: the file name (`libc.so.6`), or the pseudo path
    /// (`[vdso]`) for other mappings.
    pub fn module(&self) -> String {
        match &self.region {
            Region::File(path) => {
                let path = path.strip_suffix(" (deleted)").unwrap_or(path);
                Path::new(path).file_name().map_or_else(
                    || path.to_owned(),
                    |name| name.to_string_lossy().into_owned(),
                )
            }
            region => region.to_string(),
        }
    }
}

/// The snapshot of one process: mappings sorted by start, never overlapping.
#[derive(Debug)]
pub struct ProcessMaps {
    /// Start time (clock ticks after boot) of the process read last: tells pid reuse apart.
    start_time: Option<u64>,
    mappings: Vec<Mapping>,
    /// When maps were last read; None when the next miss may read them at once.
    read_at: Option<Instant>,
    alive: bool,
    /// A copy of the parent's snapshot, made at fork: the first read of the child's own maps
    /// merges into it rather than treating the new start time as pid reuse.
    inherited: bool,
}

impl ProcessMaps {
    /// Nothing read yet: the next miss reads the maps.
    fn empty() -> Self {
        Self {
            start_time: None,
            mappings: Vec::new(),
            read_at: None,
            alive: false,
            inherited: false,
        }
    }

    #[allow(dead_code)] // for callers walking a snapshot; the tests do
    pub fn mappings(&self) -> &[Mapping] {
        &self.mappings
    }

    pub fn lookup(&self, addr: u64) -> Option<&Mapping> {
        // Sorted and disjoint, so ends are sorted too.
        let i = self.mappings.partition_point(|m| m.end <= addr);
        self.mappings.get(i).filter(|m| m.start <= addr)
    }

    /// Take the fresh mappings, keeping old ones that no fresh one overlaps: a region unmapped
    /// since is still the right answer for addresses recorded while it existed.
    fn merge(&mut self, fresh: Vec<Mapping>) {
        let old = std::mem::replace(&mut self.mappings, fresh);
        let fresh = &self.mappings;
        let kept: Vec<Mapping> = old
            .into_iter()
            .filter(|m| {
                let i = fresh.partition_point(|n| n.end <= m.start);
                fresh.get(i).is_none_or(|n| n.start >= m.end)
            })
            .collect();
        if !kept.is_empty() {
            self.mappings.extend(kept);
            self.mappings.sort_by_key(|m| m.start);
        }
    }
}

/// Maps snapshots of many processes, plus the open executable files they share.
#[derive(Debug, Default)]
pub struct MapsCache {
    procs: HashMap<u32, ProcessMaps>,
    /// Weak: a file closes when the last snapshot using it is forgotten.
    files: HashMap<FileId, Weak<File>>,
    /// Execs seen per pid: each exec starts a new address space (a new generation).
    generations: HashMap<u32, u32>,
    /// Snapshots of address spaces an exec replaced, by (pid, generation): stacks recorded
    /// before the exec are symbolized against them.
    retired: HashMap<(u32, u32), ProcessMaps>,
    /// Executable mappings reported for an exec generation not seen yet (the mapping records
    /// can arrive before the exec event), installed when it begins.
    ahead: HashMap<(u32, u32), Vec<Mapping>>,
    /// The Python code objects read from each address space, by (pid, generation): like
    /// the mappings, what names the addresses of its stacks (see `python`).
    python: HashMap<(u32, u32), CodeObjects>,
}

impl MapsCache {
    /// The code objects read from `pid`'s address space `generation`.
    pub fn python_codes(&self, pid: u32, generation: u32) -> Option<&CodeObjects> {
        self.python.get(&(pid, generation))
    }

    /// The code objects read from `pid`'s current address space, to add to.
    pub fn python_codes_now(&mut self, pid: u32) -> &mut CodeObjects {
        let generation = self.generation(pid);
        self.python.entry((pid, generation)).or_default()
    }

    /// Read `/proc/PID/maps` now and merge it into the snapshot (replacing it if the pid now
    /// belongs to another process). False if the process is gone; the last snapshot stays.
    pub fn capture(&mut self, pid: u32) -> bool {
        let read = read_process(pid, &mut self.files);
        let entry = self.procs.entry(pid).or_insert_with(ProcessMaps::empty);
        entry.read_at = Some(Instant::now());
        match read {
            Some((start_time, fresh)) => {
                if entry.start_time != Some(start_time) && !std::mem::take(&mut entry.inherited) {
                    // First read, or the pid was reused: the old mappings are another process's.
                    entry.mappings.clear();
                    entry.start_time = Some(start_time);
                }
                entry.merge(fresh);
                entry.alive = true;
                true
            }
            None => {
                entry.alive = false;
                false
            }
        }
    }

    /// The region `addr` falls in. On a miss the snapshot is refreshed (rate-limited) while the
    /// process lives; once it is gone, the last snapshot answers.
    pub fn region(&mut self, pid: u32, addr: u64) -> Region {
        if let Some(m) = self.lookup(pid, addr) {
            return m.region.clone();
        }
        if self.read_due(pid, REFRESH_INTERVAL) {
            self.capture(pid);
        }
        self.lookup(pid, addr)
            .map_or(Region::Unknown, |m| m.region.clone())
    }

    /// Whether a miss in `pid`'s snapshot should read its maps now: it may have changed,
    /// and was read longer than `interval` ago.
    fn read_due(&self, pid: u32, interval: Duration) -> bool {
        match self.procs.get(&pid) {
            None => true,
            // A process never read successfully is retried too: it may just not exist yet.
            Some(p) => {
                (p.alive || p.start_time.is_none())
                    && p.read_at.is_none_or(|at| at.elapsed() >= interval)
            }
        }
    }

    /// Reads the maps of a process seen for the first time in a sample (one that started
    /// before tracing: processes started since were read at their exec or fork), now, while it
    /// surely lives: it may exit before its stacks are symbolized. Once per process.
    pub fn capture_unknown(&mut self, pid: u32) {
        if !self.procs.contains_key(&pid) {
            self.capture(pid);
        }
    }

    /// Makes the snapshot of `pid`'s address space `generation` cover `addrs` if reading its
    /// maps can: a process that started before tracing is only known from its samples, so
    /// its maps are read at its first, while it lives. A miss reads again at most every
    /// `COVER_INTERVAL` (a stack walked through code without frame pointers can hold
    /// addresses no mapping covers). An address space an exec replaced cannot be read.
    pub fn cover(&mut self, pid: u32, generation: u32, addrs: &[u64]) {
        if generation != self.generation(pid) {
            return;
        }
        let missed = addrs.iter().any(|&addr| self.lookup(pid, addr).is_none());
        if missed && self.read_due(pid, COVER_INTERVAL) {
            self.capture(pid);
        }
    }

    /// The mapping covering `addr` in the snapshot, without refreshing.
    pub fn lookup(&self, pid: u32, addr: u64) -> Option<&Mapping> {
        self.procs.get(&pid)?.lookup(addr)
    }

    /// `child` was forked from `parent`: until it execs, its address space is a copy of the
    /// parent's (the child usually execs within microseconds, before its own maps can be read).
    pub fn fork(&mut self, parent: u32, child: u32) {
        if !self.procs.contains_key(&parent) {
            self.capture(parent);
        }
        let Some(parent_maps) = self.procs.get(&parent) else {
            return;
        };
        let copy = ProcessMaps {
            start_time: None,
            mappings: parent_maps.mappings.clone(),
            read_at: None,
            alive: true,
            inherited: true,
        };
        self.procs.insert(child, copy);
        // A reused pid: the new process starts at generation 0 again. Mappings kept ahead are
        // the new child's own: a child that forks, execs and maps its libraries between two
        // drains has its mapping records read before its fork event (the drain reads them
        // first), and they must wait for its exec event.
        self.generations.remove(&child);
        self.retired.retain(|&(pid, _), _| pid != child);
    }

    /// Everything kept for `pid` (an ended process whose stacks are all resolved): an
    /// always-on consumer would otherwise keep every process it ever saw.
    pub fn forget(&mut self, pid: u32) {
        self.procs.remove(&pid);
        self.generations.remove(&pid);
        self.retired.retain(|&(p, _), _| p != pid);
        self.ahead.retain(|&(p, _), _| p != pid);
        self.python.retain(|&(p, _), _| p != pid);
        // Files no snapshot maps any more.
        self.files.retain(|_, file| file.strong_count() > 0);
    }

    /// The snapshot is known to be incomplete (read at exec, before the dynamic loader mapped
    /// the libraries): the next miss reads the maps again without waiting out the rate limit.
    pub fn expect_changes(&mut self, pid: u32) {
        if let Some(p) = self.procs.get_mut(&pid) {
            p.read_at = None;
        }
    }

    /// The process called exec: its snapshot so far is retired (kept for what was recorded
    /// before) and the next capture starts a new generation.
    pub fn exec(&mut self, pid: u32) {
        let generation = self.generations.entry(pid).or_default();
        if let Some(old) = self.procs.remove(&pid) {
            self.retired.insert((pid, *generation), old);
        }
        *generation += 1;
        if let Some(mappings) = self.ahead.remove(&(pid, *generation)) {
            let mut snapshot = ProcessMaps::empty();
            // One at a time: in order, a later mapping replaces what it overlaps.
            for mapping in mappings {
                snapshot.merge(vec![mapping]);
            }
            self.procs.insert(pid, snapshot);
        }
    }

    /// A mapping the kernel reported as it was made (see `mapping_records`): the only record
    /// of a library loaded, or shared memory mapped, by a process that exits before its maps
    /// are read. `generation` counts the execs of the process before the mapping.
    pub fn add_mapping(&mut self, generation: u32, record: &NewMapping) {
        let pid = record.pid;
        let id = FileId {
            dev: (record.dev_major as i32, record.dev_minor as i32),
            inode: record.inode,
        };
        let (perms, file) = match record.kind {
            MappingKind::Code => (
                MMPermissions::READ | MMPermissions::EXECUTE | MMPermissions::PRIVATE,
                open_shared(
                    pid,
                    record.start,
                    record.end,
                    Path::new(&record.path),
                    id,
                    &mut self.files,
                ),
            ),
            // Classified by its name alone: nothing in it is symbolized.
            MappingKind::Shared => (
                MMPermissions::READ | MMPermissions::WRITE | MMPermissions::SHARED,
                None,
            ),
        };
        let mapping = Mapping {
            start: record.start,
            end: record.end,
            perms,
            offset: record.offset,
            dev: id.dev,
            inode: id.inode,
            region: Region::of_path(&record.path, record.inode),
            file,
        };
        let current = self.generation(pid);
        let snapshot = if generation > current {
            self.ahead
                .entry((pid, generation))
                .or_default()
                .push(mapping);
            return;
        } else if generation == current {
            self.procs.entry(pid).or_insert_with(ProcessMaps::empty)
        } else {
            self.retired
                .entry((pid, generation))
                .or_insert_with(ProcessMaps::empty)
        };
        snapshot.merge(vec![mapping]);
    }

    /// Every pid something is kept for.
    pub fn pids(&self) -> std::collections::HashSet<u32> {
        (self.procs.keys().copied())
            .chain(self.generations.keys().copied())
            .chain(self.retired.keys().map(|(pid, _)| *pid))
            .chain(self.ahead.keys().map(|(pid, _)| *pid))
            .collect()
    }

    /// Address-space snapshots held (current and retired by an exec).
    pub fn snapshots(&self) -> usize {
        self.procs.len() + self.retired.len()
    }

    /// How many execs of `pid` memtrace has seen: the generation of its current address space.
    pub fn generation(&self, pid: u32) -> u32 {
        self.generations.get(&pid).copied().unwrap_or(0)
    }

    /// `lookup` in the address space `pid` had in `generation`.
    pub fn lookup_in(&self, pid: u32, generation: u32, addr: u64) -> Option<&Mapping> {
        if generation == self.generation(pid) {
            return self.lookup(pid, addr);
        }
        self.retired.get(&(pid, generation))?.lookup(addr)
    }

    #[allow(dead_code)] // for callers walking a snapshot; the tests do
    pub fn process(&self, pid: u32) -> Option<&ProcessMaps> {
        self.procs.get(&pid)
    }

    /// The region of a file by identity, from any snapshot that maps it.
    pub fn file_region(&self, id: FileId) -> Option<&Region> {
        self.procs
            .values()
            .flat_map(|p| p.mappings())
            .find_map(|m| (m.file_id() == Some(id)).then_some(&m.region))
    }
}

/// The process's start time and sorted mappings; None if it is gone or a zombie (no maps left).
fn read_process(pid: u32, files: &mut HashMap<FileId, Weak<File>>) -> Option<(u64, Vec<Mapping>)> {
    let process = Process::new(i32::try_from(pid).ok()?).ok()?;
    let stat = process.stat().ok()?;
    if matches!(stat.state, 'Z' | 'X') {
        return None;
    }
    let maps = process.maps().ok()?;
    // A process between releasing its memory and becoming a zombie has no maps: that is no
    // reading of it (it would replace what the kernel's mapping records said of it).
    if maps.0.is_empty() {
        return None;
    }
    let mut mappings: Vec<Mapping> = maps.into_iter().map(|m| mapping(pid, m, files)).collect();
    mappings.sort_by_key(|m| m.start);
    Some((stat.starttime, mappings))
}

fn mapping(pid: u32, m: MemoryMap, files: &mut HashMap<FileId, Weak<File>>) -> Mapping {
    let mut mapping = Mapping {
        start: m.address.0,
        end: m.address.1,
        perms: m.perms,
        offset: m.offset,
        dev: m.dev,
        inode: m.inode,
        region: Region::from_path(&m.pathname, m.inode),
        file: None,
    };
    // Only code is symbolized, so only executable mappings keep their file open.
    if let (MMapPath::Path(path), Some(id)) = (&m.pathname, mapping.file_id()) {
        if mapping.is_exec() {
            mapping.file = open_shared(pid, mapping.start, mapping.end, path, id, files);
        }
    }
    mapping
}

/// Open a mapped file once across all processes.
fn open_shared(
    pid: u32,
    start: u64,
    end: u64,
    path: &Path,
    id: FileId,
    files: &mut HashMap<FileId, Weak<File>>,
) -> Option<Arc<File>> {
    if let Some(file) = files.get(&id).and_then(Weak::upgrade) {
        return Some(file);
    }
    // map_files works for deleted files and across mount namespaces (needs CAP_SYS_ADMIN).
    let file = File::open(format!("/proc/{pid}/map_files/{start:x}-{end:x}"))
        .ok()
        .or_else(|| open_by_path(pid, path, id.inode));
    let file = Arc::new(file?);
    files.insert(id, Arc::downgrade(&file));
    Some(file)
}

/// Fallback without map_files: the path in the process's mount namespace, then in ours, taken
/// only if it is still the same inode (the file may have been replaced since).
fn open_by_path(pid: u32, path: &Path, inode: u64) -> Option<File> {
    if path.to_string_lossy().ends_with(" (deleted)") {
        return None;
    }
    let in_ns = Path::new(&format!("/proc/{pid}/root")).join(path.strip_prefix("/").ok()?);
    let found = [in_ns.as_path(), path].into_iter().find_map(|candidate| {
        let file = File::open(candidate).ok()?;
        (file.metadata().ok()?.ino() == inode).then_some(file)
    });
    found
}

/// Shared memory of this process, for tests: a shared anonymous mapping and a System V
/// segment (IPC_PRIVATE, removed at once so it goes when detached, even if a test fails),
/// `len` bytes each, released on drop.
#[cfg(test)]
pub(crate) struct TestSharedMemory {
    pub shared: *mut libc::c_void,
    pub segment: *mut libc::c_void,
    pub shmid: i32,
    len: usize,
}

#[cfg(test)]
impl TestSharedMemory {
    pub fn map(len: usize) -> Self {
        // SAFETY: fresh mappings and a fresh segment, released on drop; nothing else uses them.
        unsafe {
            let shared = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(shared, libc::MAP_FAILED);
            let shmid = libc::shmget(libc::IPC_PRIVATE, len, libc::IPC_CREAT | 0o600);
            assert!(shmid >= 0, "shmget: {}", std::io::Error::last_os_error());
            let segment = libc::shmat(shmid, std::ptr::null(), 0);
            libc::shmctl(shmid, libc::IPC_RMID, std::ptr::null_mut());
            assert_ne!(segment as isize, -1, "shmat");
            Self {
                shared,
                segment,
                shmid,
                len,
            }
        }
    }
}

#[cfg(test)]
impl Drop for TestSharedMemory {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping and segment made in `map`.
        unsafe {
            libc::shmdt(self.segment);
            libc::munmap(self.shared, self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[inline(never)]
    fn local_function() -> u32 {
        std::hint::black_box(7)
    }

    /// A mapping record of `path` at `start` for a pid that does not exist.
    fn exec_record(path: &str, start: u64) -> NewMapping {
        let meta = std::fs::metadata(path).unwrap();
        NewMapping {
            kind: MappingKind::Code,
            pid: u32::MAX - 1,
            start,
            end: start + 0x1000,
            offset: 0,
            dev_major: (meta.dev() >> 8) as u32 & 0xfff,
            dev_minor: (meta.dev() & 0xff) as u32,
            inode: meta.ino(),
            path: path.to_owned(),
        }
    }

    #[test]
    fn exec_mapping_records_land_in_their_generation() {
        let mut maps = MapsCache::default();
        let record = exec_record("/usr/bin/true", 0x10000);
        let pid = record.pid;
        // Before its exec event: kept aside, not in the current image.
        maps.add_mapping(1, &record);
        assert!(maps.lookup(pid, 0x10800).is_none());
        maps.exec(pid);
        let found = maps.lookup(pid, 0x10800).expect("installed at the exec");
        assert_eq!(found.module(), "true");
        assert!(found.symbol_path().is_some(), "the file is kept open");
        // A late record of the old image goes to the old image.
        maps.add_mapping(0, &exec_record("/usr/bin/true", 0x20000));
        assert!(maps.lookup(pid, 0x20800).is_none());
        assert!(maps.lookup_in(pid, 0, 0x20800).is_some());
        // The current image's own records merge into it.
        maps.add_mapping(1, &exec_record("/usr/bin/true", 0x30000));
        assert!(maps.lookup(pid, 0x10800).is_some() && maps.lookup(pid, 0x30800).is_some());
    }

    /// Shared memory a process mapped and faulted on before it exited unread: its records
    /// classify the faults, and no file is opened for them.
    #[test]
    fn shared_memory_records_classify_a_gone_process() {
        let mut maps = MapsCache::default();
        let shared = |path: &str, start: u64, inode: u64| NewMapping {
            kind: MappingKind::Shared,
            pid: u32::MAX - 1,
            start,
            end: start + 0x3000,
            offset: 0,
            dev_major: 0,
            dev_minor: 1,
            inode,
            path: path.to_owned(),
        };
        let pid = u32::MAX - 1;
        maps.add_mapping(0, &shared("/dev/zero (deleted)", 0x10000, 5));
        maps.add_mapping(0, &shared("/SYSV00000000 (deleted)", 0x20000, 65571));
        assert_eq!(maps.region(pid, 0x12fff), Region::SharedAnon);
        assert_eq!(
            maps.region(pid, 0x21000),
            Region::SysvShm {
                key: 0,
                shmid: 65571
            }
        );
        assert!(maps.lookup(pid, 0x10000).unwrap().symbol_path().is_none());
    }

    /// A child that forks, execs and maps its libraries between two drains: the mapping
    /// records (read first) come before its fork event, and must still be there at its exec.
    #[test]
    fn mapping_records_read_before_the_fork_survive_it() {
        let mut maps = MapsCache::default();
        let record = exec_record("/usr/bin/true", 0x10000);
        let child = record.pid;
        maps.add_mapping(1, &record);
        maps.fork(std::process::id(), child);
        maps.exec(child);
        let found = maps.lookup(child, 0x10800).expect("installed at the exec");
        assert_eq!(found.module(), "true");
    }

    #[test]
    fn own_process_regions() {
        let pid = std::process::id();
        let mut cache = MapsCache::default();
        assert!(cache.capture(pid));

        let exe = std::env::current_exe().unwrap();
        let code = local_function as *const () as u64;
        match cache.region(pid, code) {
            Region::File(path) => assert_eq!(Path::new(&path), exe),
            other => panic!("code address {code:#x} classified as {other}"),
        }
        let mapping = cache.lookup(pid, code).unwrap();
        assert!(mapping.is_exec());
        assert!(mapping.symbol_path().unwrap().exists());

        let boxed = Box::new([0u8; 64]);
        let heap = boxed.as_ptr() as u64;
        assert_ne!(
            cache.region(pid, heap),
            Region::Unknown,
            "heap address {heap:#x}"
        );

        // Test threads run on unlabeled (anonymous) thread stacks; AT_EXECFN points into the
        // main thread's initial stack.
        let on_stack = unsafe { libc::getauxval(libc::AT_EXECFN) };
        assert_eq!(cache.region(pid, on_stack), Region::Stack);

        assert_eq!(cache.region(pid, 0x10), Region::Unknown);
    }

    /// A process known only from its samples (started before tracing): its maps are read
    /// at the first stack they do not cover, and a miss does not read them again at once.
    #[test]
    fn a_stack_not_covered_reads_the_maps() {
        let pid = std::process::id();
        let code = local_function as *const () as u64;
        let mut cache = MapsCache::default();
        assert!(cache.lookup(pid, code).is_none());
        cache.cover(pid, 0, &[code]);
        assert!(cache.lookup(pid, code).is_some_and(|m| m.is_exec()));
        let mut first_sight = MapsCache::default();
        first_sight.capture_unknown(pid);
        assert!(first_sight.lookup(pid, code).is_some());
        let read_at = cache.process(pid).unwrap().read_at;
        // 0x10 is in no mapping: not worth another read before COVER_INTERVAL.
        cache.cover(pid, 0, &[code, 0x10]);
        assert_eq!(cache.process(pid).unwrap().read_at, read_at);
        // Known already: not read again at its next sample.
        cache.capture_unknown(pid);
        assert_eq!(cache.process(pid).unwrap().read_at, read_at);
        // An address space an exec replaced is not read again.
        cache.exec(pid);
        cache.cover(pid, 0, &[code]);
        assert!(cache.lookup(pid, code).is_none());
    }

    #[test]
    fn unmapped_anon_region_is_remembered() {
        let pid = std::process::id();
        let page = 4096usize;
        // Three PROT_NONE pages with a readable middle one: the middle gets a mapping line of
        // its own that the kernel cannot merge with a neighbour.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                3 * page,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        let middle = base as usize + page;
        assert_eq!(
            unsafe { libc::mprotect(middle as *mut _, page, libc::PROT_READ) },
            0
        );

        let mut cache = MapsCache::default();
        assert!(cache.capture(pid));
        assert_eq!(cache.region(pid, middle as u64 + 8), Region::Anon);

        assert_eq!(unsafe { libc::munmap(middle as *mut _, page) }, 0);
        assert!(cache.capture(pid));
        assert_eq!(cache.region(pid, middle as u64 + 8), Region::Anon);

        unsafe { libc::munmap(base, 3 * page) };
    }

    /// Shared memory of three kinds, mapped here, as the kernel lists it in our own maps:
    /// each its own region, and the SysV segment's shmid the one shmget returned.
    #[test]
    fn shared_memory_regions() {
        let pid = std::process::id();
        let len = 4 * 4096;
        let memory = TestSharedMemory::map(len);
        let (shared, segment, shmid) = (memory.shared, memory.segment, memory.shmid);
        // SAFETY: a fresh memfd and mapping, released below; nothing else uses them.
        unsafe {
            let fd = libc::memfd_create(c"memtrace-test".as_ptr(), 0);
            assert!(fd >= 0);
            assert_eq!(libc::ftruncate(fd, len as i64), 0);
            let memfd = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            );
            assert_ne!(memfd, libc::MAP_FAILED);

            let mut cache = MapsCache::default();
            assert!(cache.capture(pid));
            let found = |addr: *mut libc::c_void| cache.lookup(pid, addr as u64 + 8).cloned();
            let shared_map = found(shared).expect("shared anonymous mapping");
            let segment_map = found(segment).expect("SysV segment");
            let memfd_map = found(memfd).expect("memfd mapping");
            assert_eq!(shared_map.region, Region::SharedAnon);
            assert_eq!(
                segment_map.region,
                Region::SysvShm {
                    key: 0,
                    shmid: shmid as u64
                },
                "IPC_PRIVATE is key 0; the shmid is shmget's"
            );
            assert_eq!(memfd_map.region, Region::Memfd("memtrace-test".into()));
            assert!(memfd_map.file_id().is_some(), "a memfd is a file");
            assert!(shared_map.file_id().is_none() && segment_map.file_id().is_none());

            libc::munmap(memfd, len);
            libc::close(fd);
        }
    }

    #[test]
    fn snapshot_survives_exit() {
        let mut child = Command::new("/bin/sleep").arg("5").spawn().unwrap();
        let pid = child.id();
        let mut cache = MapsCache::default();
        // spawn returns once exec began, possibly before the kernel mapped the binary: poll.
        let deadline = Instant::now() + Duration::from_secs(5);
        let exec = loop {
            assert!(cache.capture(pid));
            let mappings = cache.process(pid).unwrap().mappings();
            if let Some(m) = mappings
                .iter()
                .find(|m| m.is_exec() && m.module() == "sleep")
            {
                break m.clone();
            }
            assert!(
                Instant::now() < deadline,
                "sleep's executable mapping never appeared"
            );
            std::thread::sleep(Duration::from_millis(5));
        };

        child.kill().unwrap();
        child.wait().unwrap();

        assert!(!cache.capture(pid));
        let addr = exec.start + 0x10;
        let found = cache.lookup(pid, addr).expect("mapping kept after exit");
        assert_eq!(found.start, exec.start);
        // The kept descriptor still reaches the file.
        assert!(std::fs::metadata(found.symbol_path().unwrap()).is_ok());
        assert!(matches!(cache.region(pid, addr), Region::File(p) if p.ends_with("/sleep")));

        // After an exec the current address space is new, the old one is kept by generation.
        assert_eq!(cache.generation(pid), 0);
        cache.exec(pid);
        assert_eq!(cache.generation(pid), 1);
        assert!(cache.lookup(pid, addr).is_none());
        assert!(cache.lookup_in(pid, 1, addr).is_none());
        let old = cache.lookup_in(pid, 0, addr).expect("old generation kept");
        assert_eq!(old.start, exec.start);
    }
}
