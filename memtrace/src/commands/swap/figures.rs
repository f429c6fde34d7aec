//! Swap figures that say what they count: every page moved out to swap or brought back, and
//! the zero-filled pages among them, which Linux 6.12+ neither writes nor reads (it keeps a
//! bit in the swap map instead). Processes and the system are given in the same terms, so
//! that one can be set beside the other.
use memtrace_common::SwapCounts;
use serde::Serialize;

use crate::host::system_memory::SystemSample;

/// Pages out and in, and the zero-filled pages among them. Zero counts are None where they
/// are not counted: a kernel without them (before 6.12 every page is written and read), or,
/// per process, one that does not trace them (before 6.16).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SwapFigures {
    /// Pages moved out to swap: written (/proc/vmstat pswpout) or zero-filled (swpout_zero).
    pub swap_out_pages: u64,
    /// Pages brought back: read (pswpin) or zero-filled (swpin_zero); a process's swap-ins
    /// also count pages still in the swap cache.
    pub swap_in_pages: u64,
    /// The zero-filled pages among `swap_out_pages`: not written.
    pub swap_out_zero_pages: Option<u64>,
    /// The zero-filled pages among `swap_in_pages`: not read.
    pub swap_in_zero_pages: Option<u64>,
}

impl SwapFigures {
    /// A process's figures from the kernel's counts for it; `zero_counted`: whether the
    /// zero-page hook ran.
    pub fn of_process(counts: &SwapCounts, zero_counted: bool) -> Self {
        let zero = |pages: u64| zero_counted.then_some(pages);
        Self {
            swap_out_pages: counts.out_written,
            swap_in_pages: counts.swapped_in,
            // A readahead can read a zero page the process never faults in: never more than
            // its swap-ins, so "read" stays a count.
            swap_out_zero_pages: zero(counts.out_zero.min(counts.out_written)),
            swap_in_zero_pages: zero(counts.in_zero.min(counts.swapped_in)),
        }
    }

    /// The system's figures between two samples of /proc/vmstat.
    pub fn of_system(start: &SystemSample, end: &SystemSample) -> Self {
        let delta = |before: u64, now: u64| now.saturating_sub(before);
        let zero = |before: Option<u64>, now: Option<u64>| Some(delta(before?, now?));
        let out_zero = zero(start.swpout_zero, end.swpout_zero);
        let in_zero = zero(start.swpin_zero, end.swpin_zero);
        Self {
            swap_out_pages: delta(start.pswpout, end.pswpout) + out_zero.unwrap_or(0),
            swap_in_pages: delta(start.pswpin, end.pswpin) + in_zero.unwrap_or(0),
            swap_out_zero_pages: out_zero,
            swap_in_zero_pages: in_zero,
        }
    }

    /// Pages written to swap, where the zero pages are known.
    pub fn written(&self) -> Option<u64> {
        Some(self.swap_out_pages - self.swap_out_zero_pages?)
    }

    /// Pages read from swap (or the swap cache), where the zero pages are known.
    pub fn read(&self) -> Option<u64> {
        Some(self.swap_in_pages - self.swap_in_zero_pages?)
    }

    /// The sum of two sets of figures (zero counts stay None if either is).
    pub fn plus(self, other: Self) -> Self {
        let add = |a: Option<u64>, b: Option<u64>| Some(a? + b?);
        Self {
            swap_out_pages: self.swap_out_pages + other.swap_out_pages,
            swap_in_pages: self.swap_in_pages + other.swap_in_pages,
            swap_out_zero_pages: add(self.swap_out_zero_pages, other.swap_out_zero_pages),
            swap_in_zero_pages: add(self.swap_in_zero_pages, other.swap_in_zero_pages),
        }
    }

    /// Empty figures, with zero counts known or not.
    pub fn none(zero_counted: bool) -> Self {
        Self::of_process(&SwapCounts::default(), zero_counted)
    }
}

/// What the kernel counted for a process between two readings.
pub fn counts_since(now: &SwapCounts, before: &SwapCounts) -> SwapCounts {
    SwapCounts {
        out_written: now.out_written.saturating_sub(before.out_written),
        out_unmapped: now.out_unmapped.saturating_sub(before.out_unmapped),
        swapped_in: now.swapped_in.saturating_sub(before.swapped_in),
        freed: now.freed.saturating_sub(before.freed),
        out_zero: now.out_zero.saturating_sub(before.out_zero),
        in_zero: now.in_zero.saturating_sub(before.in_zero),
    }
}

/// A count as a table cell: "-" where it is not counted.
pub fn cell(value: Option<u64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// A rate as a table cell: "-" where it is not counted.
pub fn rate_cell(value: Option<u64>, seconds: f64) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{:.0}", v as f64 / seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(pswpin: u64, pswpout: u64, zero: Option<(u64, u64)>) -> SystemSample {
        SystemSample {
            pswpin,
            pswpout,
            swpin_zero: zero.map(|z| z.0),
            swpout_zero: zero.map(|z| z.1),
            ..SystemSample::default()
        }
    }

    #[test]
    fn the_system_counts_zero_pages_beside_written_ones() {
        let start = sample(100, 1000, Some((5, 50)));
        let end = sample(300, 1900, Some((15, 350)));
        let system = SwapFigures::of_system(&start, &end);
        assert_eq!(system.swap_out_pages, 900 + 300);
        assert_eq!(system.swap_out_zero_pages, Some(300));
        assert_eq!(system.written(), Some(900));
        assert_eq!(system.swap_in_pages, 200 + 10);
        assert_eq!(system.read(), Some(200));
    }

    #[test]
    fn a_kernel_without_zero_counters_says_none() {
        let system = SwapFigures::of_system(&sample(0, 0, None), &sample(7, 9, None));
        assert_eq!((system.swap_in_pages, system.swap_out_pages), (7, 9));
        assert_eq!(system.swap_out_zero_pages, None);
        assert_eq!(system.written(), None);
        let process = SwapFigures::of_process(&SwapCounts::default(), false);
        assert_eq!(process.swap_in_zero_pages, None);
        assert_eq!(
            process.plus(SwapFigures::none(true)).swap_in_zero_pages,
            None
        );
    }

    #[test]
    fn a_process_never_has_more_zero_pages_than_pages() {
        let counts = SwapCounts {
            out_written: 10,
            swapped_in: 4,
            out_zero: 3,
            in_zero: 6, // read ahead, never faulted in
            ..SwapCounts::default()
        };
        let figures = SwapFigures::of_process(&counts, true);
        assert_eq!(figures.written(), Some(7));
        assert_eq!(figures.read(), Some(0));
        let before = SwapCounts {
            out_zero: 1,
            ..SwapCounts::default()
        };
        assert_eq!(counts_since(&counts, &before).out_zero, 2);
    }
}
