//! A horizontal bar chart of berth/peer ratios as SVG: no plotting dependency needed.

use std::fmt::Write as _;

use super::Case;

pub fn ratios_svg(cases: &[Case]) -> String {
    let bars: Vec<(String, f64)> = cases
        .iter()
        .flat_map(|c| {
            c.ratios()
                .into_iter()
                .map(move |(peer, r)| (format!("{} vs {}", c.name, peer), r))
        })
        .filter(|(_, r)| r.is_finite())
        .collect();
    let (left, width, row) = (360.0, 420.0, 22.0);
    let max = bars.iter().map(|(_, r)| *r).fold(2.0_f64, f64::max);
    let height = 40.0 + row * bars.len().max(1) as f64;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" font-family="sans-serif" font-size="12">"#,
        w = left + width + 80.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="4" y="16">berth / peer (shorter is better; line = 1.0)</text>"#
    );
    for (i, (label, ratio)) in bars.iter().enumerate() {
        let y = 28.0 + row * i as f64;
        let w = width * ratio / max;
        let colour = if *ratio <= 1.0 { "#2a9d4a" } else { "#c0392b" };
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            left - 6.0,
            y + 14.0,
            escape(label)
        );
        let _ = writeln!(
            svg,
            r#"<rect x="{left}" y="{}" width="{w:.1}" height="{}" fill="{colour}"/>"#,
            y + 2.0,
            row - 6.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{}">{ratio:.2}x</text>"#,
            left + w + 4.0,
            y + 14.0
        );
    }
    let one = left + width / max;
    let _ = writeln!(
        svg,
        r#"<line x1="{one:.1}" y1="22" x2="{one:.1}" y2="{height}" stroke="black" stroke-dasharray="4"/>"#
    );
    svg.push_str("</svg>\n");
    svg
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
