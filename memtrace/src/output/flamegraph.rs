//! Interactive flamegraph SVG, drawn by inferno from the folded stacks.
use std::io::Write;

use inferno::flamegraph::{self, color::MultiPalette, Options, Palette};

use super::{folded, profile::StackProfile};

/// Writes an SVG flamegraph of all stacks; a small valid SVG saying so when there are none.
pub fn write(report: &dyn StackProfile, title: &str, out: &mut dyn Write) -> anyhow::Result<()> {
    let lines = folded::lines(report);
    if lines.is_empty() {
        // inferno refuses empty input (and writes an "ERROR" SVG first), so say it ourselves.
        return write_empty(title, out);
    }
    let mut options = Options::default();
    options.title = title.to_owned();
    options.count_name = report.sample_type().0.to_owned();
    // The java palette is the one that colors `_[k]` frames (kernel) apart from user code.
    options.colors = Palette::Multi(MultiPalette::Java);
    // Same name, same color: graphs of two runs compare at a glance.
    options.hash = true;
    flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), out)?;
    Ok(())
}

fn write_empty(title: &str, out: &mut dyn Write) -> anyhow::Result<()> {
    write!(
        out,
        concat!(
            r#"<?xml version="1.0" standalone="no"?>"#,
            "\n",
            r#"<svg version="1.1" width="1200" height="80" viewBox="0 0 1200 80" xmlns="http://www.w3.org/2000/svg">"#,
            "\n",
            r#"<text x="600" y="24" text-anchor="middle" font-family="Verdana" font-size="17">{}</text>"#,
            "\n",
            r#"<text x="600" y="56" text-anchor="middle" font-family="Verdana" font-size="12">no stacks recorded</text>"#,
            "\n</svg>\n"
        ),
        xml_escape(title)
    )?;
    Ok(())
}

/// Text for XML and HTML: the characters markup gives meaning escaped.
pub fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::profile::Reweighted;
    use crate::output::testdata;

    fn svg(report: &Reweighted, title: &str) -> String {
        let mut out = Vec::new();
        write(report, title, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn assert_svg(text: &str) {
        assert!(text.starts_with("<?xml"), "{text}");
        assert!(text.contains("<svg"), "{text}");
        assert!(text.trim_end().ends_with("</svg>"), "{text}");
    }

    #[test]
    fn flamegraph_has_title_and_functions() {
        let text = svg(&testdata::profile(), "page faults");
        assert_svg(&text);
        assert!(text.contains("page faults"));
        assert!(text.contains("fill_buffer"));
        // inferno shows kernel frames without the `_[k]` it colors them by.
        assert!(text.contains("handle_mm_fault (39,000 faults"));
    }

    #[test]
    fn empty_report_is_still_an_svg() {
        let mut report = testdata::profile();
        report.rows.clear();
        let text = svg(&report, "a <b> & c");
        assert_svg(&text);
        assert!(text.contains("no stacks recorded"));
        assert!(text.contains("a &lt;b&gt; &amp; c"));
    }
}
