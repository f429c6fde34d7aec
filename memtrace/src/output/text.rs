//! What every text report shares: its title line, how a traced command ended, memtrace's
//! own cost, sizes in binary units.
use std::io::Write;

use crate::report::{CommandExit, ReportHeader, TracerCost, UnwindReport};

/// The first lines of every table report: what was traced for how long, and how a traced
/// command ended.
pub fn title(out: &mut dyn Write, header: &ReportHeader) -> anyhow::Result<()> {
    let (command, target, duration_s) = (header.command, &header.target, header.duration_s);
    writeln!(out, "memtrace {command}: {target}, {duration_s:.2}s")?;
    if let Some(exit) = &header.exit {
        writeln!(out, "{}", exit_line(exit))?;
    }
    if let Some(line) = header.unwind.as_ref().and_then(unwind_line) {
        writeln!(out, "{line}")?;
    }
    if let Some(line) = header.unwind.as_ref().and_then(python_line) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// What is missing from the Python frames, when something is: frames whose code object
/// could not be read, walks that stopped early, an interpreter memtrace cannot read.
pub fn python_line(unwind: &UnwindReport) -> Option<String> {
    let python = unwind.python.as_ref()?;
    let figures = &python.processes;
    let mut missing = Vec::new();
    if figures.unnamed_frames > 0 {
        missing.push(format!(
            "{} frames of distinct stacks are `<python frame>`: their code was freed before \
             memtrace read it (a module's code is, once imported)",
            figures.unnamed_frames
        ));
    }
    if python.incomplete > 0 {
        missing.push(format!(
            "{} walks stopped before the outermost Python frame",
            python.incomplete
        ));
    }
    if figures.unsupported_processes > 0 {
        missing.push(format!(
            "{} processes run a Python version whose frames memtrace cannot read (their \
             stacks stay native)",
            figures.unsupported_processes
        ));
    }
    (!missing.is_empty()).then(|| {
        format!(
            "python frames: {} in {} walks; {}",
            python.frames,
            python.walks,
            missing.join("; ")
        )
    })
}

/// How complete the user stacks are, when some are not: how many walks reached the
/// outermost frame, and why the others stopped.
pub fn unwind_line(unwind: &UnwindReport) -> Option<String> {
    if unwind.walks == 0 || unwind.reached_root == unwind.walks {
        return None;
    }
    let reasons = [
        (unwind.ended_without_table, "at code with no unwind table"),
        (unwind.ended_at_invalid_rule, "at a rule they cannot follow"),
        (unwind.ended_at_failed_read, "at an unreadable stack"),
        (unwind.truncated, "at the 127-frame limit"),
    ];
    let why: Vec<String> = (reasons.iter())
        .filter(|(count, _)| *count > 0)
        .map(|(count, reason)| format!("{count} {reason}"))
        .collect();
    let mut line = format!(
        "user stacks: {} of {} walks reached the outermost frame ({:.1}%); the others ended {}",
        unwind.reached_root,
        unwind.walks,
        100.0 * unwind.reached_root as f64 / unwind.walks as f64,
        why.join(", ")
    );
    if let Some(tables) = &unwind.tables {
        if tables.tables.binaries_without_room > 0 {
            line += &format!(
                "; {} binaries got no table (raise --unwind-memory, now {} MiB)",
                tables.tables.binaries_without_room,
                tables.tables.capacity_bytes >> 20
            );
        }
    }
    Some(line)
}

/// How a traced command ended, as the table reports say it.
pub fn exit_line(exit: &CommandExit) -> String {
    let how = match (exit.exit_code, exit.signal) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "ended (status unknown)".to_owned(),
    };
    format!(
        "command `{}` (pid {}) {how}",
        exit.command.join(" "),
        exit.pid
    )
}

/// What tracing cost memtrace itself, the last line of a table report.
pub fn cost_line(cost: &TracerCost, out: &mut dyn Write) -> anyhow::Result<()> {
    writeln!(
        out,
        "\nmemtrace itself: attached in {:.0} ms, {:.2} s CPU, {} MiB peak RSS",
        cost.attach_ms,
        cost.cpu_s,
        cost.max_rss_kb / 1024
    )?;
    Ok(())
}

/// A size given in KiB, in the largest binary unit that keeps it at or above 1.
pub fn kib(kib: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    let mut value = kib as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{kib} KiB")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A time in seconds in the unit that reads best: `4us`, `1ms`, `2.0ms`, `1.5s`.
pub fn seconds(seconds: f64) -> String {
    let (value, unit) = if seconds < 1e-3 {
        (seconds * 1e6, "us")
    } else if seconds < 1.0 {
        (seconds * 1e3, "ms")
    } else {
        (seconds, "s")
    };
    if (value - value.round()).abs() < 1e-9 {
        format!("{value:.0}{unit}")
    } else {
        format!("{value:.1}{unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::{kib, seconds};

    #[test]
    fn times_read_in_their_unit() {
        assert_eq!(seconds(4e-6), "4us");
        assert_eq!(seconds(0.001), "1ms");
        assert_eq!(seconds(0.002048), "2.0ms");
        assert_eq!(seconds(1.5), "1.5s");
    }

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(kib(0), "0 KiB");
        assert_eq!(kib(1023), "1023 KiB");
        assert_eq!(kib(1536), "1.5 MiB");
        assert_eq!(kib(8 << 20), "8.0 GiB");
    }
}
