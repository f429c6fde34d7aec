//! Pretty JSON of reports; the field names of the report types are the contract.
use std::io::Write;

use crate::report::FaultReport;

/// Writes the report with only its first `top` stacks (they come sorted, most events first).
pub fn write(report: &FaultReport, top: usize, out: &mut dyn Write) -> anyhow::Result<()> {
    // A copy keeps every field of the report, present and future, in declaration order without
    // listing them here; it is made once per run, so its cost does not matter.
    let mut shown = report.clone();
    shown.stacks.truncate(top);
    write_value(&shown, out)
}

/// Any report as pretty JSON, with a trailing newline.
pub fn write_value(report: &impl serde::Serialize, out: &mut dyn Write) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *out, report)?;
    writeln!(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::testdata;
    use serde_json::Value;

    fn json(top: usize) -> (String, Value) {
        let mut out = Vec::new();
        write(&testdata::report(), top, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let value = serde_json::from_str(&text).unwrap();
        (text, value)
    }

    #[test]
    fn has_contract_keys() {
        let (text, v) = json(10);
        assert!(text.ends_with("}\n"));
        for key in [
            "command",
            "duration_s",
            "lost_events",
            "sampled",
            "processes",
            "regions",
            "stacks",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        let keys = |section: &str, keys: &[&str]| {
            for row in v[section].as_array().unwrap() {
                for key in keys {
                    assert!(row.get(key).is_some(), "missing {section}.{key}");
                }
            }
        };
        keys("processes", &["pid", "comm", "minor", "major"]);
        keys("regions", &["pid", "region", "minor", "major"]);
        keys(
            "stacks",
            &["pid", "kind", "count", "frames", "kernel_frames"],
        );
        assert_eq!(v["stacks"][0]["frames"][0], "memset");
        assert_eq!(v["stacks"][0]["kernel_frames"][1], "exc_page_fault");
        assert_eq!(v["stacks"][3]["frames"][0], "0x40001234");
    }

    #[test]
    fn stacks_cut_to_top() {
        assert_eq!(json(2).1["stacks"].as_array().unwrap().len(), 2);
        assert_eq!(json(2).1["stacks"][1]["count"], 1000);
        assert_eq!(json(0).1["stacks"].as_array().unwrap().len(), 0);
        assert_eq!(json(100).1["stacks"].as_array().unwrap().len(), 5);
    }
}
