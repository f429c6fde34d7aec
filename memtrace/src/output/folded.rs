//! Folded stacks (Brendan Gregg's format, read by flamegraph.pl, inferno and speedscope): one
//! line per distinct stack, `comm;outermost;...;innermost;kernel_outer_[k];... count`.
use std::collections::HashMap;
use std::io::Write;

use super::profile::StackProfile;

/// Writes the folded lines of all stacks, one per line.
pub fn write(report: &dyn StackProfile, out: &mut dyn Write) -> anyhow::Result<()> {
    for line in lines(report) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// The folded lines of all stacks, equal stacks merged, sorted (deterministic output). Shared
/// with the flamegraph sink so both always show the same stacks.
pub fn lines(report: &dyn StackProfile) -> Vec<String> {
    // The kind only splits the graph when there is more than one to tell apart.
    let stacks = report.stacks();
    let first_kind = stacks.first().map(|s| &s.kind);
    let tag_kind = stacks.iter().any(|s| Some(&s.kind) != first_kind);

    // Rows differing only in pid fold to the same line: sum them.
    let mut merged: HashMap<String, u64> = HashMap::new();
    for stack in stacks.iter().filter(|s| s.count > 0) {
        let mut frames = vec![sanitize(&stack.comm)];
        if tag_kind {
            frames.push(format!("[{}]", sanitize(&stack.kind)));
        }
        // Root first: the report keeps frames innermost first.
        frames.extend(stack.frames.iter().rev().map(|f| sanitize(f)));
        // `_[k]` is the suffix flamegraph.pl and inferno color as kernel code.
        frames.extend(
            stack
                .kernel_frames
                .iter()
                .rev()
                .map(|f| sanitize(f) + "_[k]"),
        );
        *merged.entry(frames.join(";")).or_default() += stack.count;
    }
    let mut lines: Vec<String> = merged
        .into_iter()
        .map(|(stack, count)| format!("{stack} {count}"))
        .collect();
    lines.sort();
    lines
}

/// A frame name safe inside a folded line: `;` separates frames and a line break ends the line.
/// Spaces are fine: readers split the count off at the last space.
fn sanitize(name: &str) -> String {
    if name.is_empty() {
        return "[unknown]".to_owned();
    }
    name.chars()
        .map(|c| match c {
            ';' => ':',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::profile::Reweighted;
    use crate::output::testdata;

    fn folded(report: &Reweighted) -> String {
        let mut out = Vec::new();
        write(report, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn lines_are_stack_space_count_merged_and_sorted() {
        let text = folded(&testdata::profile());
        let lines: Vec<&str> = text.lines().collect();
        for line in &lines {
            let (stack, count) = line.rsplit_once(' ').expect("no count");
            assert!(
                !stack.is_empty() && stack.split(';').all(|f| !f.is_empty()),
                "{line}"
            );
            assert!(count.parse::<u64>().unwrap() > 0, "{line}");
        }
        let mut sorted = lines.clone();
        sorted.sort();
        assert_eq!(lines, sorted);
        assert_eq!(
            lines,
            [
                "server;[major];main;fill_buffer 2",
                "server;[minor];main;fill_buffer;memset 1000",
                "server;[minor];main;fill_buffer;memset;exc_page_fault_[k];handle_mm_fault_[k] 39000",
                // pids 124 and 125 merged; ';' in a name replaced.
                "worker;[minor];run:now;worker+0x1234 15",
            ]
        );
    }

    #[test]
    fn kind_only_when_both_present_and_names_sanitized() {
        let mut report = testdata::profile();
        report.rows.retain(|s| s.kind == "minor");
        report.rows[0].frames[0] = "a\nb".into();
        let text = folded(&report);
        assert!(!text.contains("[minor]"), "{text}");
        assert!(
            text.contains("server;main;fill_buffer;a b;exc_page_fault_[k]"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 3);
    }

    #[test]
    fn empty_report_writes_nothing() {
        let mut report = testdata::profile();
        report.rows.clear();
        assert_eq!(folded(&report), "");
    }
}
