//! `memtrace diagnose --html`: one self-contained page (no scripts, no external assets):
//! the verdicts, the process's memory and fault rates over time as SVG charts, and a flame
//! graph of the sampled faults as an embedded image.
use std::{fmt::Write as _, io::Write};

use super::{report::DiagnoseReport, verdicts::Sample};
use crate::output::{
    flamegraph::xml_escape as escape,
    html::{flamegraph_image, line_chart, Series, STYLE},
};

pub fn write(
    report: &DiagnoseReport,
    flamegraph_svg: &[u8],
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let title = format!(
        "memtrace diagnose: pid {} ({})",
        report.pid,
        escape(&report.comm)
    );
    let mut page = String::new();
    write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{title}</title><style>{STYLE}</style></head><body>\n<h1>{title}</h1>\n\
         <p>{:.1} s watched, {} samples.</p>\n",
        report.header.duration_s,
        report.samples.len()
    )?;
    page += &verdict_table(report);
    let mib = |kb: u64| kb as f64 / 1024.0;
    let over_time = |value: &dyn Fn(&Sample) -> f64| -> Vec<(f64, f64)> {
        report.samples.iter().map(|s| (s.t, value(s))).collect()
    };
    page += "<h2>Memory</h2>\n";
    page += &line_chart(
        "memory-chart",
        "MiB",
        &[
            Series {
                name: "RSS",
                color: "#1f77b4",
                points: over_time(&|s| mib(s.rss_kb)),
            },
            Series {
                name: "anonymous",
                color: "#2ca02c",
                points: over_time(&|s| mib(s.rss_anon_kb)),
            },
            Series {
                name: "swap",
                color: "#d62728",
                points: over_time(&|s| mib(s.swap_kb)),
            },
        ],
    );
    page += &line_chart(
        "vsz-chart",
        "MiB",
        &[Series {
            name: "VSZ",
            color: "#9467bd",
            points: over_time(&|s| mib(s.vsz_kb)),
        }],
    );
    page += "<h2>Faults per second</h2>\n";
    let rate = |count: &dyn Fn(&Sample) -> u64| -> Vec<(f64, f64)> {
        report
            .samples
            .windows(2)
            .map(|w| {
                let seconds = (w[1].t - w[0].t).max(1e-9);
                (
                    w[1].t,
                    count(&w[1]).saturating_sub(count(&w[0])) as f64 / seconds,
                )
            })
            .collect()
    };
    page += &line_chart(
        "fault-chart",
        "faults/s",
        &[
            Series {
                name: "minor",
                color: "#ff7f0e",
                points: rate(&|s| s.minflt),
            },
            Series {
                name: "major",
                color: "#d62728",
                points: rate(&|s| s.majflt),
            },
        ],
    );
    page += "<h2>Where it faulted</h2>\n";
    page += &flamegraph_image("flame graph of the sampled faults", flamegraph_svg);
    page += "</body></html>\n";
    out.write_all(page.as_bytes())?;
    Ok(())
}

fn verdict_table(report: &DiagnoseReport) -> String {
    let mut html = String::from("<h2>Verdicts</h2>\n");
    if report.verdicts.is_empty() {
        html += "<p id=\"verdicts\">None: nothing in its memory calls for action.</p>\n";
        return html;
    }
    html += "<table id=\"verdicts\"><tr><th>verdict</th><th>severity</th><th>evidence</th>\
             <th>what to do</th></tr>\n";
    for verdict in &report.verdicts {
        let severity = serde_json::to_value(verdict.severity)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let evidence = match &verdict.evidence {
            serde_json::Value::Object(fields) => fields
                .iter()
                .map(|(key, value)| format!("{key} = {value}"))
                .collect::<Vec<_>>()
                .join("<br>"),
            other => escape(&other.to_string()),
        };
        let _ = writeln!(
            html,
            "<tr class=\"{severity}\"><td>{}</td><td>{severity}</td><td>{evidence}</td>\
             <td>{}</td></tr>",
            verdict.id,
            escape(&verdict.advice)
        );
    }
    html + "</table>\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
    }
}
