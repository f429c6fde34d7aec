//! `memtrace diagnose`'s judgement: samples of a process's memory over a window, turned
//! into verdicts a person can act on. Pure functions of the samples, so every rule is tested
//! on its own; the thresholds are the user's (see `DiagnoseThresholds`).
use serde::Serialize;
use serde_json::{json, Value};

use super::args::DiagnoseThresholds;

/// One reading of the watched process (and its cgroup).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Sample {
    /// Seconds since the watch began.
    pub t: f64,
    pub rss_kb: u64,
    pub vsz_kb: u64,
    pub swap_kb: u64,
    /// Since the process started.
    pub minflt: u64,
    pub majflt: u64,
    /// Resident anonymous memory (heap, stacks, anonymous mappings): what a leak grows.
    pub rss_anon_kb: u64,
    /// The main thread's stack mapping.
    pub stack_kb: u64,
    /// Pages the kernel's page allocator gave the process since the watch began (eBPF).
    pub pages_allocated: u64,
    /// Pages of the process written to swap and brought back since the watch began (eBPF,
    /// credited to the owner).
    pub swap_out_pages: u64,
    pub swap_in_pages: u64,
    /// Its memory cgroup's usage now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_usage_bytes: Option<u64>,
    /// Processes of the watched tree alive now (a command and what it started). Figures
    /// are their sums; faults, pages and swap include members that have exited; stack and
    /// VSZ are the largest member's (each has its own limit and address space).
    pub processes: u32,
    /// The member with the most resident memory, when the tree has more than one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub largest: Option<Member>,
}

/// One process of the watched tree.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Member {
    pub pid: u32,
    pub comm: String,
    pub rss_kb: u64,
}

/// What does not change over the window.
#[derive(Clone, Debug, Default)]
pub struct Limits {
    pub stack_limit_kb: Option<u64>,
    pub cgroup_limit_bytes: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    pub id: &'static str,
    pub severity: Severity,
    /// The numbers the verdict rests on.
    pub evidence: Value,
    /// One line: what to do, naming the memtrace command to run next.
    pub advice: String,
}

/// Every verdict the samples support, most severe first.
pub fn judge(
    pid: u32,
    samples: &[Sample],
    limits: &Limits,
    thresholds: &DiagnoseThresholds,
) -> Vec<Verdict> {
    // A tree's verdicts name its biggest member, and advise on it.
    let largest = samples.last().and_then(|s| s.largest.clone());
    let pid = largest.as_ref().map_or(pid, |member| member.pid);
    let mut verdicts: Vec<Verdict> = [
        heap_growth(pid, samples, thresholds),
        stack_near_limit(pid, samples, limits, thresholds),
        rss_near_limit(pid, samples, limits, thresholds),
        high_vsz(pid, samples, thresholds),
        allocation_churn(pid, samples, thresholds),
        major_faults(pid, samples, thresholds),
        swap_thrashing(pid, samples, thresholds),
    ]
    .into_iter()
    .flatten()
    .collect();
    if let (Some(member), Some(last)) = (largest, samples.last()) {
        for verdict in &mut verdicts {
            if let Value::Object(evidence) = &mut verdict.evidence {
                evidence.insert("processes".into(), json!(last.processes));
                evidence.insert("largest".into(), json!(member));
            }
        }
    }
    verdicts.sort_by_key(|v| std::cmp::Reverse(v.severity));
    verdicts
}

/// The samples after the warm-up (the first `warmup` share of the window): a process's
/// start-up allocations are not its steady state.
fn steady(samples: &[Sample], warmup: f64) -> &[Sample] {
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return samples;
    };
    let from = first.t + (last.t - first.t) * warmup;
    let start = samples.iter().position(|s| s.t >= from).unwrap_or(0);
    &samples[start..]
}

/// Least-squares line through (t, y): slope per second and r² (the share of y's variance
/// the line explains; 0 when y does not vary).
pub fn fit(points: &[(f64, f64)]) -> (f64, f64) {
    let n = points.len() as f64;
    if points.len() < 2 {
        return (0.0, 0.0);
    }
    let mean_t = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let (mut st, mut sy, mut sty) = (0.0, 0.0, 0.0);
    for (t, y) in points {
        st += (t - mean_t).powi(2);
        sy += (y - mean_y).powi(2);
        sty += (t - mean_t) * (y - mean_y);
    }
    if st == 0.0 {
        return (0.0, 0.0);
    }
    let slope = sty / st;
    let r2 = if sy == 0.0 {
        0.0
    } else {
        sty * sty / (st * sy)
    };
    (slope, r2)
}

/// Resident anonymous memory rising steadily along a line: a leak is suspected. A single
/// large allocation is a step, which no line fits well (r² ≤ 0.75 for any one step).
fn heap_growth(pid: u32, samples: &[Sample], th: &DiagnoseThresholds) -> Option<Verdict> {
    let steady = steady(samples, th.warmup);
    if steady.len() < 5 {
        return None;
    }
    let points: Vec<(f64, f64)> = steady
        .iter()
        .map(|s| (s.t, s.rss_anon_kb as f64 / 1024.0))
        .collect();
    let (slope, r2) = fit(&points);
    let per_minute = slope * 60.0;
    if per_minute < th.heap_growth_mib_per_min || r2 < th.heap_growth_r2 {
        return None;
    }
    let grew = points.last()?.1 - points.first()?.1;
    Some(Verdict {
        id: "heap-growth",
        severity: Severity::Warning,
        evidence: json!({
            "slope_mib_per_min": round(per_minute, 2),
            "r2": round(r2, 3),
            "grew_mib": round(grew, 1),
            "window_s": round(points.last()?.0 - points.first()?.0, 1),
        }),
        advice: format!(
            "memory leak suspected: see what is allocated and never freed with \
             `sudo memtrace malloc --leaks --pid {pid}`"
        ),
    })
}

fn stack_near_limit(
    pid: u32,
    samples: &[Sample],
    limits: &Limits,
    th: &DiagnoseThresholds,
) -> Option<Verdict> {
    let limit = limits.stack_limit_kb.filter(|&l| l > 0)?;
    let deepest = samples.iter().map(|s| s.stack_kb).max()?;
    let percent = deepest as f64 / limit as f64 * 100.0;
    let severity = severity(percent, th.stack_percent, th.stack_critical_percent)?;
    Some(Verdict {
        id: "stack-near-limit",
        severity,
        evidence: json!({
            "stack_kb": deepest,
            "limit_kb": limit,
            "percent": round(percent, 1),
        }),
        advice: format!(
            "recursion too deep, a stack overflow (SIGSEGV) ahead: find the deep call chain \
             with `sudo memtrace faults --pid {pid} --stacks user`; raise `ulimit -s` only if \
             the depth is meant"
        ),
    })
}

fn rss_near_limit(
    pid: u32,
    samples: &[Sample],
    limits: &Limits,
    th: &DiagnoseThresholds,
) -> Option<Verdict> {
    let limit = limits.cgroup_limit_bytes.filter(|&l| l > 0)?;
    let highest = samples.iter().filter_map(|s| s.cgroup_usage_bytes).max()?;
    let percent = highest as f64 / limit as f64 * 100.0;
    let severity = severity(percent, th.limit_percent, th.limit_critical_percent)?;
    Some(Verdict {
        id: "rss-near-limit",
        severity,
        evidence: json!({
            "usage_bytes": highest,
            "limit_bytes": limit,
            "percent": round(percent, 1),
        }),
        advice: format!(
            "its memory cgroup is near its limit, an OOM kill ahead: see who takes the pages \
             with `sudo memtrace faults --pid {pid}`, or raise the limit"
        ),
    })
}

fn high_vsz(pid: u32, samples: &[Sample], th: &DiagnoseThresholds) -> Option<Verdict> {
    let last = samples.last()?;
    let vsz_gib = last.vsz_kb as f64 / (1 << 20) as f64;
    let times_rss = last.vsz_kb as f64 / last.rss_kb.max(1) as f64;
    if vsz_gib < th.high_vsz_gib || times_rss < 10.0 {
        return None;
    }
    Some(Verdict {
        id: "high-vsz",
        severity: Severity::Info,
        evidence: json!({
            "vsz_gib": round(vsz_gib, 1),
            "times_rss": round(times_rss, 0),
        }),
        advice: format!(
            "usually fine: address space reserved or files mapped, not memory used; see its \
             mappings with `memtrace stat {pid}` and /proc/{pid}/maps"
        ),
    })
}

/// Faults over the steady window.
struct FaultRates {
    minor: f64,
    major: f64,
    /// Shares of the sampling intervals with a fault of each kind.
    with_minor: f64,
    with_major: f64,
}

fn fault_rates(samples: &[Sample], warmup: f64) -> Option<FaultRates> {
    let steady = steady(samples, warmup);
    let (first, last) = (steady.first()?, steady.last()?);
    let seconds = last.t - first.t;
    if seconds <= 0.0 {
        return None;
    }
    let intervals = steady.windows(2).count().max(1) as f64;
    let share = |grew: &dyn Fn(&Sample, &Sample) -> bool| {
        steady.windows(2).filter(|w| grew(&w[0], &w[1])).count() as f64 / intervals
    };
    Some(FaultRates {
        minor: last.minflt.saturating_sub(first.minflt) as f64 / seconds,
        major: last.majflt.saturating_sub(first.majflt) as f64 / seconds,
        with_minor: share(&|a, b| b.minflt > a.minflt),
        with_major: share(&|a, b| b.majflt > a.majflt),
    })
}

fn allocation_churn(pid: u32, samples: &[Sample], th: &DiagnoseThresholds) -> Option<Verdict> {
    let rates = fault_rates(samples, th.warmup)?;
    // Sustained: a single big allocation faults in one burst, which is not churn.
    if rates.minor < th.minor_faults_per_s || rates.with_minor < 0.5 {
        return None;
    }
    let steady = steady(samples, th.warmup);
    let (first, last) = (steady.first()?, steady.last()?);
    let pages_per_s =
        last.pages_allocated.saturating_sub(first.pages_allocated) as f64 / (last.t - first.t);
    Some(Verdict {
        id: "allocation-churn",
        severity: Severity::Warning,
        evidence: json!({
            "minor_faults_per_s": round(rates.minor, 0),
            "intervals_with_minor_faults": round(rates.with_minor, 2),
            "pages_allocated_per_s": round(pages_per_s, 0),
        }),
        advice: format!(
            "aggressive allocation (memory mapped fresh and released again, or GC pressure): \
             see where with `sudo memtrace faults --kind minor --pid {pid}` and \
             `sudo memtrace malloc --pid {pid}`"
        ),
    })
}

fn major_faults(pid: u32, samples: &[Sample], th: &DiagnoseThresholds) -> Option<Verdict> {
    let rates = fault_rates(samples, th.warmup)?;
    if rates.major < th.major_faults_per_s || rates.with_major < 0.5 {
        return None;
    }
    Some(Verdict {
        id: "major-faults",
        severity: Severity::Warning,
        evidence: json!({
            "major_faults_per_s": round(rates.major, 1),
            "intervals_with_major_faults": round(rates.with_major, 2),
        }),
        advice: format!(
            "waiting on disk (pages read back from files or swap: out of RAM or a cold page \
             cache): see which files and code with `sudo memtrace faults --kind major --pid \
             {pid}`"
        ),
    })
}

/// Swapping out and in, both at the thrashing rate, interval after interval.
fn swap_thrashing(pid: u32, samples: &[Sample], th: &DiagnoseThresholds) -> Option<Verdict> {
    let (mut streak, mut longest, mut worst) = (0u32, 0u32, (0.0f64, 0.0f64));
    for w in samples.windows(2) {
        let seconds = w[1].t - w[0].t;
        if seconds <= 0.0 {
            continue;
        }
        let out = w[1].swap_out_pages.saturating_sub(w[0].swap_out_pages) as f64 / seconds;
        let back = w[1].swap_in_pages.saturating_sub(w[0].swap_in_pages) as f64 / seconds;
        if out >= th.thrash_rate && back >= th.thrash_rate {
            streak += 1;
            if streak > longest {
                longest = streak;
            }
            worst = (worst.0.max(out), worst.1.max(back));
        } else {
            streak = 0;
        }
    }
    if longest < th.thrash_intervals {
        return None;
    }
    Some(Verdict {
        id: "swap-thrashing",
        severity: Severity::Critical,
        evidence: json!({
            "intervals": longest,
            "swap_out_pages_per_s": round(worst.0, 0),
            "swap_in_pages_per_s": round(worst.1, 0),
        }),
        advice: format!(
            "the working set does not fit in memory: pages go out and come back again; see \
             which code waits on swap-in with `sudo memtrace swap --pid {pid}`, then give it \
             more memory or shrink its working set"
        ),
    })
}

/// Warning at `warn`%, critical at `critical`%.
fn severity(percent: f64, warn: f64, critical: f64) -> Option<Severity> {
    if percent >= critical {
        Some(Severity::Critical)
    } else if percent >= warn {
        Some(Severity::Warning)
    } else {
        None
    }
}

fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thresholds() -> DiagnoseThresholds {
        DiagnoseThresholds::default()
    }

    /// Samples every half second for 30 s, anon memory from `anon_mib(t)`.
    fn window(anon_mib: impl Fn(f64) -> f64) -> Vec<Sample> {
        (0..=60)
            .map(|i| {
                let t = i as f64 * 0.5;
                let anon = (anon_mib(t) * 1024.0) as u64;
                Sample {
                    t,
                    rss_kb: anon + 4096,
                    vsz_kb: anon + 100_000,
                    rss_anon_kb: anon,
                    stack_kb: 132,
                    ..Sample::default()
                }
            })
            .collect()
    }

    fn ids(samples: &[Sample], limits: &Limits) -> Vec<&'static str> {
        judge(1, samples, limits, &thresholds())
            .iter()
            .map(|v| v.id)
            .collect()
    }

    #[test]
    fn a_line_fits_growth_and_not_a_step() {
        let (slope, r2) = fit(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]);
        assert_eq!((slope, r2), (2.0, 1.0));
        let step: Vec<(f64, f64)> = (0..100)
            .map(|i| (i as f64, if i < 50 { 0.0 } else { 100.0 }))
            .collect();
        assert!(fit(&step).1 <= 0.76, "{:?}", fit(&step));
    }

    #[test]
    fn steady_growth_is_a_suspected_leak() {
        let samples = window(|t| 10.0 + t * 2.0); // 120 MiB/min
        let verdicts = judge(7, &samples, &Limits::default(), &thresholds());
        assert_eq!(verdicts[0].id, "heap-growth");
        assert_eq!(verdicts[0].evidence["slope_mib_per_min"], 120.0);
        assert!(verdicts[0]
            .advice
            .contains("memtrace malloc --leaks --pid 7"));
    }

    #[test]
    fn a_tree_names_its_largest_member_and_advises_on_it() {
        let worker = Member {
            pid: 42,
            comm: "stress-ng-vm".into(),
            rss_kb: 90_000,
        };
        let mut samples = window(|t| 10.0 + t * 2.0);
        for sample in &mut samples {
            sample.processes = 3;
            sample.largest = Some(worker.clone());
        }
        let verdicts = judge(7, &samples, &Limits::default(), &thresholds());
        assert_eq!(verdicts[0].evidence["processes"], 3);
        assert_eq!(verdicts[0].evidence["largest"]["comm"], "stress-ng-vm");
        assert!(
            verdicts[0].advice.contains("--pid 42"),
            "{}",
            verdicts[0].advice
        );
    }

    #[test]
    fn flat_memory_and_a_one_off_allocation_are_not_leaks() {
        assert!(ids(&window(|_| 64.0), &Limits::default()).is_empty());
        // 200 MiB at once, a third of the way in, then flat.
        let one_off = window(|t| if t < 10.0 { 10.0 } else { 210.0 });
        assert!(ids(&one_off, &Limits::default()).is_empty());
        // Start-up growth during the warm-up only.
        let warm_up = window(|t| (t * 40.0).min(100.0));
        assert!(ids(&warm_up, &Limits::default()).is_empty());
    }

    #[test]
    fn stack_and_cgroup_limits() {
        let mut samples = window(|_| 10.0);
        samples[30].stack_kb = 7400; // 90% of 8 MiB
        for s in &mut samples {
            s.cgroup_usage_bytes = Some(60 << 20);
        }
        let limits = Limits {
            stack_limit_kb: Some(8192),
            cgroup_limit_bytes: Some(64 << 20),
        };
        let verdicts = judge(1, &samples, &limits, &thresholds());
        let found: Vec<_> = verdicts.iter().map(|v| (v.id, v.severity)).collect();
        assert!(
            found.contains(&("stack-near-limit", Severity::Warning)),
            "{found:?}"
        );
        assert!(
            found.contains(&("rss-near-limit", Severity::Warning)),
            "{found:?}"
        );
        samples[30].stack_kb = 1600; // 20%
        for s in &mut samples {
            s.cgroup_usage_bytes = Some(20 << 20);
        }
        assert!(ids(&samples, &limits).is_empty());
    }

    #[test]
    fn fault_rates_and_thrashing() {
        let mut samples = window(|_| 10.0);
        for (i, s) in samples.iter_mut().enumerate() {
            s.minflt = i as u64 * 20_000; // 40,000/s
            s.majflt = i as u64 * 50; // 100/s
            s.swap_out_pages = i as u64 * 500; // 1,000/s
            s.swap_in_pages = i as u64 * 500;
        }
        let found = ids(&samples, &Limits::default());
        assert_eq!(
            found,
            vec!["swap-thrashing", "allocation-churn", "major-faults"],
            "{found:?}"
        );
    }

    #[test]
    fn a_huge_address_space_is_only_information() {
        let mut samples = window(|_| 10.0);
        samples.last_mut().unwrap().vsz_kb = 64 << 20; // 64 GiB
        let verdicts = judge(1, &samples, &Limits::default(), &thresholds());
        assert_eq!(verdicts.len(), 1);
        assert_eq!(
            (verdicts[0].id, verdicts[0].severity),
            ("high-vsz", Severity::Info)
        );
    }
}
