//! `memtrace diagnose --html`: one self-contained page (no scripts, no external assets):
//! the verdicts, the process's memory and fault rates over time as SVG charts, and a flame
//! graph of the sampled faults as an embedded image.
use std::{fmt::Write as _, io::Write};

use base64::Engine;

use super::{report::DiagnoseReport, verdicts::Sample};
use crate::output::flamegraph::xml_escape as escape;

/// One line of a chart: its name, color and points (seconds, value).
struct Series {
    name: &'static str,
    color: &'static str,
    points: Vec<(f64, f64)>,
}

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
    write!(
        page,
        "<h2>Where it faulted</h2>\n<img id=\"flamegraph\" alt=\"flame graph of the sampled \
         faults\" src=\"data:image/svg+xml;base64,{}\">\n</body></html>\n",
        base64::engine::general_purpose::STANDARD.encode(flamegraph_svg)
    )?;
    out.write_all(page.as_bytes())?;
    Ok(())
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;\
vertical-align:top}th{background:#f4f4f4}.critical{background:#f8d0d0}\
.warning{background:#fbeec2}.info{background:#e3eefb}svg{display:block;margin:0.5em 0}\
img{max-width:100%;border:1px solid #ccc}";

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

/// An SVG line chart of `series` over the same time axis, with its scale and a legend.
fn line_chart(id: &str, unit: &str, series: &[Series]) -> String {
    // The chart's size, and the margins left for the scale.
    const WIDTH: f64 = 760.0;
    const HEIGHT: f64 = 220.0;
    const LEFT: f64 = 110.0;
    const BOTTOM: f64 = 30.0;
    const TOP: f64 = 10.0;
    let all = || series.iter().flat_map(|s| s.points.iter());
    let t_max = all().map(|p| p.0).fold(0.0, f64::max).max(1e-9);
    let t_min = all().map(|p| p.0).fold(t_max, f64::min);
    let y_max = all().map(|p| p.1).fold(0.0, f64::max).max(1e-9);
    let x = |t: f64| LEFT + (t - t_min) / (t_max - t_min).max(1e-9) * (WIDTH - LEFT - 10.0);
    let y = |v: f64| TOP + (1.0 - v / y_max) * (HEIGHT - TOP - BOTTOM);
    let mut svg = format!(
        "<svg id=\"{id}\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" \
         height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\">\
         <rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\
         <line x1=\"{LEFT}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#888\"/>\
         <line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{b}\" stroke=\"#888\"/>\
         <text x=\"{l}\" y=\"{t}\" font-size=\"11\" text-anchor=\"end\">{top} {unit}</text>\
         <text x=\"{l}\" y=\"{b}\" font-size=\"11\" text-anchor=\"end\">0</text>\
         <text x=\"{LEFT}\" y=\"{tb}\" font-size=\"11\">{t_min:.1} s</text>\
         <text x=\"{r}\" y=\"{tb}\" font-size=\"11\" text-anchor=\"end\">{t_max:.1} s</text>",
        b = HEIGHT - BOTTOM,
        r = WIDTH - 10.0,
        l = LEFT - 4.0,
        t = TOP + 10.0,
        tb = HEIGHT - 10.0,
        top = if y_max >= 100.0 {
            format!("{y_max:.0}")
        } else {
            format!("{y_max:.1}")
        },
    );
    for (i, s) in series.iter().enumerate() {
        let points: Vec<String> = s
            .points
            .iter()
            .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>\
             <text x=\"{}\" y=\"{}\" font-size=\"12\" fill=\"{}\">{}</text>",
            s.color,
            points.join(" "),
            LEFT + 10.0 + 110.0 * i as f64,
            TOP + 14.0,
            s.color,
            s.name
        );
    }
    svg + "</svg>\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_spans_its_points() {
        let svg = line_chart(
            "c",
            "MiB",
            &[Series {
                name: "RSS",
                color: "#000",
                points: vec![(0.0, 0.0), (10.0, 50.0)],
            }],
        );
        // The first point at the left and bottom, the last at the right and top.
        assert!(svg.contains("points=\"110.0,190.0 750.0,10.0\""), "{svg}");
        assert!(svg.contains("50.0 MiB"), "{svg}");
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
    }
}
