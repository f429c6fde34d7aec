//! The trace's clock: times since tracing started, the same for the kernel's timestamps
//! (`bpf_ktime_get_ns`, CLOCK_MONOTONIC) as for the tracing loop's ticks (`Instant`, also
//! CLOCK_MONOTONIC on Linux).
use std::time::Duration;

#[derive(Clone, Copy, Debug, Default)]
pub struct TraceClock {
    /// CLOCK_MONOTONIC when tracing started, in ns.
    start_ns: u64,
}

impl TraceClock {
    /// Tracing starts now.
    pub fn start_now() -> Self {
        Self {
            start_ns: monotonic_ns(),
        }
    }

    /// The time since tracing started of a kernel timestamp (0 for one before the start).
    pub fn since_start(&self, time_ns: u64) -> Duration {
        Duration::from_nanos(time_ns.saturating_sub(self.start_ns))
    }
}

fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_times_count_from_the_start() {
        let clock = TraceClock::start_now();
        let later = monotonic_ns() + 5_000_000;
        let since = clock.since_start(later);
        assert!(since >= Duration::from_millis(5) && since < Duration::from_secs(1));
        assert_eq!(clock.since_start(0), Duration::ZERO);
    }
}
