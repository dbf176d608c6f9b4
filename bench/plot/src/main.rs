//! Draws the three IO500 scores of every target of `bench/compare.sh` as a
//! grouped bar chart, each score normalised to the local disk (`ext4j`),
//! on a log scale.
//!
//!   sealfs-compare-plot RESULTS.tsv OUT.png [TITLE]
//!
//! RESULTS.tsv is the driver's `io500-compare.tsv`: a header, then
//! `target key value unit load` lines (value `FAIL` when not measured).

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::collections::BTreeMap;
use std::process::ExitCode;

const SCORES: [(&str, &str); 3] =
    [("score-bandwidth", "bandwidth score"), ("score-iops", "metadata score"), ("score-total", "total score")];
const BASE: &str = "ext4j";

/// Targets in file order, and each target's values by key.
type Table = (Vec<String>, BTreeMap<String, BTreeMap<String, f64>>);

fn read(path: &str) -> Result<Table, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let mut order = Vec::new();
    let mut vals: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < 3 {
            continue;
        }
        if !order.iter().any(|t| t == f[0]) {
            order.push(f[0].to_string());
        }
        if let Ok(v) = f[2].parse::<f64>() {
            vals.entry(f[0].to_string()).or_default().insert(f[1].to_string(), v);
        }
    }
    Ok((order, vals))
}

fn draw(tsv: &str, png: &str, title: &str) -> Result<(), Box<dyn std::error::Error>> {
    let (order, vals) = read(tsv)?;
    let base = vals.get(BASE).ok_or(format!("{tsv}: no {BASE} row to normalise to"))?;
    // ratio[target][score], None when either side is missing or zero
    let ratios: Vec<Vec<Option<f64>>> = order
        .iter()
        .map(|t| {
            SCORES
                .iter()
                .map(|(k, _)| {
                    let v = vals.get(t)?.get(*k)?;
                    let b = base.get(*k)?;
                    (*v > 0.0 && *b > 0.0).then(|| v / b)
                })
                .collect()
        })
        .collect();
    let present: Vec<f64> = ratios.iter().flatten().flatten().copied().collect();
    let lo = present.iter().copied().fold(1.0f64, f64::min);
    let hi = present.iter().copied().fold(1.0f64, f64::max);
    let (ymin, ymax) = (10f64.powf((lo.log10() - 0.1).floor()), 10f64.powf((hi.log10() + 0.2).ceil()));

    let root = BitMapBackend::new(png, (1400, 720)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(660);
    let mut chart = ChartBuilder::on(&top)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(10)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..order.len() as f64, (ymin..ymax).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .disable_x_axis()
        .y_desc(format!("score / {BASE}'s score (log)"))
        .y_label_formatter(&|v| if *v >= 1.0 { format!("{v:.0}×") } else { format!("{v}×") })
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    let colors = [RGBColor(52, 101, 164), RGBColor(204, 102, 0), RGBColor(78, 154, 6)];
    let width = 0.8 / SCORES.len() as f64;
    for (s, (_, name)) in SCORES.iter().enumerate() {
        let c = colors[s];
        let bars: Vec<_> = ratios
            .iter()
            .enumerate()
            .filter_map(|(t, r)| {
                let v = r[s]?;
                let x0 = t as f64 + 0.1 + s as f64 * width;
                Some(Rectangle::new([(x0, ymin), (x0 + width * 0.92, v)], c.filled()))
            })
            .collect();
        chart
            .draw_series(bars)?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], c.filled()));
        // the ratio above each bar
        let labels: Vec<_> = ratios
            .iter()
            .enumerate()
            .filter_map(|(t, r)| {
                let v = r[s]?;
                let x = t as f64 + 0.1 + (s as f64 + 0.46) * width;
                let txt = if v >= 10.0 { format!("{v:.0}") } else if v >= 0.1 { format!("{v:.2}") } else { format!("{v:.3}") };
                Some(Text::new(
                    txt,
                    (x, v * 1.08),
                    ("sans-serif", 13).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Bottom)),
                ))
            })
            .collect();
        chart.draw_series(labels)?;
    }
    // the reference line: equal to the local disk
    chart.draw_series(std::iter::once(PathElement::new(vec![(0.0, 1.0), (order.len() as f64, 1.0)], BLACK.stroke_width(1))))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()?;
    // target names under the groups, in the bottom strip
    for (t, name) in order.iter().enumerate() {
        let (px, _) = chart.backend_coord(&(t as f64 + 0.5, ymin));
        let missing = ratios[t].iter().all(|r| r.is_none());
        let label = if missing { format!("{name} (failed)") } else { name.clone() };
        bottom.draw(&Text::new(
            label,
            (px, 6),
            ("sans-serif", 15).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Top)),
        ))?;
    }
    root.present()?;
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: sealfs-compare-plot RESULTS.tsv OUT.png [TITLE]");
        return ExitCode::from(2);
    }
    let title = args.get(3).map(String::as_str).unwrap_or("IO500 scores relative to ext4j");
    match draw(&args[1], &args[2], title) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sealfs-compare-plot: {e}");
            ExitCode::FAILURE
        }
    }
}
