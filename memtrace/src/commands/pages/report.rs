//! What `memtrace pages` reports. Field names of the `Serialize` types are the public JSON
//! contract (issue #5): keep them, add freely.
use serde::Serialize;

use crate::report::{ReportHeader, StackRow};

/// Page allocations made by one process, one kernel thread, or in interrupts (pid 0).
#[derive(Clone, Debug, Serialize)]
pub struct PagesProcessRow {
    pub pid: u32,
    pub comm: String,
    /// "process", "kernel thread" or "interrupt".
    pub context: &'static str,
    pub pages: u64,
    pub allocations: u64,
    pub pages_per_s: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct OrderRow {
    pub order: u32,
    pub allocations: u64,
    pub pages: u64,
}

/// One set of GFP flags, by the kernel's names (`GFP_HIGHUSER_MOVABLE|__GFP_ZERO`).
#[derive(Clone, Debug, Serialize)]
pub struct GfpRow {
    pub flags: String,
    /// The flags as a number, as the kernel passes them.
    pub value: u64,
    pub pages: u64,
    pub allocations: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct MigrateTypeRow {
    pub migratetype: String,
    pub pages: u64,
    pub allocations: u64,
}

/// Allocations made on one stack: `count` allocations of `pages` pages in all.
#[derive(Clone, Debug, Serialize)]
pub struct PageStackRow {
    pub pages: u64,
    pub context: &'static str,
    #[serde(flatten)]
    pub stack: StackRow,
}

#[derive(Clone, Debug, Serialize)]
pub struct PagesReport {
    #[serde(flatten)]
    pub header: ReportHeader,
    /// True with --sample N: stacks were taken for 1 allocation in N, and their figures are
    /// estimates. Every other figure is the kernel's exact count.
    pub sampled: bool,
    pub sample_period: u64,
    /// Allocations not counted because the kernel's count table was full: when non-zero, the
    /// figures are lower bounds.
    pub counts_full: u64,
    pub processes: Vec<PagesProcessRow>,
    pub orders: Vec<OrderRow>,
    pub gfp: Vec<GfpRow>,
    pub migratetypes: Vec<MigrateTypeRow>,
    /// Stack rows in all (merged as --group-by and --by-address say); `stacks` holds the
    /// first --top (all of them when a stack sink needs them).
    pub stacks_total: usize,
    pub stacks: Vec<PageStackRow>,
}
