//! What the stack sinks (folded, flame graph, pprof) need from a report, whatever the
//! subcommand: its stacks and what their counts mean.
use crate::report::StackRow;

pub trait StackProfile {
    /// "faults", "malloc", ...
    fn command(&self) -> &str;
    fn target(&self) -> &str;
    fn duration_s(&self) -> f64;
    fn lost_events(&self) -> u64;
    /// Stacks, with `count` in the unit of `sample_type`.
    fn stacks(&self) -> &[StackRow];
    /// What a count counts, and its unit: ("faults", "count"), ("space", "bytes").
    fn sample_type(&self) -> (&'static str, &'static str);
    /// Each count stands for this many events (1 unless sampled).
    fn period(&self) -> u64;
    /// Said in the profile when counts are estimates.
    fn sampling_note(&self) -> Option<String>;
}

/// A report's stacks with their counts in another unit (bytes, pages), for the stack sinks.
pub struct Reweighted {
    pub command: &'static str,
    pub target: String,
    pub duration_s: f64,
    pub lost_events: u64,
    pub rows: Vec<StackRow>,
    pub sample_type: (&'static str, &'static str),
    pub period: u64,
    pub sampling_note: Option<String>,
}

impl Reweighted {
    /// `row` with `count` in the profile's unit.
    pub fn row(row: &StackRow, count: u64) -> StackRow {
        StackRow {
            count,
            ..row.clone()
        }
    }
}

impl StackProfile for Reweighted {
    fn command(&self) -> &str {
        self.command
    }
    fn target(&self) -> &str {
        &self.target
    }
    fn duration_s(&self) -> f64 {
        self.duration_s
    }
    fn lost_events(&self) -> u64 {
        self.lost_events
    }
    fn stacks(&self) -> &[StackRow] {
        &self.rows
    }
    fn sample_type(&self) -> (&'static str, &'static str) {
        self.sample_type
    }
    fn period(&self) -> u64 {
        self.period.max(1)
    }
    fn sampling_note(&self) -> Option<String> {
        self.sampling_note.clone()
    }
}
