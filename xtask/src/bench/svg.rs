//! The plots: grouped bars (one group per workload, one bar per path) of the
//! medians, whiskers from min to max; one plot for throughput (Gbit/s), one
//! for the packet rate (Mpps). SVG written by hand.

use std::fmt::Write as _;

use super::results::BenchResult;
use super::workload::Workload;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 56.0;
const BOTTOM: f64 = 110.0;
/// One colour per path, in the order of [`super::path::Path::ALL`].
const COLOURS: [&str; 9] = [
    "#9e9e9e", "#4c72b0", "#dd8452", "#937860", "#55a868", "#c44e52", "#8172b3", "#da8bc3",
    "#64b5cd",
];

/// Where [`throughput_plot`] is written, beside results.md.
pub(super) const THROUGHPUT_FILE: &str = "throughput.svg";
/// Where [`packet_rate_plot`] is written, beside results.md.
pub(super) const PACKET_RATE_FILE: &str = "packet-rate.svg";

pub(super) fn throughput_plot(result: &BenchResult) -> String {
    plot(
        result,
        &Workload::THROUGHPUT,
        "Container-to-container throughput, Gbit/s",
    )
}

pub(super) fn packet_rate_plot(result: &BenchResult) -> String {
    plot(
        result,
        &Workload::PACKET_RATE,
        "Small-packet forwarding rate, million packets/s received",
    )
}

/// `workloads` (of one unit) on every path that measured one of them.
fn plot(result: &BenchResult, workloads: &[Workload], title: &str) -> String {
    let unit = workloads.first().map_or("", |w| w.unit());
    let shown: Vec<_> = result
        .paths
        .iter()
        .filter(|p| workloads.iter().any(|&w| p.median(w).is_some()))
        .collect();
    let top = shown
        .iter()
        .flat_map(|p| {
            workloads
                .iter()
                .map(|&w| p.spread(w).map_or(0.0, |s| s.max))
        })
        .fold(0.0, f64::max);
    let scale_max = nice_ceiling(top);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let y = |v: f64| plot_h.mul_add(1.0 - v / scale_max, TOP);

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    let _ = writeln!(
        s,
        r##"<text x="{}" y="38" text-anchor="middle" fill="#555">{}</text>"##,
        WIDTH / 2.0,
        escape(&format!(
            "median of {} × {} s, whiskers min–max; {}, {} × {}, Linux {}",
            result.repeat,
            result.seconds,
            result.machine.date,
            result.machine.cpus,
            result.machine.cpu_model,
            result.machine.kernel
        ))
    );

    // Axis and grid.
    for i in 0..=5 {
        let v = scale_max * f64::from(i) / 5.0;
        let yy = y(v);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            yy + 4.0,
            trim_number(v)
        );
    }
    let _ = writeln!(
        s,
        r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{:.1}" stroke="#333"/>"##,
        TOP + plot_h
    );

    // Bars.
    let group_w = plot_w / workloads.len().max(1) as f64;
    let bar_w = if shown.is_empty() {
        0.0
    } else {
        group_w * 0.8 / shown.len() as f64
    };
    for (g, w) in workloads.iter().enumerate() {
        let gx = group_w.mul_add(0.1, group_w.mul_add(g as f64, LEFT));
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-weight="bold">{}</text>"#,
            group_w.mul_add(g as f64 + 0.5, LEFT),
            TOP + plot_h + 18.0,
            escape(w.label())
        );
        for (i, p) in shown.iter().enumerate() {
            let Some(spread) = p.spread(*w) else { continue };
            let x = gx + bar_w * i as f64;
            let colour = colour(p.path);
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{colour}"><title>{}: {:.2} {unit}</title></rect>"#,
                y(spread.median),
                bar_w * 0.9,
                (TOP + plot_h - y(spread.median)).max(0.0),
                escape(p.path.label()),
                spread.median
            );
            let cx = x + bar_w * 0.45;
            let _ = writeln!(
                s,
                r##"<line x1="{cx:.1}" y1="{:.1}" x2="{cx:.1}" y2="{:.1}" stroke="#222"/>"##,
                y(spread.min),
                y(spread.max)
            );
            let _ = writeln!(
                s,
                r#"<text x="{cx:.1}" y="{:.1}" text-anchor="middle" font-size="10">{}</text>"#,
                y(spread.max) - 4.0,
                bar_label(spread.median)
            );
        }
    }

    // Legend: every path that was asked for, including those without figures.
    let mut ly = TOP + plot_h + 40.0;
    let mut lx = LEFT;
    for p in &result.paths {
        let text = match p.missing_reason() {
            Some(why) => format!(
                "{}: {}",
                p.path.label(),
                why.split(':').next().unwrap_or(&why)
            ),
            None => p.path.label().to_string(),
        };
        let item_w = 7.0f64.mul_add(text.chars().count() as f64, 24.0);
        if lx + item_w > WIDTH - RIGHT {
            lx = LEFT;
            ly += 20.0;
        }
        let fill = if p.missing_reason().is_some() {
            "none"
        } else {
            colour(p.path)
        };
        let _ = writeln!(
            s,
            r#"<rect x="{lx:.1}" y="{:.1}" width="12" height="12" fill="{fill}" stroke="{}"/><text x="{:.1}" y="{ly:.1}">{}</text>"#,
            ly - 10.0,
            colour(p.path),
            lx + 16.0,
            escape(&text)
        );
        lx += item_w;
    }
    s.push_str("</svg>\n");
    s
}

fn colour(path: super::path::Path) -> &'static str {
    let i = super::path::Path::ALL
        .iter()
        .position(|&p| p == path)
        .unwrap_or(0);
    COLOURS[i % COLOURS.len()]
}

/// The smallest 1, 2 or 5 × 10^k at or above `v` (1 for nothing to plot).
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&c| c >= v * (1.0 - 1e-12))
        .unwrap_or(10.0 * magnitude)
}

/// A bar's value: two decimals below 1, one above.
fn bar_label(v: f64) -> String {
    if v < 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}

fn trim_number(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_ends_on_a_round_number() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(0.7), 1.0);
        assert_eq!(nice_ceiling(1.0), 1.0);
        assert_eq!(nice_ceiling(1.2), 2.0);
        assert_eq!(nice_ceiling(3.4), 5.0);
        assert_eq!(nice_ceiling(18.1), 20.0);
        assert_eq!(nice_ceiling(32.6), 50.0);
        assert_eq!(nice_ceiling(60.0), 100.0);
        assert_eq!(trim_number(2.5), "2.5");
        assert_eq!(trim_number(10.0), "10");
        assert_eq!(bar_label(0.245), "0.24");
        assert_eq!(bar_label(16.04), "16.0");
    }

    #[test]
    fn one_bar_per_measured_path_and_workload() {
        let svg = throughput_plot(&crate::bench::results::tests::sample());
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>\n"));
        // 3 measured paths x 3 workloads, each a bar with a tooltip.
        assert_eq!(svg.matches("<title>").count(), 9);
        assert!(svg.contains("<title>kernel VXLAN: 16.00 Gbit/s</title>"));
        // Scale: the largest maximum is 36 Gbit/s (native, 4 streams): axis to 50.
        assert!(svg.contains(">50</text>"));
        // The unavailable path is in the legend, hollow, and says so.
        assert!(svg.contains(">weave xdp: not available</text>"));
        assert!(svg.contains("Test CPU &lt;2 GHz&gt;"));
        assert!(!svg.contains("<2 GHz>"));
    }

    #[test]
    fn the_packet_rate_has_its_own_plot() {
        let svg = packet_rate_plot(&crate::bench::results::tests::sample());
        // 3 measured paths x 1 workload.
        assert_eq!(svg.matches("<title>").count(), 3);
        assert!(svg.contains("<title>weave plain: 0.20 Mpps</title>"));
        assert!(svg.contains(">Small-packet forwarding rate, million packets/s received</text>"));
        assert!(svg.contains(">UDP 64 B × 4 senders</text>"));
    }

    #[test]
    fn escapes_text() {
        assert_eq!(escape("a < b & \"c\""), "a &lt; b &amp; &quot;c&quot;");
    }
}
