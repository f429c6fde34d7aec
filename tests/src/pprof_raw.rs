//! A pprof profile as `go tool pprof -raw -symbolize=none` reads it: Go's own parser is the
//! oracle for what a profile says, and `-symbolize=none` keeps it from naming frames itself
//! (from the binaries on this machine), so the names are the profile's.
use std::{collections::HashMap, path::Path};

/// One sample: its values (`value` the first), its locations (innermost first) and its labels
/// line.
#[derive(Debug, Clone)]
pub struct RawSample {
    pub value: i64,
    /// One per sample type, in the profile's order.
    pub values: Vec<i64>,
    pub locations: Vec<u64>,
    /// As Go prints them: `comm:[redis-server] kind:[minor] pid:[7]`.
    pub labels: String,
}

impl RawSample {
    /// The value of string label `key`, if any.
    pub fn label(&self, key: &str) -> Option<&str> {
        let start = self.labels.find(&format!("{key}:["))? + key.len() + 2;
        let len = self.labels[start..].find(']')?;
        Some(&self.labels[start..start + len])
    }
}

#[derive(Debug, Clone)]
pub struct RawLocation {
    pub address: u64,
    pub mapping: Option<u64>,
    /// The first line's function; None when the location has no line (not symbolized).
    pub function: Option<String>,
    /// The function's file name (memtrace puts the module there: `libc.so.6`, `[kernel]`;
    /// a Python function's source file).
    pub file: Option<String>,
    /// The first line's line number (0 when memtrace gives none).
    pub line: i64,
}

impl RawLocation {
    /// Kernel addresses are in the upper half (x86-64).
    pub fn is_kernel(&self) -> bool {
        self.address >= 0xffff_8000_0000_0000
    }
}

#[derive(Debug, Clone)]
pub struct RawMapping {
    pub start: u64,
    pub limit: u64,
    pub offset: u64,
    pub file: String,
    pub build_id: String,
}

impl RawMapping {
    /// Where `address` is in the mapped file, as a symbolizing server computes it.
    pub fn file_offset(&self, address: u64) -> u64 {
        address - self.start + self.offset
    }
}

#[derive(Debug, Default)]
pub struct RawProfile {
    /// `type/unit` of each value, in order (`alloc_space/bytes`), and the one viewers show
    /// first (marked `[dflt]` by Go; None when unmarked).
    pub sample_types: Vec<String>,
    pub default_sample_type: Option<String>,
    /// `PeriodType: space bytes` as `space/bytes`, and `Period: 524288`.
    pub period_type: String,
    pub period: i64,
    pub samples: Vec<RawSample>,
    pub locations: HashMap<u64, RawLocation>,
    pub mappings: HashMap<u64, RawMapping>,
    /// Go's whole output, for failure messages.
    pub text: String,
}

impl RawProfile {
    /// Go's reading of `profile` (caches in `scratch`); None when go is missing outside CI.
    /// Panics if go refuses the profile.
    pub fn read(profile: &Path, scratch: &Path) -> Option<Self> {
        let run = crate::go_pprof(&["-raw", "-symbolize=none"], profile, &[], scratch)?;
        assert_eq!(run.code(), 0, "{}", run.describe());
        Some(Self::parse(&run.stdout))
    }

    /// Parses the text of `go tool pprof -raw` (`Profile.String()` in Go's profile package).
    pub fn parse(text: &str) -> Self {
        let mut profile = Self {
            text: text.to_owned(),
            ..Self::default()
        };
        let mut section = "";
        for line in text.lines() {
            match line {
                "Samples:" | "Locations" | "Mappings" => {
                    section = line;
                    continue;
                }
                _ => {}
            }
            match section {
                "" => profile.header_line(line),
                "Samples:" if profile.sample_types.is_empty() => profile.sample_types_line(line),
                "Samples:" => profile.sample_line(line),
                "Locations" => profile.location_line(line),
                "Mappings" => profile.mapping_line(line),
                _ => {}
            }
        }
        profile
    }

    /// `PeriodType: space bytes`, `Period: 524288` (other header lines are left).
    fn header_line(&mut self, line: &str) {
        if let Some(types) = line.strip_prefix("PeriodType: ") {
            self.period_type = types.split_whitespace().collect::<Vec<_>>().join("/");
        } else if let Some(period) = line.strip_prefix("Period: ") {
            self.period = period.trim().parse().unwrap_or(0);
        }
    }

    /// `alloc_objects/count alloc_space/bytes inuse_space/bytes[dflt]`.
    fn sample_types_line(&mut self, line: &str) {
        for kind in line.split_whitespace() {
            let plain = kind.strip_suffix("[dflt]");
            if let Some(plain) = plain {
                self.default_sample_type = Some(plain.to_owned());
            }
            self.sample_types.push(plain.unwrap_or(kind).to_owned());
        }
    }

    /// `  100  409600: 2 3 4 ` (a value per sample type) then, indented, its labels
    /// (`comm:[fault_touch] kind:[minor]`).
    fn sample_line(&mut self, line: &str) {
        let Some((values, locations)) = line.split_once(": ") else {
            if let (Some(last), true) = (self.samples.last_mut(), line.starts_with("    ")) {
                // String labels on one line, numeric ones (`pid:[7]`) on the next.
                last.labels = format!("{} {}", last.labels, line.trim()).trim().to_owned();
            }
            return;
        };
        let Ok(values) = (values.split_whitespace())
            .map(str::parse)
            .collect::<Result<Vec<i64>, _>>()
        else {
            return;
        };
        let Some(&value) = values.first() else {
            return;
        };
        let locations = locations
            .split_whitespace()
            .map(|id| id.parse().expect("a location id"))
            .collect();
        self.samples.push(RawSample {
            value,
            values,
            locations,
            labels: String::new(),
        });
    }

    /// `     2: 0x5595bca4a8b4 M=1 touch_pages fault_touch:0 s=0` (the function part absent
    /// when the location has no line; further lines, indented, are inlined frames).
    fn location_line(&mut self, line: &str) {
        let Some((id, rest)) = line.split_once(": ") else {
            return;
        };
        let Ok(id) = id.trim().parse::<u64>() else {
            return;
        };
        let mut rest = rest.trim_end();
        let (address, after) = rest.split_once(' ').unwrap_or((rest, ""));
        let address = u64::from_str_radix(address.trim_start_matches("0x"), 16).expect("address");
        rest = after;
        let mut mapping = None;
        if let Some(after) = rest.strip_prefix("M=") {
            let (m, after) = after.split_once(' ').unwrap_or((after, ""));
            mapping = Some(m.parse().expect("a mapping id"));
            rest = after;
        }
        let rest = rest.strip_prefix("[F] ").unwrap_or(rest);
        // `NAME FILE:LINE s=START`: names may hold spaces, files do not here.
        let mut parts = rest.rsplitn(3, ' ');
        let (_start, file_line, name) = (parts.next(), parts.next(), parts.next());
        let (function, file, line) = match (name, file_line.and_then(|f| f.rsplit_once(':'))) {
            (Some(name), Some((file, line))) => (
                Some(name.to_owned()),
                Some(file.to_owned()),
                line.parse().unwrap_or(0),
            ),
            _ => (None, None, 0),
        };
        self.locations.insert(
            id,
            RawLocation {
                address,
                mapping,
                function,
                file,
                line,
            },
        );
    }

    /// `2: 0x7f3f319e5000/0x7f3f31b3b000/0x26000 /usr/lib/.../libc.so.6 93ac...40 [FN]`.
    fn mapping_line(&mut self, line: &str) {
        let fields: Vec<&str> = line.split(' ').collect();
        let [id, range, file, build_id, ..] = fields[..] else {
            return;
        };
        let Ok(id) = id.trim_end_matches(':').parse() else {
            return;
        };
        let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).expect("hex");
        let range: Vec<u64> = range.split('/').map(hex).collect();
        self.mappings.insert(
            id,
            RawMapping {
                start: range[0],
                limit: range[1],
                offset: range[2],
                file: file.to_owned(),
                build_id: build_id.to_owned(),
            },
        );
    }

    /// The value of `sample` of type `sample_type` (`inuse_space/bytes`); panics when the
    /// profile has no such type.
    pub fn value_of(&self, sample: &RawSample, sample_type: &str) -> i64 {
        let index = (self.sample_types.iter())
            .position(|t| t == sample_type)
            .unwrap_or_else(|| panic!("no sample type {sample_type} in\n{}", self.text));
        sample.values[index]
    }

    /// The values of type `sample_type` summed over the samples whose stacks go through
    /// `function`.
    pub fn value_through(&self, function: &str, sample_type: &str) -> i64 {
        (self.samples.iter())
            .filter(|sample| {
                (sample.locations.iter())
                    .any(|id| self.locations[id].function.as_deref() == Some(function))
            })
            .map(|sample| self.value_of(sample, sample_type))
            .sum()
    }

    /// The samples of process name `comm`.
    pub fn samples_of<'a>(&'a self, comm: &'a str) -> impl Iterator<Item = &'a RawSample> {
        self.samples
            .iter()
            .filter(move |s| s.label("comm") == Some(comm))
    }

    /// The sample's innermost user frame (after its kernel frames), if it has one.
    pub fn innermost_user(&self, sample: &RawSample) -> Option<&RawLocation> {
        (sample.locations.iter())
            .map(|id| &self.locations[id])
            .find(|l| !l.is_kernel())
    }
}

/// A frame the profile does not name: no function, or memtrace's stand-ins for none.
pub fn unnamed(location: &RawLocation) -> bool {
    location
        .function
        .as_deref()
        .is_none_or(|f| f == "[unknown]" || f.starts_with("0x"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAW: &str = "Comment: memtrace agent: system-wide
PeriodType: faults count
Period: 10
Samples:
faults/count
      19990: 2 3 
                comm:[fault_touch] kind:[minor]
        640: 5 
                comm:[redis-server] kind:[minor]
Locations
     2: 0x5595bca4a8b4 M=1 touch_pages fault_touch:0 s=0
     3: 0x7f3f319e624a M=2 <T as a::B>::call libc.so.6:0 s=0
     5: 0x7f81d463cf13 M=2 
Mappings
1: 0x5595bca4a000/0x5595bca4b000/0x1000 /tmp/fault_touch 38bd9d40 [FN]
2: 0x7f3f319e5000/0x7f3f31b3b000/0x26000 /usr/lib/libc.so.6  
";

    const HEAP: &str = "Comment: memtrace malloc: pid 7 (command)
PeriodType: space bytes
Period: 524288
Duration: 5.19
Samples:
alloc_objects/count alloc_space/bytes inuse_objects/count inuse_space/bytes[dflt]
        100     409600        100     409600: 1 2 
                comm:[malloc_leak] kind:[heap]
                pid:[7]
       1233     172430          0          0: 2 
                comm:[malloc_leak] kind:[heap]
                pid:[7]
Locations
     1: 0x556103b088c6 M=1 leaky_function malloc_leak:0 s=0
     2: 0x556103b08c62 M=1 main malloc_leak:0 s=0
";

    #[test]
    fn parses_a_heap_profiles_four_values() {
        let p = RawProfile::parse(HEAP);
        assert_eq!(
            p.sample_types,
            [
                "alloc_objects/count",
                "alloc_space/bytes",
                "inuse_objects/count",
                "inuse_space/bytes"
            ]
        );
        assert_eq!(p.default_sample_type.as_deref(), Some("inuse_space/bytes"));
        assert_eq!((p.period_type.as_str(), p.period), ("space/bytes", 524288));
        assert_eq!(p.samples[0].values, [100, 409600, 100, 409600]);
        assert_eq!(p.samples[1].values, [1233, 172430, 0, 0]);
        assert_eq!(p.samples[1].value, 1233);
        assert_eq!(p.samples[0].label("comm"), Some("malloc_leak"));
        assert_eq!(p.samples[0].label("pid"), Some("7"));
        assert_eq!(p.value_of(&p.samples[1], "alloc_space/bytes"), 172430);
    }

    #[test]
    fn parses_gos_raw_text() {
        let p = RawProfile::parse(RAW);
        assert_eq!(p.samples.len(), 2);
        assert_eq!(p.samples[0].value, 19990);
        assert_eq!(p.sample_types, ["faults/count"]);
        assert_eq!((p.period_type.as_str(), p.period), ("faults/count", 10));
        assert_eq!(p.samples[0].locations, [2, 3]);
        assert_eq!(p.samples[1].label("comm"), Some("redis-server"));
        let touch = &p.locations[&2];
        assert_eq!(touch.function.as_deref(), Some("touch_pages"));
        assert_eq!(touch.file.as_deref(), Some("fault_touch"));
        assert_eq!(touch.mapping, Some(1));
        assert_eq!(
            p.locations[&3].function.as_deref(),
            Some("<T as a::B>::call")
        );
        assert!(unnamed(&p.locations[&5]));
        assert_eq!(p.locations[&5].mapping, Some(2));
        let m = &p.mappings[&1];
        assert_eq!(
            (m.file.as_str(), m.build_id.as_str()),
            ("/tmp/fault_touch", "38bd9d40")
        );
        assert_eq!(m.file_offset(touch.address), 0x18b4);
        assert_eq!(p.mappings[&2].build_id, "");
    }
}
