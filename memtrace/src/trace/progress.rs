//! What the user sees while tracing, on stderr (stdout is for the report): with `--interval`,
//! one line per process per interval; otherwise, on a terminal, one self-updating status line.
use std::{
    io::{IsTerminal, Write},
    time::Duration,
};

/// Redraw the status line at most this often.
const STATUS_EVERY: Duration = Duration::from_millis(250);

pub struct Progress {
    interval: Option<Duration>,
    status_line: bool,
    next_at: Duration,
    drew_status: bool,
}

impl Progress {
    pub fn new(interval: Option<Duration>) -> Self {
        let status_line = interval.is_none() && std::io::stderr().is_terminal();
        let first = interval.unwrap_or(STATUS_EVERY);
        Self {
            interval,
            status_line,
            next_at: first,
            drew_status: false,
        }
    }

    /// True when an interval has ended at `elapsed` (the caller then prints its lines with
    /// `interval_line` and resets its interval counters).
    pub fn interval_due(&mut self, elapsed: Duration) -> Option<Duration> {
        let interval = self.interval?;
        if elapsed < self.next_at {
            return None;
        }
        self.next_at += interval;
        Some(interval)
    }

    pub fn interval_line(&self, line: &str) {
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }

    /// One interval's live table: on a terminal it replaces the previous one, like top;
    /// otherwise (a log, a pipe) the tables follow each other, like vmstat.
    pub fn interval_table(&self, lines: &[String]) {
        let mut err = std::io::stderr().lock();
        if err.is_terminal() {
            let _ = write!(err, "\x1b[H\x1b[2J");
        }
        for line in lines {
            let _ = writeln!(err, "{line}");
        }
    }

    /// Redraws the status line (rate-limited; only on a terminal without --interval).
    pub fn status(&mut self, elapsed: Duration, text: &str) {
        if !self.status_line || elapsed < self.next_at {
            return;
        }
        self.next_at = elapsed + STATUS_EVERY;
        self.drew_status = true;
        let _ = write!(
            std::io::stderr().lock(),
            "\r\x1b[K[{:>6.1}s] {text}",
            elapsed.as_secs_f64()
        );
    }

    /// Clears the status line before the report is written.
    pub fn finish(&mut self) {
        if self.drew_status {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
            self.drew_status = false;
        }
    }
}
