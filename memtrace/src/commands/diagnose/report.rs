//! What `memtrace diagnose` reports. Field names of the `Serialize` types are the public JSON
//! contract (command, pid, duration_s, verdicts, samples): keep them, add freely.
use serde::Serialize;

use super::verdicts::{Sample, Verdict};
use crate::report::ReportHeader;

/// The report; its header's `lost_events` counts the fault stacks of --html.
#[derive(Serialize)]
pub struct DiagnoseReport {
    #[serde(flatten)]
    pub header: ReportHeader,
    pub pid: u32,
    pub comm: String,
    pub verdicts: Vec<Verdict>,
    pub samples: Vec<Sample>,
    pub stack_limit_kb: Option<u64>,
    pub cgroup: Option<String>,
    pub cgroup_limit_bytes: Option<u64>,
}
