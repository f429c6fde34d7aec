//! What `memtrace oom` reports. Field names of the `Serialize` types are the public JSON
//! contract (issue #5): keep them, add freely.
use serde::Serialize;

use crate::report::ReportHeader;

/// One OOM kill.
#[derive(Clone, Debug, Serialize)]
pub struct OomKillRow {
    /// When memtrace saw it (RFC 3339, UTC).
    pub time: String,
    pub pid: u32,
    pub comm: String,
    pub uid: u32,
    pub total_vm_kb: u64,
    pub anon_rss_kb: u64,
    pub file_rss_kb: u64,
    pub shmem_rss_kb: u64,
    pub pgtables_kb: u64,
    pub oom_score_adj: i32,
    /// The victim's memory cgroup ("/" for the root; "" when unknown).
    pub cgroup: String,
    /// Its limit and usage when the kill was seen (None: no limit, or unknown).
    pub cgroup_limit_bytes: Option<u64>,
    pub cgroup_usage_bytes: Option<u64>,
    /// "cgroup" when a memory cgroup's limit made the kill (the cgroup or an ancestor with a
    /// limit that was reached), "system" when the whole machine ran out.
    pub constraint: &'static str,
    /// The cgroup whose limit was reached, for a cgroup kill.
    pub limit_cgroup: Option<String>,
    /// The task that needed memory when the OOM killer ran.
    pub trigger_pid: u32,
}

#[derive(Clone, Debug, Serialize)]
pub struct OomReport {
    #[serde(flatten)]
    pub header: ReportHeader,
    pub kills: Vec<OomKillRow>,
}
