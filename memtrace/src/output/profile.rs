//! What the stack sinks (folded, flame graph, pprof) need from a report, whatever the
//! subcommand: its stacks and what their counts mean.
use crate::report::{FaultReport, StackRow};

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

impl StackProfile for FaultReport {
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
        &self.stacks
    }
    fn sample_type(&self) -> (&'static str, &'static str) {
        ("faults", "count")
    }
    fn period(&self) -> u64 {
        self.sample_period.max(1)
    }
    fn sampling_note(&self) -> Option<String> {
        self.sampled
            .then(|| format!("sampled 1 in {}: counts are estimates", self.sample_period))
    }
}
