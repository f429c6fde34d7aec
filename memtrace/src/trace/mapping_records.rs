//! Executable and shared mappings and execs of traced processes, from perf side-band records.
//!
//! A process that exits before userspace reads /proc/PID/maps leaves nothing to read. Like
//! `perf record`, we open a software "dummy" perf event (it counts nothing) only for the
//! PERF_RECORD_MMAP2 and PERF_RECORD_COMM records the kernel writes into its ring buffers as
//! mappings and execs happen, so they survive the process.
//!
//! Besides files, the kernel reports the `[vdso]` mapping (device and inode 0). For the
//! command memtrace starts, a second event reports data mappings, and the shared ones are
//! kept: a fault on shared memory names no file (shmem faults skip filemap_fault), so a
//! command that exits before its maps are read has only this record to say the memory was
//! shared.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{anyhow, Context, Result};

/// Where the watch looks.
pub enum MappingScope {
    /// This process and everything it forks or clones afterwards (perf `inherit`). Used for the
    /// command memtrace starts (still single-threaded when the watch opens).
    Process(u32),
    /// Every process on the machine.
    System,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MmapRecord {
    /// An executable or shared mapping was made (PERF_RECORD_MMAP2).
    Mapping(NewMapping),
    /// The process called exec (PERF_RECORD_COMM with PERF_RECORD_MISC_COMM_EXEC).
    Exec { pid: u32, comm: String },
}

/// What a reported mapping holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MappingKind {
    /// Executable code: a file to symbolize and unwind from.
    Code,
    /// Shared memory (MAP_SHARED, not executable): `/dev/zero (deleted)` for shared anonymous
    /// memory, `/SYSV<key> (deleted)` for a System V segment, or a shared file.
    Shared,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMapping {
    pub kind: MappingKind,
    pub pid: u32,
    pub start: u64,
    /// start + len
    pub end: u64,
    /// pgoff, in bytes
    pub offset: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub inode: u64,
    /// As the kernel gives it.
    pub path: String,
}

// perf_event_open(2) constants, from include/uapi/linux/perf_event.h.
const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_SW_DUMMY: u64 = 9;
const PERF_SAMPLE_TID: u64 = 1 << 1;
const PERF_SAMPLE_TIME: u64 = 1 << 2;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;
/// _IO('$', 5)
const PERF_EVENT_IOC_SET_OUTPUT: libc::c_ulong = 0x2405;

// Bits of the perf_event_attr flags word.
const ATTR_INHERIT: u64 = 1 << 1;
const ATTR_MMAP: u64 = 1 << 8;
const ATTR_COMM: u64 = 1 << 9;
const ATTR_MMAP_DATA: u64 = 1 << 17;
const ATTR_SAMPLE_ID_ALL: u64 = 1 << 18;
const ATTR_MMAP2: u64 = 1 << 23;
const ATTR_COMM_EXEC: u64 = 1 << 24;
const ATTR_WATERMARK: u64 = 1 << 14;
const ATTR_USE_CLOCKID: u64 = 1 << 25;

const PERF_RECORD_LOST: u32 = 2;
const PERF_RECORD_COMM: u32 = 3;
const PERF_RECORD_MMAP2: u32 = 10;
const PERF_RECORD_MISC_COMM_EXEC: u16 = 1 << 13;
const PERF_RECORD_MISC_MMAP_BUILD_ID: u16 = 1 << 14;

/// perf_event_header: type u32, misc u16, size u16.
const HEADER_LEN: usize = 8;
/// The sample_id_all tail for PERF_SAMPLE_TID | PERF_SAMPLE_TIME: pid u32, tid u32, time u64.
const SAMPLE_ID_LEN: usize = 16;

// Field offsets in perf_event_mmap_page (the metadata page).
const DATA_HEAD_OFFSET: usize = 1024;
const DATA_TAIL_OFFSET: usize = 1032;
const DATA_OFFSET_OFFSET: usize = 1040;
const DATA_SIZE_OFFSET: usize = 1048;

/// Data pages per CPU (a power of two, as the kernel requires). A whole machine maps more.
const PROCESS_DATA_PAGES: usize = 16;
/// For a command's data mappings: every large malloc is one, and they are read only when the
/// drain comes (they never wake it).
const DATA_WATCH_PAGES: usize = 64;
const SYSTEM_DATA_PAGES: usize = 64;

/// struct perf_event_attr up to config3 (PERF_ATTR_SIZE_VER8); a kernel that knows less
/// accepts it because everything it does not know is zero.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
    branch_sample_type: u64,
    sample_regs_user: u64,
    sample_stack_user: u32,
    clockid: i32,
    sample_regs_intr: u64,
    aux_watermark: u32,
    sample_max_stack: u16,
    reserved_2: u16,
    aux_sample_size: u32,
    aux_action: u32,
    sig_data: u64,
    config3: u64,
}

const PERF_ATTR_SIZE_VER8: u32 = 136;
const _: () = assert!(std::mem::size_of::<PerfEventAttr>() == PERF_ATTR_SIZE_VER8 as usize);

/// A dummy event that only emits executable-mapping and exec records, each stamped with
/// pid/tid and time. CLOCK_MONOTONIC (rather than the per-CPU perf clock) keeps times from
/// different CPUs comparable for the merge, and comparable with bpf_ktime_get_ns().
fn code_attr(inherit: bool) -> PerfEventAttr {
    let mut flags =
        ATTR_MMAP | ATTR_MMAP2 | ATTR_COMM | ATTR_COMM_EXEC | ATTR_SAMPLE_ID_ALL | ATTR_USE_CLOCKID;
    // A command's records wake the reader at once (a watermark of one byte): its mappings'
    // unwind tables must be given before its code runs. The whole system's do not (they
    // would wake it at every mapping on the machine).
    let mut wakeup_watermark = 0;
    if inherit {
        flags |= ATTR_INHERIT | ATTR_WATERMARK;
        wakeup_watermark = 1;
    }
    dummy_attr(flags, wakeup_watermark)
}

/// A dummy event for a command's data mappings (mmap_data; with mmap2 the kernel sends its
/// executable ones too, which the code event already gives). It wakes no reader: a program
/// that maps and unmaps in a loop would otherwise wake memtrace at each call.
fn data_attr() -> PerfEventAttr {
    dummy_attr(
        ATTR_MMAP2 | ATTR_MMAP_DATA | ATTR_INHERIT | ATTR_SAMPLE_ID_ALL | ATTR_USE_CLOCKID,
        0,
    )
}

fn dummy_attr(flags: u64, wakeup_watermark: u32) -> PerfEventAttr {
    PerfEventAttr {
        wakeup_events: wakeup_watermark,
        kind: PERF_TYPE_SOFTWARE,
        size: PERF_ATTR_SIZE_VER8,
        config: PERF_COUNT_SW_DUMMY,
        sample_type: PERF_SAMPLE_TID | PERF_SAMPLE_TIME,
        flags,
        clockid: libc::CLOCK_MONOTONIC,
        ..PerfEventAttr::default()
    }
}

/// Watches executable mappings and execs, and a command's shared mappings, through perf ring
/// buffers (one per online CPU and event).
pub struct MappingRecords {
    code: Watch,
    /// A command's data mappings, of which the shared ones are kept (see `data_attr`).
    data: Option<Watch>,
    /// Whether records wake a reader (a command's: see `code_attr`).
    wakes: bool,
}

/// Records the kernel could not write because a buffer was full, since the last read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Lost {
    /// Executable mappings and execs: library symbols of short-lived processes.
    pub code: u64,
    /// Data mappings: a short-lived command's shared memory may lose its region.
    pub data: u64,
}

impl std::ops::AddAssign for Lost {
    fn add_assign(&mut self, other: Self) {
        self.code = self.code.saturating_add(other.code);
        self.data = self.data.saturating_add(other.data);
    }
}

/// One dummy event per CPU, following the given tasks (and what they create later, with
/// inherit), each CPU's records in one buffer.
struct Watch {
    buffers: Vec<RingBuffer>,
    /// Every event, including those whose output goes to another event's buffer.
    events: Vec<OwnedFd>,
}

impl Watch {
    /// `what` names the records, for errors.
    fn open(
        what: &str,
        attr: &PerfEventAttr,
        tasks: &[i32],
        cpus: &[u32],
        data_pages: usize,
    ) -> Result<Self> {
        let target = match tasks[0] {
            -1 => String::new(),
            pid => format!(" of process {pid}"),
        };
        let mut events = Vec::new();
        let mut buffers = Vec::with_capacity(cpus.len());
        for &cpu in cpus {
            let leader = open_event(attr, tasks[0], cpu)
                .map_err(|err| anyhow::Error::new(err).context(open_failure(what, &target, cpu)))?;
            buffers.push(RingBuffer::map(leader.as_fd(), cpu, data_pages)?);
            for &tid in &tasks[1..] {
                if let Some(event) = open_thread_event(what, attr, tid, cpu, leader.as_fd())? {
                    events.push(event);
                }
            }
            events.push(leader);
        }
        Ok(Self { buffers, events })
    }

    /// Every record waiting, in no particular order across CPUs.
    fn take(&mut self) -> Vec<(u64, PerfRecord)> {
        let mut records = Vec::new();
        for buffer in &mut self.buffers {
            records.extend(parse_records(&buffer.take()));
        }
        records
    }
}

impl MappingRecords {
    pub fn open(scope: MappingScope) -> Result<Self> {
        let cpus = aya::util::online_cpus()
            .map_err(|(path, err)| anyhow!("reading the online CPUs from {path}: {err}"))?;
        let (tasks, inherit, data_pages) = match scope {
            MappingScope::Process(pid) => (process_threads(pid)?, true, PROCESS_DATA_PAGES),
            MappingScope::System => (vec![-1], false, SYSTEM_DATA_PAGES),
        };
        let code = Watch::open(
            "executable mappings",
            &code_attr(inherit),
            &tasks,
            &cpus,
            data_pages,
        )?;
        // The whole system's data mappings would multiply the records; there, the maps answer.
        let data = inherit
            .then(|| {
                Watch::open(
                    "data mappings",
                    &data_attr(),
                    &tasks,
                    &cpus,
                    DATA_WATCH_PAGES,
                )
            })
            .transpose()?;
        Ok(Self {
            code,
            data,
            wakes: inherit,
        })
    }

    /// An fd that becomes readable when records wait, for a reader to wait on (None where
    /// records do not wake: the whole system's).
    pub fn wake_fd(&self) -> Result<Option<OwnedFd>> {
        self.wakes
            .then(|| epoll_over(&self.code.events))
            .transpose()
    }

    /// Every record waiting in the buffers, oldest first (merged across CPUs and events by
    /// timestamp), handed to `sink`. Returns what the kernel reported lost since the last call.
    pub fn read(&mut self, sink: &mut dyn FnMut(MmapRecord)) -> Lost {
        let mut records = self.code.take();
        let mut lost = Lost::default();
        for (time, record) in self.data.as_mut().map(Watch::take).unwrap_or_default() {
            match record {
                PerfRecord::Record(MmapRecord::Mapping(mapping))
                    if mapping.kind == MappingKind::Shared =>
                {
                    records.push((time, PerfRecord::Record(MmapRecord::Mapping(mapping))));
                }
                PerfRecord::Lost(count) => lost.data = lost.data.saturating_add(count),
                // Executable mappings come from the code event.
                PerfRecord::Record(_) => {}
            }
        }
        lost.code = deliver(records, sink);
        lost
    }
}

/// An epoll instance watching `events` for input (level-triggered: ready while records wait).
fn epoll_over(events: &[OwnedFd]) -> Result<OwnedFd> {
    // SAFETY: epoll_create1 returns a new fd or -1.
    let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epoll < 0 {
        return Err(io::Error::last_os_error()).context("epoll_create1");
    }
    // SAFETY: a fresh fd we own.
    let epoll = unsafe { OwnedFd::from_raw_fd(epoll) };
    for event in events {
        let mut interest = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 0,
        };
        // SAFETY: both fds are open; the kernel copies `interest`.
        let added = unsafe {
            libc::epoll_ctl(
                epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                event.as_raw_fd(),
                &mut interest,
            )
        };
        if added < 0 {
            return Err(io::Error::last_os_error()).context("epoll_ctl");
        }
    }
    Ok(epoll)
}

/// Clears an epoll instance's ready list (its members stay ready while records wait).
pub fn drain_epoll(epoll: &OwnedFd) {
    let mut ready = [libc::epoll_event { events: 0, u64: 0 }; 16];
    // SAFETY: a valid epoll fd and buffer of that many entries; no wait.
    unsafe { libc::epoll_wait(epoll.as_raw_fd(), ready.as_mut_ptr(), ready.len() as i32, 0) };
}

/// The threads of `pid`, `pid` first. A perf event follows one thread (and what it creates
/// later), so a process that already has threads needs one per thread.
fn process_threads(pid: u32) -> Result<Vec<i32>> {
    let main = i32::try_from(pid).map_err(|_| anyhow!("process id {pid} is out of range"))?;
    let mut tasks = vec![main];
    // Unreadable: the process is gone or /proc is missing; perf_event_open will say which.
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        let tids = dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok());
        tasks.extend(tids.filter(|&tid| tid != main));
    }
    Ok(tasks)
}

/// What failed, for errors: `target` is "" for the whole machine, else " of process N".
fn open_failure(what: &str, target: &str, cpu: u32) -> String {
    format!("perf_event_open for {what}{target} on CPU {cpu}")
}

/// Opens the event for a secondary thread and points its output at the CPU's buffer. A thread
/// that exited meanwhile is no error: there is nothing left to watch.
fn open_thread_event(
    what: &str,
    attr: &PerfEventAttr,
    tid: i32,
    cpu: u32,
    leader: BorrowedFd<'_>,
) -> Result<Option<OwnedFd>> {
    let event = match open_event(attr, tid, cpu) {
        Ok(event) => event,
        Err(err) if err.raw_os_error() == Some(libc::ESRCH) => return Ok(None),
        Err(err) => {
            return Err(anyhow::Error::new(err).context(open_failure(
                what,
                &format!(" of thread {tid}"),
                cpu,
            )))
        }
    };
    // SAFETY: both descriptors are open perf events; the ioctl takes an fd number as argument.
    let rc = unsafe {
        libc::ioctl(
            event.as_raw_fd(),
            PERF_EVENT_IOC_SET_OUTPUT as _,
            leader.as_raw_fd(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error()).with_context(|| {
            format!("redirecting the mapping records of thread {tid} to the CPU {cpu} buffer")
        });
    }
    Ok(Some(event))
}

fn open_event(attr: &PerfEventAttr, pid: i32, cpu: u32) -> io::Result<OwnedFd> {
    let cpu = libc::c_int::try_from(cpu).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: attr is a valid perf_event_attr whose size field matches its layout; the kernel
    // only reads it.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr as *const PerfEventAttr,
            pid as libc::pid_t,
            cpu,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// One CPU's mmap'ed perf ring buffer: a metadata page, then the data pages.
struct RingBuffer {
    base: *mut u8,
    map_len: usize,
    data_offset: usize,
    data_size: u64,
}

// SAFETY: the mapping is owned by this value alone and only touched through &mut self.
unsafe impl Send for RingBuffer {}

impl RingBuffer {
    fn map(fd: BorrowedFd<'_>, cpu: u32, data_pages: usize) -> Result<Self> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .context("querying the page size")?;
        let map_len = page * (1 + data_pages);
        // SAFETY: a fresh shared mapping of a perf event fd; the kernel validates the length.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error()).with_context(|| {
                format!("mapping the perf ring buffer of CPU {cpu} ({map_len} bytes)")
            });
        }
        let mut buffer = Self {
            base: base.cast(),
            map_len,
            data_offset: page,
            data_size: (page * data_pages) as u64,
        };
        // Kernels since 4.1 say where the data is; older ones put it right after the page.
        let (offset, size) = (
            buffer.meta(DATA_OFFSET_OFFSET),
            buffer.meta(DATA_SIZE_OFFSET),
        );
        let (offset, size) = (offset.load(Ordering::Relaxed), size.load(Ordering::Relaxed));
        if size != 0 && usize::try_from(offset.saturating_add(size)).is_ok_and(|e| e <= map_len) {
            buffer.data_offset = offset as usize;
            buffer.data_size = size;
        }
        Ok(buffer)
    }

    /// A u64 field of the metadata page, shared with the kernel.
    fn meta(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: offset is one of the DATA_* field offsets, 8-aligned and inside the
        // page-aligned metadata page, which lives as long as self.
        unsafe { AtomicU64::from_ptr(self.base.add(offset).cast()) }
    }

    /// Copies out every byte the kernel has published and hands the space back to it.
    fn take(&mut self) -> Vec<u8> {
        // Acquire: the record bytes below data_head are visible once we see data_head.
        let head = self.meta(DATA_HEAD_OFFSET).load(Ordering::Acquire);
        let tail = self.meta(DATA_TAIL_OFFSET).load(Ordering::Relaxed);
        let available = head.wrapping_sub(tail);
        let mut bytes = Vec::new();
        // More than the buffer holds means the positions are nonsense: drop it all.
        if available <= self.data_size {
            let start = tail % self.data_size;
            let first = available.min(self.data_size - start);
            self.copy_out(start, first, &mut bytes);
            self.copy_out(0, available - first, &mut bytes);
        }
        // Release: we are done reading the bytes before the kernel may overwrite them.
        self.meta(DATA_TAIL_OFFSET).store(head, Ordering::Release);
        bytes
    }

    /// Appends `len` data bytes from `start` (both within the data area) to `out`.
    fn copy_out(&self, start: u64, len: u64, out: &mut Vec<u8>) {
        let (start, len) = (start as usize, len as usize);
        out.reserve(len);
        // SAFETY: start + len <= data_size, so the range lies in the mapping; the kernel does
        // not write between tail and head until we move the tail, and `out` has room for len.
        unsafe {
            let from = self.base.add(self.data_offset + start);
            std::ptr::copy_nonoverlapping(from, out.as_mut_ptr().add(out.len()), len);
            out.set_len(out.len() + len);
        }
    }
}

impl Drop for RingBuffer {
    fn drop(&mut self) {
        // SAFETY: base/map_len are exactly what mmap returned, and nothing borrows them past
        // this point.
        unsafe { libc::munmap(self.base.cast(), self.map_len) };
    }
}

/// What one perf buffer record means to us: a mapping or exec, or records the kernel lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PerfRecord {
    Record(MmapRecord),
    Lost(u64),
}

/// Hands the records to `sink` in time order and returns the lost-record count.
pub fn deliver(mut events: Vec<(u64, PerfRecord)>, sink: &mut dyn FnMut(MmapRecord)) -> u64 {
    // Stable, so records with equal times keep their order within a buffer.
    events.sort_by_key(|&(time, _)| time);
    let mut lost = 0u64;
    for (_, event) in events {
        match event {
            PerfRecord::Record(record) => sink(record),
            PerfRecord::Lost(count) => lost = lost.saturating_add(count),
        }
    }
    lost
}

/// The records in a run of buffer bytes, each with its time. Stops at the first header that
/// cannot be right, since nothing after it can be found reliably.
pub fn parse_records(bytes: &[u8]) -> Vec<(u64, PerfRecord)> {
    let mut events = Vec::new();
    let mut rest = bytes;
    while let (Some(kind), Some(misc), Some(size)) =
        (u32_at(rest, 0), u16_at(rest, 4), u16_at(rest, 6))
    {
        let size = usize::from(size);
        if size < HEADER_LEN || size > rest.len() {
            break;
        }
        events.extend(parse_record(kind, misc, &rest[HEADER_LEN..size]));
        rest = &rest[size..];
    }
    events
}

/// One record's payload (after the header, sample_id tail included), if it is one we want.
fn parse_record(kind: u32, misc: u16, payload: &[u8]) -> Option<(u64, PerfRecord)> {
    let body_len = payload.len().checked_sub(SAMPLE_ID_LEN)?;
    let (body, sample_id) = payload.split_at(body_len);
    let time = u64_at(sample_id, 8)?;
    let event = match kind {
        PERF_RECORD_MMAP2 => PerfRecord::Record(MmapRecord::Mapping(parse_mmap2(misc, body)?)),
        PERF_RECORD_COMM => PerfRecord::Record(parse_comm_exec(misc, body)?),
        PERF_RECORD_LOST => PerfRecord::Lost(u64_at(body, 8)?),
        _ => return None,
    };
    Some((time, event))
}

/// PERF_RECORD_MMAP2 body; None unless it maps executable code or shared memory.
fn parse_mmap2(misc: u16, body: &[u8]) -> Option<NewMapping> {
    let (prot, flags) = (u32_at(body, 56)?, u32_at(body, 60)?);
    let kind = if prot & libc::PROT_EXEC as u32 != 0 {
        MappingKind::Code
    } else if flags & libc::MAP_SHARED as u32 != 0 {
        MappingKind::Shared
    } else {
        return None;
    };
    let start = u64_at(body, 8)?;
    // With a build id in place of device and inode, those are unknown.
    let (dev_major, dev_minor, inode) = if misc & PERF_RECORD_MISC_MMAP_BUILD_ID != 0 {
        (0, 0, 0)
    } else {
        (u32_at(body, 32)?, u32_at(body, 36)?, u64_at(body, 40)?)
    };
    Some(NewMapping {
        kind,
        pid: u32_at(body, 0)?,
        start,
        end: start.checked_add(u64_at(body, 16)?)?,
        offset: u64_at(body, 24)?,
        dev_major,
        dev_minor,
        inode,
        path: c_string_at(body, 64)?,
    })
}

/// PERF_RECORD_COMM body; None unless it is an exec by the process's main thread.
fn parse_comm_exec(misc: u16, body: &[u8]) -> Option<MmapRecord> {
    if misc & PERF_RECORD_MISC_COMM_EXEC == 0 {
        return None;
    }
    let pid = u32_at(body, 0)?;
    if u32_at(body, 4)? != pid {
        return None;
    }
    Some(MmapRecord::Exec {
        pid,
        comm: c_string_at(body, 8)?,
    })
}

fn u16_at(bytes: &[u8], offset: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(
        bytes.get(offset..offset + 2)?.try_into().ok()?,
    ))
}

fn u32_at(bytes: &[u8], offset: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(
        bytes.get(offset..offset + 4)?.try_into().ok()?,
    ))
}

fn u64_at(bytes: &[u8], offset: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(
        bytes.get(offset..offset + 8)?.try_into().ok()?,
    ))
}

/// The NUL-terminated string at `offset`; None if it is not terminated.
fn c_string_at(bytes: &[u8], offset: usize) -> Option<String> {
    let text = bytes.get(offset..)?;
    let len = text.iter().position(|&byte| byte == 0)?;
    Some(String::from_utf8_lossy(&text[..len]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::memory_maps::TestSharedMemory;

    use std::io::Write;
    use std::os::unix::fs::MetadataExt;
    use std::process::{Command, Stdio};

    /// A record as the kernel writes it: header, body padded to 8 bytes, sample_id tail.
    fn record(kind: u32, misc: u16, body: &[u8], pid: u32, time: u64) -> Vec<u8> {
        let mut body = body.to_vec();
        body.resize(body.len().next_multiple_of(8), 0);
        let size = (HEADER_LEN + body.len() + SAMPLE_ID_LEN) as u16;
        let mut out = Vec::new();
        out.extend(kind.to_ne_bytes());
        out.extend(misc.to_ne_bytes());
        out.extend(size.to_ne_bytes());
        out.extend(body);
        out.extend(pid.to_ne_bytes());
        out.extend(pid.to_ne_bytes());
        out.extend(time.to_ne_bytes());
        out
    }

    fn mmap2_body(pid: u32, tid: u32, prot: u32, path: &str) -> Vec<u8> {
        mmap2_body_with_flags(pid, tid, prot, libc::MAP_PRIVATE as u32, path)
    }

    fn mmap2_body_with_flags(pid: u32, tid: u32, prot: u32, flags: u32, path: &str) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend(pid.to_ne_bytes());
        body.extend(tid.to_ne_bytes());
        body.extend(0x7f00_0000_1000u64.to_ne_bytes()); // addr
        body.extend(0x2000u64.to_ne_bytes()); // len
        body.extend(0x3000u64.to_ne_bytes()); // pgoff
        body.extend(254u32.to_ne_bytes()); // maj
        body.extend(1u32.to_ne_bytes()); // min
        body.extend(1234u64.to_ne_bytes()); // ino
        body.extend(7u64.to_ne_bytes()); // ino_generation
        body.extend(prot.to_ne_bytes());
        body.extend(flags.to_ne_bytes());
        body.extend(path.as_bytes());
        body.push(0);
        body
    }

    fn comm_body(pid: u32, tid: u32, comm: &str) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend(pid.to_ne_bytes());
        body.extend(tid.to_ne_bytes());
        body.extend(comm.as_bytes());
        body.push(0);
        body
    }

    const RX: u32 = (libc::PROT_READ | libc::PROT_EXEC) as u32;

    #[test]
    fn parses_mmap2_comm_and_lost() {
        let mut bytes = record(
            PERF_RECORD_MMAP2,
            2,
            &mmap2_body(42, 42, RX, "/lib/libc.so.6"),
            42,
            20,
        );
        bytes.extend(record(
            PERF_RECORD_COMM,
            PERF_RECORD_MISC_COMM_EXEC,
            &comm_body(42, 42, "true"),
            42,
            10,
        ));
        let mut lost = Vec::new();
        lost.extend(9u64.to_ne_bytes());
        lost.extend(5u64.to_ne_bytes());
        bytes.extend(record(PERF_RECORD_LOST, 0, &lost, 0, 15));
        let mapping = NewMapping {
            kind: MappingKind::Code,
            pid: 42,
            start: 0x7f00_0000_1000,
            end: 0x7f00_0000_3000,
            offset: 0x3000,
            dev_major: 254,
            dev_minor: 1,
            inode: 1234,
            path: "/lib/libc.so.6".into(),
        };
        let exec = MmapRecord::Exec {
            pid: 42,
            comm: "true".into(),
        };
        let events = parse_records(&bytes);
        assert_eq!(
            events,
            vec![
                (20, PerfRecord::Record(MmapRecord::Mapping(mapping.clone()))),
                (10, PerfRecord::Record(exec.clone())),
                (15, PerfRecord::Lost(5)),
            ]
        );
        let mut seen = Vec::new();
        assert_eq!(deliver(events, &mut |record| seen.push(record)), 5);
        assert_eq!(seen, vec![exec, MmapRecord::Mapping(mapping)]);
    }

    #[test]
    fn skips_records_we_do_not_want() {
        let data = record(PERF_RECORD_MMAP2, 0, &mmap2_body(1, 1, 1, "/data"), 1, 1);
        let thread = record(
            PERF_RECORD_COMM,
            PERF_RECORD_MISC_COMM_EXEC,
            &comm_body(1, 2, "x"),
            1,
            2,
        );
        let rename = record(PERF_RECORD_COMM, 0, &comm_body(1, 1, "x"), 1, 3);
        let other = record(1, 0, &[0; 40], 1, 4);
        let exec = record(
            PERF_RECORD_COMM,
            PERF_RECORD_MISC_COMM_EXEC,
            &comm_body(1, 1, "y"),
            1,
            5,
        );
        let bytes = [data, thread, rename, other, exec].concat();
        let events = parse_records(&bytes);
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].0, 5);
    }

    #[test]
    fn shared_data_mappings_are_kept_and_private_ones_skipped() {
        let rw = (libc::PROT_READ | libc::PROT_WRITE) as u32;
        let shared = libc::MAP_SHARED as u32;
        let bytes = [
            record(
                PERF_RECORD_MMAP2,
                0,
                &mmap2_body_with_flags(6, 6, rw, shared, "/dev/zero (deleted)"),
                6,
                1,
            ),
            record(PERF_RECORD_MMAP2, 0, &mmap2_body(6, 6, rw, "//anon"), 6, 2),
        ]
        .concat();
        let events = parse_records(&bytes);
        let [(1, PerfRecord::Record(MmapRecord::Mapping(mapping)))] = events.as_slice() else {
            panic!("{events:?}");
        };
        assert_eq!(mapping.kind, MappingKind::Shared);
        assert_eq!(mapping.path, "/dev/zero (deleted)");
    }

    #[test]
    fn build_id_mappings_have_no_device() {
        let bytes = record(
            PERF_RECORD_MMAP2,
            PERF_RECORD_MISC_MMAP_BUILD_ID,
            &mmap2_body(3, 3, RX, "/bin/x"),
            3,
            1,
        );
        let events = parse_records(&bytes);
        let [(_, PerfRecord::Record(MmapRecord::Mapping(mapping)))] = events.as_slice() else {
            panic!("{events:?}");
        };
        assert_eq!(
            (mapping.dev_major, mapping.dev_minor, mapping.inode),
            (0, 0, 0)
        );
        assert_eq!(mapping.path, "/bin/x");
    }

    #[test]
    fn malformed_buffers_yield_nothing_and_do_not_panic() {
        let good = record(PERF_RECORD_MMAP2, 0, &mmap2_body(5, 5, RX, "/bin/x"), 5, 1);
        // Every truncation of a valid record: the size runs past the data.
        for len in 0..good.len() {
            assert!(parse_records(&good[..len]).is_empty(), "len {len}");
        }
        // A size below the header length stops the walk before the good record behind it.
        let mut tiny = good.clone();
        tiny[6..8].copy_from_slice(&4u16.to_ne_bytes());
        tiny.extend(&good);
        assert!(parse_records(&tiny).is_empty());
        // A size too small for the body or the sample_id tail drops just that record.
        for size in (8..good.len()).step_by(8) {
            let mut short = good.clone();
            short[6..8].copy_from_slice(&(size as u16).to_ne_bytes());
            short.truncate(size);
            assert!(parse_records(&short).is_empty(), "size {size}");
        }
        // A path without its NUL.
        let mut body = mmap2_body(5, 5, RX, "/bin/xyz");
        body.pop();
        let unterminated = [
            PERF_RECORD_MMAP2.to_ne_bytes().as_slice(),
            &0u16.to_ne_bytes(),
            &((HEADER_LEN + body.len() + SAMPLE_ID_LEN) as u16).to_ne_bytes(),
            &body,
            &[0; SAMPLE_ID_LEN],
        ]
        .concat();
        assert!(parse_records(&unterminated).is_empty());
        // Garbage: a fixed pseudo-random byte stream.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let garbage: Vec<u8> = (0..4096)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        for start in 0..64 {
            parse_records(&garbage[start..]);
        }
    }

    fn read_all(watch: &mut MappingRecords) -> Vec<MmapRecord> {
        let mut records = Vec::new();
        watch.read(&mut |record| records.push(record));
        records
    }

    #[test]
    fn sees_an_executable_mapping_of_this_process() {
        let mut watch = MappingRecords::open(MappingScope::Process(std::process::id())).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("true-copy");
        std::fs::copy("/bin/true", &path).unwrap();
        let path = path.canonicalize().unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let meta = file.metadata().unwrap();
        let len = meta.len() as usize;
        // SAFETY: a fresh private read-only mapping of a file we own; unmapped below.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_EXEC,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(addr, libc::MAP_FAILED);
        let records = read_all(&mut watch);
        // SAFETY: exactly the mapping made above.
        unsafe { libc::munmap(addr, len) };

        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
        let expected = NewMapping {
            kind: MappingKind::Code,
            pid: std::process::id(),
            start: addr as u64,
            end: addr as u64 + (len as u64).next_multiple_of(page),
            offset: 0,
            dev_major: libc::major(meta.dev()),
            dev_minor: libc::minor(meta.dev()),
            inode: meta.ino(),
            path: path.to_string_lossy().into_owned(),
        };
        assert!(
            records.contains(&MmapRecord::Mapping(expected.clone())),
            "want {expected:?} in {records:?}"
        );
    }

    /// Shared anonymous memory and a System V segment mapped by this process are reported
    /// with the names /proc/PID/maps gives them (the region they are counted in).
    #[test]
    fn sees_shared_memory_mappings_of_this_process() {
        let mut watch = MappingRecords::open(MappingScope::Process(std::process::id())).unwrap();
        let len = 4 * 4096;
        let memory = TestSharedMemory::map(len);
        let records = read_all(&mut watch);
        let (shared, segment, shmid) = (memory.shared, memory.segment, memory.shmid);
        let reported = |start: *mut libc::c_void| {
            records.iter().find_map(|record| match record {
                MmapRecord::Mapping(mapping) if mapping.start == start as u64 => Some(mapping),
                _ => None,
            })
        };
        let shared = reported(shared).unwrap_or_else(|| panic!("no shared mapping in {records:?}"));
        assert_eq!(
            (shared.kind, shared.path.as_str(), shared.end - shared.start),
            (MappingKind::Shared, "/dev/zero (deleted)", len as u64)
        );
        let segment = reported(segment).unwrap_or_else(|| panic!("no segment in {records:?}"));
        assert_eq!(
            (segment.kind, segment.path.as_str(), segment.inode),
            (MappingKind::Shared, "/SYSV00000000 (deleted)", shmid as u64)
        );
    }

    /// Runs `script` in a shell that waits for a line first, so the watch opens before it
    /// goes on; returns the shell's pid and the watch's records.
    fn run_shell(script: &str, scope: impl FnOnce(u32) -> MappingScope) -> (u32, Vec<MmapRecord>) {
        let mut child = Command::new("sh")
            .args(["-c", &format!("read x; {script}")])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut watch = MappingRecords::open(scope(pid)).unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"\n").unwrap();
        drop(stdin);
        assert!(child.wait().unwrap().success());
        (pid, read_all(&mut watch))
    }

    fn of_pid(pid: u32, records: Vec<MmapRecord>) -> Vec<MmapRecord> {
        let own = |record: &MmapRecord| match record {
            MmapRecord::Mapping(mapping) => mapping.pid == pid,
            MmapRecord::Exec { pid: exec_pid, .. } => *exec_pid == pid,
        };
        records.into_iter().filter(own).collect()
    }

    /// The exec of `true` comes first, then libc.so.6 among the mappings after it.
    fn assert_exec_then_libc(pid: u32, records: &[MmapRecord]) {
        let exec = MmapRecord::Exec {
            pid,
            comm: "true".into(),
        };
        let at = records
            .iter()
            .position(|record| *record == exec)
            .unwrap_or_else(|| panic!("no exec of true in {records:#?}"));
        let libc_mapped = records[at..].iter().any(|record| {
            matches!(record, MmapRecord::Mapping(mapping) if mapping.path.ends_with("libc.so.6"))
        });
        assert!(libc_mapped, "no libc.so.6 after the exec in {records:#?}");
    }

    #[test]
    fn sees_exec_and_libc_of_a_child() {
        let (pid, records) = run_shell("exec /bin/true", MappingScope::Process);
        assert_exec_then_libc(pid, &of_pid(pid, records));
    }

    #[test]
    fn system_scope_sees_exec_and_libc_of_a_child() {
        let (pid, records) = run_shell("exec /bin/true", |_| MappingScope::System);
        assert_exec_then_libc(pid, &of_pid(pid, records));
    }

    #[test]
    fn process_scope_follows_forks() {
        // The shell forks for /bin/true (not the last command), so it runs in a new process.
        let (shell, records) = run_shell("/bin/true; exit 0", MappingScope::Process);
        let forked = records.iter().find_map(|record| match record {
            MmapRecord::Exec { pid, comm } if comm == "true" && *pid != shell => Some(*pid),
            _ => None,
        });
        let forked = forked.unwrap_or_else(|| panic!("no exec of true in {records:#?}"));
        assert_exec_then_libc(forked, &of_pid(forked, records));
    }

    #[test]
    fn open_errors_say_what_failed() {
        // pid_max is at most 2^22, so this process cannot exist.
        let err = MappingRecords::open(MappingScope::Process(0x7fff_fff0))
            .err()
            .unwrap();
        let text = format!("{err:#}");
        assert!(
            text.starts_with(
                "perf_event_open for executable mappings of process 2147483632 on CPU "
            ) && text.ends_with("No such process (os error 3)"),
            "{text}"
        );
    }
}
