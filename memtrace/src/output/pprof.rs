//! gzip'd pprof protobuf (github.com/google/pprof, proto/profile.proto), for `go tool pprof`,
//! Grafana Pyroscope and the other tools that read it.
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::Arc;

use flate2::{write::GzEncoder, Compression};
use prost::Message;

use super::profile::StackProfile;
use crate::report::{CodeFile, CodeMapping, Frame, SourceLine};

/// Writes all stacks as one pprof profile: the report's sample type ("faults" counts, or
/// "space" bytes), one sample per stack, labelled with pid, comm and kind. User frames from
/// files carry their mapping (file, build id, addresses), so a server can symbolize them too.
pub fn write(report: &dyn StackProfile, out: &mut dyn Write) -> anyhow::Result<()> {
    let profile = Builder::default().build(report);
    let mut gz = GzEncoder::new(out, Compression::default());
    gz.write_all(&profile.encode_to_vec())?;
    gz.finish()?;
    Ok(())
}

// The messages of profile.proto this sink uses, with its field numbers. Fields left out are
// skipped by readers; prost decodes unknown ones without error.

#[derive(Clone, PartialEq, prost::Message)]
pub struct Profile {
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    pub mapping: Vec<Mapping>,
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    /// Every string the profile refers to is an index here; index 0 is "".
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    #[prost(int64, tag = "7")]
    pub drop_frames: i64,
    #[prost(int64, tag = "8")]
    pub keep_frames: i64,
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    #[prost(int64, tag = "10")]
    pub duration_nanos: i64,
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    #[prost(int64, tag = "12")]
    pub period: i64,
    #[prost(int64, repeated, tag = "13")]
    pub comment: Vec<i64>,
    #[prost(int64, tag = "14")]
    pub default_sample_type: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueType {
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    /// Leaf first.
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
    #[prost(message, repeated, tag = "3")]
    pub label: Vec<Label>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    #[prost(int64, tag = "1")]
    pub key: i64,
    #[prost(int64, tag = "2")]
    pub str: i64,
    #[prost(int64, tag = "3")]
    pub num: i64,
    #[prost(int64, tag = "4")]
    pub num_unit: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Mapping {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub memory_start: u64,
    #[prost(uint64, tag = "3")]
    pub memory_limit: u64,
    #[prost(uint64, tag = "4")]
    pub file_offset: u64,
    #[prost(int64, tag = "5")]
    pub filename: i64,
    #[prost(int64, tag = "6")]
    pub build_id: i64,
    #[prost(bool, tag = "7")]
    pub has_functions: bool,
    #[prost(bool, tag = "8")]
    pub has_filenames: bool,
    #[prost(bool, tag = "9")]
    pub has_line_numbers: bool,
    #[prost(bool, tag = "10")]
    pub has_inline_frames: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Location {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub mapping_id: u64,
    #[prost(uint64, tag = "3")]
    pub address: u64,
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
    #[prost(bool, tag = "5")]
    pub is_folded: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Line {
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    #[prost(int64, tag = "2")]
    pub line: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Function {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(int64, tag = "2")]
    pub name: i64,
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    #[prost(int64, tag = "4")]
    pub filename: i64,
    #[prost(int64, tag = "5")]
    pub start_line: i64,
}

/// Interns strings, functions, mappings and locations so each distinct one is stored once.
#[derive(Default)]
struct Builder {
    profile: Profile,
    strings: HashMap<String, i64>,
    /// (name, module) -> function id.
    functions: HashMap<(String, String), u64>,
    /// Frames without a file mapping: (module, name, address) -> location id.
    locations: HashMap<(String, String, u64), u64>,
    /// Python frames: (file, function, line) -> location id.
    source_locations: HashMap<(String, String, u64), u64>,
    /// Frames in a file mapping: (mapping id, address) -> location id.
    mapped_locations: HashMap<(u64, u64), u64>,
    /// The mapping ids of each file.
    mappings: HashMap<Arc<CodeFile>, Vec<u64>>,
    /// Mappings with a location memtrace could not name (they are not `has_functions`).
    unnamed: HashSet<u64>,
}

impl Builder {
    fn build(mut self, report: &dyn StackProfile) -> Profile {
        self.string(""); // index 0 must be the empty string
        let (kind, unit) = report.sample_type();
        self.profile.period_type = Some(self.value_type(kind, unit));
        self.profile.sample_type = (report.value_types().into_iter())
            .map(|(kind, unit)| self.value_type(kind, unit))
            .collect();
        if let Some(default) = report.default_value_type() {
            self.profile.default_sample_type = self.string(default);
        }
        self.profile.period = report.period() as i64;
        self.profile.duration_nanos = (report.duration_s() * 1e9) as i64;
        let mut comments = vec![format!(
            "memtrace {}: {}",
            report.command(),
            report.target()
        )];
        if report.lost_events() > 0 {
            comments.push(format!(
                "{} events lost: all figures are lower bounds",
                report.lost_events()
            ));
        }
        comments.extend(report.sampling_note());
        comments.extend((report.context().iter()).map(|(key, value)| format!("{key}: {value}")));
        self.profile.comment = comments.iter().map(|c| self.string(c)).collect();

        for (index, stack) in report.stacks().iter().enumerate() {
            // Leaf first: kernel frames are the innermost when there are any.
            let location_id = (stack.kernel_detail.iter().chain(&stack.user_detail))
                .map(|frame| self.location(frame))
                .collect();
            // pid 0: a stack summed over the processes of one name (the agent's profile).
            let pid = (stack.pid != 0).then(|| Label {
                key: self.string("pid"),
                num: stack.pid.into(),
                ..Default::default()
            });
            let label = pid
                .into_iter()
                .chain([
                    Label {
                        key: self.string("comm"),
                        str: self.string(&stack.comm),
                        ..Default::default()
                    },
                    Label {
                        key: self.string("kind"),
                        str: self.string(&stack.kind),
                        ..Default::default()
                    },
                ])
                .chain(report.context().iter().map(|(key, value)| Label {
                    key: self.string(key),
                    str: self.string(value),
                    ..Default::default()
                }))
                .collect();
            let value = (report.values(index).into_iter())
                .map(|value| i64::try_from(value).unwrap_or(i64::MAX))
                .collect();
            self.profile.sample.push(Sample {
                location_id,
                value,
                label,
            });
        }
        for mapping in &mut self.profile.mapping {
            mapping.has_functions = !self.unnamed.contains(&mapping.id);
        }
        self.profile
    }

    fn value_type(&mut self, kind: &str, unit: &str) -> ValueType {
        ValueType {
            r#type: self.string(kind),
            unit: self.string(unit),
        }
    }

    fn string(&mut self, s: &str) -> i64 {
        if let Some(&index) = self.strings.get(s) {
            return index;
        }
        let index = self.profile.string_table.len() as i64;
        self.profile.string_table.push(s.to_owned());
        self.strings.insert(s.to_owned(), index);
        index
    }

    fn location(&mut self, frame: &Frame) -> u64 {
        if let Some(mapping) = &frame.mapping {
            return self.mapped_location(frame, mapping);
        }
        if let (Some(function), Some(source)) = (&frame.function, &frame.source) {
            return self.source_location(function, source);
        }
        let name = frame.name();
        let module = frame.module.clone().unwrap_or_default();
        let key = (module.clone(), name.clone(), frame.address);
        if let Some(&id) = self.locations.get(&key) {
            return id;
        }
        let function_id = self.function(name, module);
        // No file mapping (kernel, vdso, anonymous code): named here or not at all.
        let id = self.profile.location.len() as u64 + 1;
        self.profile.location.push(Location {
            id,
            address: frame.address,
            line: vec![Line {
                function_id,
                line: 0,
            }],
            ..Default::default()
        });
        self.locations.insert(key, id);
        id
    }

    /// A Python frame: its function in its source file, at its line (no address: the
    /// interpreter's code is not mapped code).
    fn source_location(&mut self, function: &str, source: &SourceLine) -> u64 {
        let line = source.line.unwrap_or(0);
        let key = (source.file.clone(), function.to_owned(), u64::from(line));
        if let Some(&id) = self.source_locations.get(&key) {
            return id;
        }
        let function_id = self.function(function.to_owned(), source.file.clone());
        let id = self.profile.location.len() as u64 + 1;
        self.profile.location.push(Location {
            id,
            line: vec![Line {
                function_id,
                line: i64::from(line),
            }],
            ..Default::default()
        });
        self.source_locations.insert(key, id);
        id
    }

    /// A frame in a file mapping: its location holds the mapping and the address (what a
    /// server symbolizes by), and the function memtrace named, if any.
    fn mapped_location(&mut self, frame: &Frame, mapping: &CodeMapping) -> u64 {
        let file_offset = mapping.file_offset(frame.address);
        let mapping_id = self.mapping(mapping, file_offset);
        let m = &self.profile.mapping[mapping_id as usize - 1];
        // In the mapping's own address space: the same code in another process (placed
        // elsewhere) is the same location, as pprof's own merge makes it.
        let address = m.memory_start + (file_offset - m.file_offset);
        if let Some(&id) = self.mapped_locations.get(&(mapping_id, address)) {
            return id;
        }
        let line = match &frame.function {
            Some(name) => {
                let module = frame.module.clone().unwrap_or_default();
                let function_id = self.function(name.clone(), module);
                vec![Line {
                    function_id,
                    line: 0,
                }]
            }
            // Left for the server to name from the file.
            None => {
                self.unnamed.insert(mapping_id);
                Vec::new()
            }
        };
        let id = self.profile.location.len() as u64 + 1;
        self.profile.location.push(Location {
            id,
            mapping_id,
            address,
            line,
            is_folded: false,
        });
        self.mapped_locations.insert((mapping_id, address), id);
        id
    }

    /// The profile's mapping of `mapping`'s file that covers `file_offset`: the first one a
    /// process showed (other processes map the same file elsewhere).
    fn mapping(&mut self, mapping: &CodeMapping, file_offset: u64) -> u64 {
        let ids = self.mappings.entry(Arc::clone(&mapping.file)).or_default();
        let covers = |m: &Mapping| {
            (m.file_offset..m.file_offset + m.memory_limit.saturating_sub(m.memory_start))
                .contains(&file_offset)
        };
        if let Some(&id) = (ids.iter()).find(|&&id| covers(&self.profile.mapping[id as usize - 1]))
        {
            return id;
        }
        let id = self.profile.mapping.len() as u64 + 1;
        ids.push(id);
        let filename = self.string(&mapping.file.path);
        let build_id = self.string(mapping.file.build_id.as_deref().unwrap_or_default());
        self.profile.mapping.push(Mapping {
            id,
            memory_start: mapping.start,
            memory_limit: mapping.end,
            file_offset: mapping.offset,
            filename,
            build_id,
            ..Default::default()
        });
        id
    }

    fn function(&mut self, name: String, module: String) -> u64 {
        let key = (name, module);
        if let Some(&id) = self.functions.get(&key) {
            return id;
        }
        let id = self.profile.function.len() as u64 + 1;
        let name = self.string(&key.0);
        let filename = self.string(&key.1);
        self.profile.function.push(Function {
            id,
            name,
            system_name: name,
            filename,
            start_line: 0,
        });
        self.functions.insert(key, id);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::profile::Reweighted;
    use crate::output::testdata;
    use crate::report::StackRow;
    use flate2::read::GzDecoder;
    use std::io::Read;

    fn decode(report: &Reweighted) -> Profile {
        let mut gz = Vec::new();
        write(report, &mut gz).unwrap();
        let mut raw = Vec::new();
        GzDecoder::new(&gz[..]).read_to_end(&mut raw).unwrap();
        Profile::decode(&raw[..]).unwrap()
    }

    #[test]
    fn python_frames_are_functions_in_their_files_at_their_lines() {
        let python = |function: &str, line| Frame {
            address: 0x7f00_1000,
            function: Some(function.to_owned()),
            offset: 0,
            module: None,
            mapping: None,
            source: Some(SourceLine {
                file: "/srv/app.py".to_owned(),
                line: Some(line),
            }),
        };
        let user = vec![
            testdata::frame(0x7f00_0000_1010, Some("malloc"), 0x10, "libc.so.6"),
            python("Cache.build", 42),
            python("main", 7),
            python("Cache.build", 43),
        ];
        let mut report = testdata::profile();
        report.rows = vec![StackRow::new(7, "python3".into(), "minor", 3, user, vec![])];
        let p = decode(&report);
        let s = |i: i64| p.string_table[i as usize].as_str();
        let lines: Vec<(&str, &str, i64)> = p.sample[0]
            .location_id
            .iter()
            .map(|&id| {
                let line = &p.location[id as usize - 1].line[0];
                let function = &p.function[line.function_id as usize - 1];
                (s(function.name), s(function.filename), line.line)
            })
            .collect();
        assert_eq!(
            lines,
            [
                ("malloc", "libc.so.6", 0),
                ("Cache.build", "/srv/app.py", 42),
                ("main", "/srv/app.py", 7),
                ("Cache.build", "/srv/app.py", 43),
            ]
        );
        // One function per Python function, one location per line.
        assert_eq!(p.function.len(), 3);
        assert_eq!(p.location.len(), 4);
    }

    #[test]
    fn round_trips() {
        let report = testdata::profile();
        let p = decode(&report);
        let s = |i: i64| p.string_table[i as usize].as_str();
        assert_eq!(p.string_table[0], "");
        assert_eq!(
            (s(p.sample_type[0].r#type), s(p.sample_type[0].unit)),
            ("faults", "count")
        );
        assert_eq!(p.duration_nanos, 2_000_000_000);
        assert_eq!(p.period, 1);

        let values: Vec<i64> = p.sample.iter().map(|x| x.value[0]).collect();
        assert_eq!(values, [39000, 1000, 10, 5, 2]);

        // Leaf first, kernel before user; names and modules come back.
        let function_of = |location_id: u64| {
            let location = &p.location[location_id as usize - 1];
            assert_eq!(location.id, location_id);
            let function = &p.function[location.line[0].function_id as usize - 1];
            (s(function.name), s(function.filename))
        };
        let names: Vec<_> = p.sample[0]
            .location_id
            .iter()
            .map(|&id| function_of(id).0)
            .collect();
        assert_eq!(
            names,
            [
                "handle_mm_fault",
                "exc_page_fault",
                "memset",
                "fill_buffer",
                "main"
            ]
        );
        assert_eq!(
            function_of(p.sample[3].location_id[0]),
            ("worker+0x1234", "worker")
        );

        // Same frames share locations; pids 124 and 125 share theirs.
        assert_eq!(p.sample[2].location_id, p.sample[3].location_id);
        assert_eq!(p.location.len(), 2 + 3 + 2);
        assert_eq!(p.function.len(), p.location.len());

        let labels: Vec<_> = p.sample[4]
            .label
            .iter()
            .map(|l| {
                (
                    s(l.key).to_owned(),
                    if l.str != 0 {
                        s(l.str).to_owned()
                    } else {
                        l.num.to_string()
                    },
                )
            })
            .collect();
        assert_eq!(
            labels,
            [
                ("pid".into(), "123".into()),
                ("comm".into(), "server".into()),
                ("kind".into(), "major".into())
            ]
        );
    }

    /// `function` (None: not named) at `address` in a process that maps `file`'s text (file
    /// offset 0x1000) at `base`.
    fn mapped(file: &Arc<CodeFile>, base: u64, address: u64, function: Option<&str>) -> Frame {
        let mut frame = testdata::frame(address, function, 0x4, "server");
        frame.mapping = Some(CodeMapping {
            start: base,
            end: base + 0x2000,
            offset: 0x1000,
            file: Arc::clone(file),
        });
        frame
    }

    #[test]
    fn frames_in_files_carry_their_mapping() {
        let server = Arc::new(CodeFile {
            path: "/usr/bin/server".to_owned(),
            build_id: Some("a50d6825".to_owned()),
        });
        let libc = Arc::new(CodeFile {
            path: "/usr/lib/libc.so.6".to_owned(),
            build_id: None,
        });
        let mut report = testdata::profile();
        // The same code in two processes, each placing the file elsewhere.
        let (a, b) = (0x5555_0000_0000, 0x5600_0000_0000);
        report.rows = vec![
            StackRow::new(
                1,
                "server".into(),
                "minor",
                3,
                vec![
                    mapped(&server, a, a + 0x10, Some("touch")),
                    mapped(&libc, 0x7f00_0000_0000, 0x7f00_0000_0040, None),
                ],
                vec![],
            ),
            StackRow::new(
                2,
                "server".into(),
                "minor",
                5,
                vec![mapped(&server, b, b + 0x10, Some("touch"))],
                vec![],
            ),
        ];
        let p = decode(&report);
        let s = |i: i64| p.string_table[i as usize].as_str();
        assert_eq!(p.mapping.len(), 2);
        let server_mapping = &p.mapping[0];
        assert_eq!(
            (s(server_mapping.filename), s(server_mapping.build_id)),
            ("/usr/bin/server", "a50d6825")
        );
        assert_eq!(
            (
                server_mapping.memory_start,
                server_mapping.memory_limit,
                server_mapping.file_offset
            ),
            (a, a + 0x2000, 0x1000)
        );
        assert!(server_mapping.has_functions);
        // One location for both processes, at the first one's address.
        assert_eq!(p.sample[0].location_id[0], p.sample[1].location_id[0]);
        let touch = &p.location[p.sample[0].location_id[0] as usize - 1];
        assert_eq!((touch.mapping_id, touch.address), (1, a + 0x10));
        assert_eq!(
            s(p.function[touch.line[0].function_id as usize - 1].name),
            "touch"
        );
        // Not named: a mapping and an address for the server to name, no function.
        let unnamed = &p.location[p.sample[0].location_id[1] as usize - 1];
        assert_eq!((unnamed.mapping_id, unnamed.address), (2, 0x7f00_0000_0040));
        assert!(unnamed.line.is_empty());
        assert_eq!(
            (s(p.mapping[1].build_id), p.mapping[1].has_functions),
            ("", false)
        );
    }

    #[test]
    fn empty_report_is_a_valid_profile() {
        let mut report = testdata::profile();
        report.rows.clear();
        let p = decode(&report);
        assert_eq!(p.string_table[0], "");
        assert!(p.sample.is_empty());
    }
}
