//! Pretty JSON of reports; the field names of the report types are the contract.
use std::io::Write;

/// Any report as pretty JSON, with a trailing newline.
pub fn write_value(report: &impl serde::Serialize, out: &mut dyn Write) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *out, report)?;
    writeln!(out)?;
    Ok(())
}
