//! Every decoder of ring-buffer records, on arbitrary bytes: memtrace's own records
//! (`StackEvent`s, OOM kills, process exits) and the kernel's perf records of executable
//! mappings and execs. Malformed records must decode to nothing, never panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use memtrace::{
    kernel::gfp::GfpNames,
    trace::{
        mapping_records::{deliver, parse_records, MmapRecord},
        records::{comm_to_string, decode_record, Event, Record},
    },
};
use memtrace_common::{AllocFn, EventKind, OomKill, PageDetail, ProcessExit};

fuzz_target!(|data: &[u8]| {
    // As the drain decodes every record (drain.rs), then consumers read its fields.
    if let Some(Record::Event(event)) = Record::decode(data) {
        let _ = event.comm();
    }
    if let Some(event) = Event::decode(data) {
        let _ = event.comm();
        let _ = AllocFn::from_raw(event.raw.detail).map(AllocFn::name);
        let _ = PageDetail::unpack(event.raw.detail).pack();
        if event.kind == EventKind::PageAlloc {
            static GFP: OnceLock<GfpNames> = OnceLock::new();
            let _ = GFP.get_or_init(GfpNames::builtin).decode(event.raw.addr);
        }
    }
    // The records of their own types, as Record::decode takes them.
    if let Some(kill) = decode_record::<OomKill>(data, EventKind::OomKill) {
        let _ = comm_to_string(&kill.comm);
    }
    if let Some(exit) = decode_record::<ProcessExit>(data, EventKind::ProcessExit) {
        let _ = comm_to_string(&exit.comm);
    }
    // A run of perf ring-buffer bytes (mapping_records.rs), delivered as MappingRecords::read does.
    let mut records = 0usize;
    deliver(parse_records(data), &mut |record| {
        if let MmapRecord::Mapping(mapping) = record {
            assert!(mapping.start <= mapping.end);
        }
        records += 1;
    });
});
