//! The pieces of memtrace's self-contained HTML pages (no scripts, no external assets):
//! the style, SVG line charts over time, tables, and a flame graph as an embedded image.
use std::fmt::Write as _;

use base64::Engine;

pub use crate::output::flamegraph::xml_escape as escape;

/// One line of a chart: its name, color and points (seconds, value).
pub struct Series {
    pub name: &'static str,
    pub color: &'static str,
    pub points: Vec<(f64, f64)>,
}

pub const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;\
vertical-align:top}th{background:#f4f4f4}.critical{background:#f8d0d0}\
.warning{background:#fbeec2}.info{background:#e3eefb}svg{display:block;margin:0.5em 0}\
img{max-width:100%;border:1px solid #ccc}";

/// An SVG line chart of `series` over the same time axis, with its scale and a legend.
pub fn line_chart(id: &str, unit: &str, series: &[Series]) -> String {
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

/// A flame graph (an SVG document) as an image embedded in the page.
pub fn flamegraph_image(alt: &str, svg: &[u8]) -> String {
    format!(
        "<img id=\"flamegraph\" alt=\"{}\" src=\"data:image/svg+xml;base64,{}\">\n",
        escape(alt),
        base64::engine::general_purpose::STANDARD.encode(svg)
    )
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
}
