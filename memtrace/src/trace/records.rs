//! Decoding ring-buffer records. Records come from the kernel but are checked anyway: a record
//! of the wrong size or an unknown kind is skipped and counted, never trusted. Fields are read
//! in order with `bytes::Buf`, so decoding needs no unsafe code and cannot read past the end.
use bytes::Buf;
use memtrace_common::{EventKind, OomKill, ProcessExit, StackEvent, COMM_LEN};

/// A ring-buffer record, decoded once, by the drain, for every consumer.
#[derive(Debug, Clone, Copy)]
pub enum Record {
    /// A fault, a heap block allocated or freed, a page allocation; or a fork or exec, which
    /// the drain applies to what it knows of processes and does not pass on.
    Event(Event),
    /// The OOM killer chose a victim.
    OomKill(OomKill),
    /// A process ended, with its lifetime fault counts.
    ProcessExit(ProcessExit),
}

impl Record {
    /// The record in `bytes`, by the kind it starts with; None for a record that is short or
    /// of no known kind.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let kind = EventKind::from_raw(u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?))?;
        match kind {
            EventKind::OomKill => decode_record(bytes, kind).map(Self::OomKill),
            EventKind::ProcessExit => decode_record(bytes, kind).map(Self::ProcessExit),
            _ => Event::decode(bytes).map(Self::Event),
        }
    }
}

/// A decoded record.
#[derive(Debug, Clone, Copy)]
pub struct Event {
    pub kind: EventKind,
    pub raw: StackEvent,
}

/// A ring-buffer record of its own type (not a `StackEvent`), if `bytes` is one of `kind`:
/// such records start with their kind, as every record does.
pub fn decode_record<T: aya::Pod>(bytes: &[u8], kind: EventKind) -> Option<T> {
    if bytes.len() < std::mem::size_of::<T>() {
        return None;
    }
    let raw = u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?);
    if EventKind::from_raw(raw) != Some(kind) {
        return None;
    }
    // SAFETY: the length was checked; T is plain data (Pod), valid for any bit pattern.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

impl Event {
    pub fn decode(mut bytes: &[u8]) -> Option<Self> {
        if bytes.len() < std::mem::size_of::<StackEvent>() {
            return None;
        }
        // Native byte order and the #[repr(C)] field order of StackEvent.
        let mut raw = StackEvent {
            kind: bytes.get_u32_ne(),
            tgid: bytes.get_u32_ne(),
            tid: bytes.get_u32_ne(),
            kernel_stack_id: bytes.get_i32_ne(),
            file_dev: bytes.get_u32_ne(),
            detail: bytes.get_u32_ne(),
            user_stack: bytes.get_u64_ne(),
            addr: bytes.get_u64_ne(),
            file_ino: bytes.get_u64_ne(),
            weight: bytes.get_u64_ne(),
            time_ns: bytes.get_u64_ne(),
            comm: [0; COMM_LEN],
        };
        bytes.copy_to_slice(&mut raw.comm);
        Some(Self {
            kind: EventKind::from_raw(raw.kind)?,
            raw,
        })
    }

    pub fn comm(&self) -> String {
        comm_to_string(&self.raw.comm)
    }
}

pub fn comm_to_string(comm: &[u8]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: u32) -> Vec<u8> {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"test");
        let event = StackEvent {
            kind,
            tgid: 7,
            tid: 8,
            kernel_stack_id: -14,
            file_dev: 0,
            detail: 0,
            user_stack: 3,
            addr: 0x1000,
            file_ino: 0,
            weight: 1,
            time_ns: 0,
            comm,
        };
        let bytes: &[u8] = unsafe {
            std::slice::from_raw_parts(
                (&event as *const StackEvent).cast(),
                std::mem::size_of::<StackEvent>(),
            )
        };
        bytes.to_vec()
    }

    #[test]
    fn decodes_a_fault() {
        let event = Event::decode(&record(1)).unwrap();
        assert_eq!(event.kind, EventKind::MinorFault);
        assert_eq!(
            (event.raw.tgid, event.raw.addr, event.raw.user_stack),
            (7, 0x1000, 3)
        );
        assert_eq!(event.raw.kernel_stack_id, -14);
        assert_eq!(event.comm(), "test");
    }

    #[test]
    fn records_decode_by_their_kind() {
        assert!(
            matches!(Record::decode(&record(2)), Some(Record::Event(e)) if e.kind == EventKind::MajorFault)
        );
        let kill = OomKill {
            kind: EventKind::OomKill as u32,
            pid: 42,
            ..OomKill::default()
        };
        // SAFETY: OomKill is plain #[repr(C)] data.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&kill as *const OomKill).cast::<u8>(),
                std::mem::size_of::<OomKill>(),
            )
        };
        assert!(matches!(Record::decode(bytes), Some(Record::OomKill(k)) if k.pid == 42));
        assert!(Record::decode(&bytes[..20]).is_none());
        assert!(Record::decode(&record(99)).is_none());
        assert!(Record::decode(&[1, 0]).is_none());
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        assert!(Event::decode(&record(1)[..20]).is_none());
        assert!(Event::decode(&record(99)).is_none());
        assert!(Event::decode(&[]).is_none());
    }
}
