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
    /// Every value a stack carries in a pprof profile, with its unit (a heap profile's four,
    /// as Go writes them); by default the one `sample_type` names.
    fn value_types(&self) -> Vec<(&'static str, &'static str)> {
        vec![self.sample_type()]
    }
    /// The `index`-th stack's values, in the order of `value_types`.
    fn values(&self, index: usize) -> Vec<u64> {
        vec![self.stacks()[index].count]
    }
    /// What the whole profile is about (key, value): comments, and labels on every sample.
    fn context(&self) -> &[(&'static str, String)] {
        &[]
    }
    /// The value type a viewer shows first (pprof's `default_sample_type`), when not the
    /// first.
    fn default_value_type(&self) -> Option<&'static str> {
        None
    }
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
    /// Several values a stack, for pprof (None: each row's count alone).
    pub values: Option<ProfileValues>,
    /// What the whole profile is about (an OOM kill's cgroup, limit, ...): comments, and
    /// labels on every sample, in pprof.
    pub context: Vec<(&'static str, String)>,
}

/// Several values a stack (a heap profile's four, as Go writes them).
pub struct ProfileValues {
    /// Each value's type and unit, in order.
    pub types: Vec<(&'static str, &'static str)>,
    /// Each row's values, in that order.
    pub rows: Vec<Vec<u64>>,
    /// The type a viewer shows first.
    pub shown: &'static str,
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
    fn value_types(&self) -> Vec<(&'static str, &'static str)> {
        match &self.values {
            Some(values) => values.types.clone(),
            None => vec![self.sample_type],
        }
    }
    fn values(&self, index: usize) -> Vec<u64> {
        match &self.values {
            Some(values) => values.rows[index].clone(),
            None => vec![self.rows[index].count],
        }
    }
    fn default_value_type(&self) -> Option<&'static str> {
        self.values.as_ref().map(|values| values.shown)
    }
    fn period(&self) -> u64 {
        self.period.max(1)
    }
    fn sampling_note(&self) -> Option<String> {
        self.sampling_note.clone()
    }
    fn context(&self) -> &[(&'static str, String)] {
        &self.context
    }
}
