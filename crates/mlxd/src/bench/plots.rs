//! The suite's plots as SVG (plotters, SVG backend only): tok/s against
//! model size per system, overhead against generated tokens, the TTFT of
//! every request per system, and concurrency scaling.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;

use super::suite::SuiteReport;

type Series = BTreeMap<String, Vec<(f64, f64)>>;

/// Builds one plot from the report, when it has the data.
type MakePlot = fn(&SuiteReport) -> Option<Plot>;

/// Writes every plot the report has data for; returns their file names.
pub fn write_all(r: &SuiteReport, out: &Path) -> anyhow::Result<Vec<String>> {
    let mut written = Vec::new();
    let plots: [(&str, MakePlot); 4] = [
        ("tps_vs_model_size.svg", tps_vs_size),
        ("overhead_vs_tokens.svg", overhead_vs_tokens),
        ("ttft_distribution.svg", ttft_distribution),
        ("concurrency_scaling.svg", concurrency),
    ];
    for (name, make) in plots {
        if let Some(plot) = make(r) {
            plot.draw(&out.join(name))
                .map_err(|e| anyhow!("drawing {name}: {e}"))?;
            written.push(name.to_owned());
        }
    }
    Ok(written)
}

/// A line (or scatter) chart of named series.
struct Plot {
    title: String,
    x_desc: &'static str,
    y_desc: &'static str,
    series: Series,
    /// Points only, no lines (distributions).
    scatter: bool,
    /// Category names of the x axis (x = 0, 1, ...), when it has them.
    categories: Vec<String>,
    /// Label the x axis at whole numbers only.
    integer_x: bool,
}

fn range(values: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let lo = values.clone().fold(f64::INFINITY, f64::min);
    let hi = values.fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.1).max(hi.abs() * 0.05).max(1e-3);
    (lo - pad, hi + pad)
}

impl Plot {
    fn draw(&self, path: &Path) -> Result<(), Box<dyn std::error::Error + '_>> {
        let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
        root.fill(&WHITE)?;
        let points = || self.series.values().flatten();
        let (x0, x1) = if self.categories.is_empty() {
            range(points().map(|p| p.0))
        } else {
            (-0.5, self.categories.len() as f64 - 0.5)
        };
        let (mut y0, mut y1) = range(points().map(|p| p.1));
        if y0 > 0.0 && !self.scatter {
            y0 = 0.0;
        }
        // Room above the data for the legend.
        y1 += (y1 - y0) * 0.35;
        let mut chart = ChartBuilder::on(&root)
            .caption(&self.title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        let categories = self.categories.clone();
        let integer_x = self.integer_x;
        let mut mesh = chart.configure_mesh();
        mesh.x_desc(self.x_desc)
            .y_desc(self.y_desc)
            .light_line_style(WHITE.mix(0.0));
        let label = move |x: &f64| {
            let i = x.round();
            let whole = (x - i).abs() < 1e-6;
            if !categories.is_empty() {
                match (whole, i >= 0.0) {
                    (true, true) => categories.get(i as usize).cloned().unwrap_or_default(),
                    _ => String::new(),
                }
            } else if whole {
                format!("{i:.0}")
            } else if integer_x {
                String::new()
            } else {
                format!("{x:.1}")
            }
        };
        mesh.x_label_formatter(&label);
        if !self.categories.is_empty() {
            mesh.x_labels(self.categories.len() * 2 + 1);
        }
        mesh.draw()?;
        for (i, (name, points)) in self.series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            if !self.scatter {
                chart.draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))?;
            }
            chart
                .draw_series(
                    points
                        .iter()
                        .map(move |&(x, y)| Circle::new((x, y), 4, color.filled())),
                )?
                .label(name.as_str())
                .legend(move |(x, y)| Circle::new((x + 8, y), 4, color.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    }
}

/// End-to-end tok/s (median) at the longest generation against weight size.
fn tps_vs_size(r: &SuiteReport) -> Option<Plot> {
    let mut series = Series::new();
    for m in &r.models {
        let Some(w) = m.workloads.iter().max_by_key(|w| w.tokens) else {
            continue;
        };
        for s in &w.summaries {
            series
                .entry(s.system.clone())
                .or_default()
                .push((m.weight_bytes as f64 / 1e6, s.e2e_tps.median));
        }
    }
    for points in series.values_mut() {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let tokens = r.tokens.iter().max().copied().unwrap_or(0);
    (!series.is_empty()).then(|| Plot {
        title: format!("End-to-end tok/s at {tokens} generated tokens, by model size"),
        x_desc: "weights (MB)",
        y_desc: "tok/s (median)",
        series,
        scatter: false,
        categories: Vec::new(),
        integer_x: false,
    })
}

/// Tok/s lost against the bare engine, per model and system, by length.
fn overhead_vs_tokens(r: &SuiteReport) -> Option<Plot> {
    let mut series = Series::new();
    for m in &r.models {
        for w in &m.workloads {
            for s in &w.summaries {
                if let Some(pct) = s.e2e_overhead_pct {
                    series
                        .entry(format!("{} · {} (end to end)", m.name, s.system))
                        .or_default()
                        .push((w.tokens as f64, pct));
                }
                if let Some(pct) = s.decode_overhead_pct.filter(|_| s.system == "mlxd stream") {
                    series
                        .entry(format!("{} · mlxd (decode)", m.name))
                        .or_default()
                        .push((w.tokens as f64, pct));
                }
            }
        }
    }
    (!series.is_empty()).then(|| Plot {
        title: "Overhead against the bare engine".into(),
        x_desc: "generated tokens",
        y_desc: "tok/s lost (%)",
        series,
        scatter: false,
        categories: Vec::new(),
        integer_x: true,
    })
}

/// Every streamed request's TTFT, one column per system (and length).
fn ttft_distribution(r: &SuiteReport) -> Option<Plot> {
    let mut series = Series::new();
    let mut categories = Vec::new();
    for m in &r.models {
        for w in &m.workloads {
            for (system, samples) in &w.samples {
                let x = categories.len() as f64;
                let ttfts: Vec<f64> = samples.iter().filter_map(|s| s.ttft_ms).collect();
                if ttfts.is_empty() {
                    continue;
                }
                let label = if r.models.len() > 1 {
                    format!("{} {system} {}", m.name, w.tokens)
                } else {
                    format!("{system} {}", w.tokens)
                };
                categories.push(label);
                let n = ttfts.len() as f64;
                for (i, t) in ttfts.into_iter().enumerate() {
                    // Spread the points of one column a little.
                    let jitter = if n > 1.0 {
                        (i as f64 / (n - 1.0) - 0.5) * 0.3
                    } else {
                        0.0
                    };
                    series
                        .entry(system.clone())
                        .or_default()
                        .push((x + jitter, t));
                }
            }
        }
    }
    (!series.is_empty()).then(|| Plot {
        title: "Time to first token, every measured request".into(),
        x_desc: "system and generated tokens",
        y_desc: "TTFT (ms)",
        series,
        scatter: true,
        categories,
        integer_x: true,
    })
}

/// Aggregate and per-stream tok/s by the number of concurrent streams.
fn concurrency(r: &SuiteReport) -> Option<Plot> {
    let mut series = Series::new();
    for m in &r.models {
        for c in &m.concurrency {
            let prefix = if r.models.len() > 1 {
                format!("{} · {}", m.name, c.system)
            } else {
                c.system.clone()
            };
            series
                .entry(format!("{prefix} aggregate"))
                .or_default()
                .push((c.level as f64, c.aggregate_tps));
            if let Some(s) = c.per_stream_decode_tps {
                series
                    .entry(format!("{prefix} per stream (decode)"))
                    .or_default()
                    .push((c.level as f64, s.median));
            }
        }
    }
    (!series.is_empty()).then(|| Plot {
        title: "Concurrent streams".into(),
        x_desc: "concurrent streams",
        y_desc: "tok/s",
        series,
        scatter: false,
        categories: Vec::new(),
        integer_x: true,
    })
}
