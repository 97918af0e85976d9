//! `--plot FILE.svg`: each mode's latency distribution in a panel of its own, side by side.
//!
//! A panel is HdrHistogram's percentile plot: latency against the percentile, with the
//! percentile axis in "nines" (x = 1 means 90 %, 2 means 99 %, 3 means 99.9 %), so the tail,
//! where keep-alive, close and polling differ most, gets as much room as the median. Panels keep
//! their own latency scale: close-per-request and short polling are orders of magnitude slower
//! than keep-alive and long polling, and one shared scale would flatten the fast ones.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::report::Latency;

/// The deepest percentile drawn: 99.99 %.
const MAX_NINES: f64 = 4.0;
/// Points per curve.
const STEPS: usize = 200;
const PANEL_WIDTH: u32 = 420;
const HEIGHT: u32 = 400;
const COLORS: [RGBColor; 4] =
    [RGBColor(31, 119, 180), RGBColor(214, 39, 40), RGBColor(44, 160, 44), RGBColor(148, 103, 189)];

/// `--plot`'s value: a path ending in `.svg` (any case). Only SVG is drawn, and a file named
/// `.png` that holds SVG would mislead whatever opens it.
///
/// # Errors
///
/// For any other name.
pub fn svg_path(text: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(text);
    match path.extension().and_then(|e| e.to_str()) {
        Some(extension) if extension.eq_ignore_ascii_case("svg") => Ok(path),
        _ => Err(format!("only SVG is drawn: give a FILE.svg, not {text}")),
    }
}

/// Whether `path` can be written, tried by opening it to append (an existing file keeps its
/// contents) and removing it again if it did not exist.
///
/// # Errors
///
/// `cannot write --plot PATH: REASON`.
pub fn check_writable(path: &Path) -> Result<(), String> {
    let existed = path.exists();
    let opened = std::fs::OpenOptions::new().append(true).create(true).open(path);
    opened.map_err(|e| format!("cannot write --plot {}: {e}", path.display()))?;
    if !existed {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// Writes the SVG.
///
/// # Errors
///
/// When the file cannot be written.
pub fn write(path: &Path, title: &str, distributions: &[(String, Latency)]) -> Result<(), String> {
    let failed = |e: &dyn std::fmt::Display| format!("cannot draw {}: {e}", path.display());
    let panels = distributions.len().max(1) as u32;
    let root = SVGBackend::new(path, (PANEL_WIDTH * panels, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| failed(&e))?;
    let root = root.titled(title, ("sans-serif", 20)).map_err(|e| failed(&e))?;
    let areas = root.split_evenly((1, panels as usize));
    for (i, ((name, latency), area)) in distributions.iter().zip(areas.iter()).enumerate() {
        let points = curve(latency);
        let top = points.iter().map(|&(_, us)| us).fold(0.0, f64::max);
        let (scale, unit) = if top >= 10_000.0 { (1e3, "ms") } else { (1.0, "µs") };
        let caption = format!("{name} ({} samples)", latency.count());
        let mut chart = ChartBuilder::on(area)
            .margin(10)
            .margin_right(30)
            .caption(caption, ("sans-serif", 16))
            .x_label_area_size(35)
            .y_label_area_size(55)
            .build_cartesian_2d(0.0..MAX_NINES, 0.0..(top / scale * 1.05).max(1.0))
            .map_err(|e| failed(&e))?;
        chart
            .configure_mesh()
            .x_labels(5)
            .x_label_formatter(&|nines| percentile_label(*nines))
            .y_label_formatter(&|value| format!("{value:.0}"))
            .x_desc("percentile")
            .y_desc(format!("latency ({unit})"))
            .draw()
            .map_err(|e| failed(&e))?;
        let color = COLORS[i % COLORS.len()];
        let series = LineSeries::new(points.into_iter().map(|(x, us)| (x, us / scale)), color.stroke_width(2));
        chart.draw_series(series).map_err(|e| failed(&e))?;
    }
    root.present().map_err(|e| failed(&e))
}

/// (nines, latency in µs) from 0 % to 99.99 %, evenly spaced in nines.
fn curve(latency: &Latency) -> Vec<(f64, f64)> {
    let nines = |step: usize| MAX_NINES * step as f64 / STEPS as f64;
    (0..=STEPS).map(|step| (nines(step), latency.quantile_us(1.0 - 10f64.powf(-nines(step))))).collect()
}

/// 0 -> "0%", 1 -> "90%", 2 -> "99%", 3 -> "99.9%".
fn percentile_label(nines: f64) -> String {
    let percent = 100.0 * (1.0 - 10f64.powf(-nines));
    let decimals = (nines.round() as usize).saturating_sub(2);
    format!("{percent:.decimals$}%")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn percentile_axis_labels() {
        let labels: Vec<String> = [0.0, 1.0, 2.0, 3.0, 4.0].into_iter().map(percentile_label).collect();
        assert_eq!(labels, ["0%", "90%", "99%", "99.9%", "99.99%"]);
    }

    #[test]
    fn only_svg_paths_are_taken_and_only_writable_ones_pass() {
        for ok in ["x.svg", "dir/X.SVG", "/tmp/a.b.Svg"] {
            assert_eq!(svg_path(ok), Ok(PathBuf::from(ok)));
        }
        for bad in ["x.png", "x", "svg", "x.svg.png"] {
            let error = svg_path(bad).unwrap_err();
            assert!(error.contains("SVG") && error.contains(bad), "{error}");
        }
        let dir = std::env::temp_dir();
        let fresh = dir.join(format!("tether-plot-check-{}.svg", std::process::id()));
        assert_eq!(check_writable(&fresh), Ok(()));
        assert!(!fresh.exists(), "a file the check created is removed again");
        let missing = dir.join(format!("tether-no-such-dir-{}", std::process::id())).join("x.svg");
        let error = check_writable(&missing).unwrap_err();
        assert!(error.starts_with(&format!("cannot write --plot {}: ", missing.display())), "{error}");
    }

    #[test]
    fn curves_rise_and_an_svg_is_written() {
        let mut latency = Latency::default();
        for us in 1..=10_000 {
            latency.record(Duration::from_micros(us));
        }
        let points = curve(&latency);
        assert!(points.windows(2).all(|w| w[0].1 <= w[1].1), "a percentile curve never falls");
        let path = std::env::temp_dir().join(format!("tether-plot-test-{}.svg", std::process::id()));
        write(&path, "test", &[("a".into(), latency.clone()), ("b".into(), Latency::default())]).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(svg.starts_with("<svg") && svg.contains("99.9%"), "{}", &svg[..svg.len().min(200)]);
    }
}
