//! The files a report goes to, opened before tracing starts so a bad path fails in a second,
//! not after a ten-minute trace.
use std::{
    fs::File,
    io::{BufWriter, Write},
    os::unix::fs::OpenOptionsExt,
    path::Path,
};

use anyhow::Result;

use crate::{
    error::usage,
    output::{self, profile::StackProfile},
};

pub struct Outputs {
    /// The main report: `--output FILE` or standard output.
    pub report: Box<dyn Write>,
    pub flamegraph: Option<BufWriter<File>>,
    pub pprof: Option<BufWriter<File>>,
}

impl Outputs {
    /// Flushes the main report, then writes the stack files asked for (flame graph, pprof).
    pub fn finish(&mut self, profile: &dyn StackProfile, title: &str) -> Result<()> {
        self.report.flush()?;
        if let Some(file) = self.flamegraph.as_mut() {
            output::flamegraph::write(profile, title, file)?;
            file.flush()?;
        }
        if let Some(file) = self.pprof.as_mut() {
            output::pprof::write(profile, file)?;
            file.flush()?;
        }
        Ok(())
    }

    /// The report's file (`--output`; None: standard output) and the stack files asked for.
    pub fn open(
        report: Option<&Path>,
        flamegraph: Option<&Path>,
        pprof: Option<&Path>,
    ) -> Result<Self> {
        Ok(Self {
            report: report_writer(report)?,
            flamegraph: flamegraph.map(|p| create(p, "--flamegraph")).transpose()?,
            pprof: pprof.map(|p| create(p, "--pprof")).transpose()?,
        })
    }
}

/// Only the main report's destination: `--output FILE` or standard output.
pub fn report_writer(path: Option<&Path>) -> Result<Box<dyn Write>> {
    Ok(match path {
        Some(path) => Box::new(create(path, "--output")?),
        None => Box::new(std::io::stdout()),
    })
}

fn create(path: &Path, option: &str) -> Result<BufWriter<File>> {
    if path.is_dir() {
        return Err(usage(format!(
            "{option} {}: is a directory; give a file name",
            path.display()
        )));
    }
    // Never through a symbolic link: as root, a link planted at a predictable path (in /tmp)
    // would aim memtrace's write at any file on the machine.
    let opened = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path);
    opened.map(BufWriter::new).map_err(|err| {
        if err.raw_os_error() == Some(libc::ELOOP) {
            usage(format!(
                "{option} {}: is a symbolic link, which memtrace does not write through; \
                 remove it or give another path",
                path.display()
            ))
        } else {
            usage(format!(
                "{option} {}: cannot write it ({err})",
                path.display()
            ))
        }
    })
}
