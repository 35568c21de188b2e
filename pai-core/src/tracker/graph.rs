//! `graph.png`: scores with the phase switches, learning rate, candidate correlations and
//! epoch times, one panel each.

use plotters::coord::combinators::IntoLogRange;
use plotters::prelude::*;

use super::{TrackerConfig, TrackerState};
use crate::error::{Error, Result};
use crate::phase::Phase;

static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // the font is compiled in and known to parse; a failure would only lose text.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

fn plot_error(e: impl std::fmt::Display) -> Error {
    Error::Io {
        action: "drawing",
        path: "graph.png".into(),
        source: std::io::Error::other(e.to_string()),
    }
}

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-9);
    (lo - pad, hi + pad)
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(23, 190, 207),
];

/// A panel's chart builder: caption, margins and label areas as every panel has them.
fn panel<'a, 'b>(
    area: &'a DrawingArea<BitMapBackend<'b>, plotters::coord::Shift>,
    caption: &str,
) -> ChartBuilder<'a, 'b, BitMapBackend<'b>> {
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(caption, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70);
    builder
}

/// Draws the graph to a temporary file and renames it over `graph.png`.
pub(super) fn draw(config: &TrackerConfig, state: &TrackerState) -> Result<()> {
    register_font();
    let tmp = config.dir.join(".graph.tmp.png");
    {
        let root = BitMapBackend::new(&tmp, (1200, 1400)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let panels = root.split_evenly((4, 1));
        let epochs = state.history.len().max(2) as f64;
        let x = 0f64..epochs;
        let switch_lines = |chart: &mut ChartContext<
            '_,
            BitMapBackend<'_>,
            Cartesian2d<
                plotters::coord::types::RangedCoordf64,
                plotters::coord::types::RangedCoordf64,
            >,
        >,
                            lo: f64,
                            hi: f64|
         -> Result<()> {
            for s in &state.switches {
                let color = if s.to == Phase::Dendrite { RED } else { BLUE };
                let at = s.epoch as f64 + 0.5;
                chart
                    .draw_series(LineSeries::new([(at, lo), (at, hi)], color.stroke_width(2)))
                    .map_err(plot_error)?;
            }
            Ok(())
        };

        // 1. scores
        let (lo, hi) = range(state.history.iter().flat_map(|r| {
            [Some(r.score), Some(r.running), r.test]
                .into_iter()
                .flatten()
        }));
        let direction = if config.maximize {
            "higher is better"
        } else {
            "lower is better"
        };
        let mut chart = panel(
            &panels[0],
            &format!(
                "validation score ({direction}); red: to dendrite phase, blue: to neuron phase"
            ),
        )
        .build_cartesian_2d(x.clone(), lo..hi)
        .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .draw()
            .map_err(plot_error)?;
        switch_lines(&mut chart, lo, hi)?;
        chart
            .draw_series(LineSeries::new(
                state.history.iter().map(|r| (r.epoch as f64, r.score)),
                PALETTE[0].stroke_width(2),
            ))
            .map_err(plot_error)?
            .label("validation")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], PALETTE[0]));
        if config.running_window > 1 {
            chart
                .draw_series(LineSeries::new(
                    state.history.iter().map(|r| (r.epoch as f64, r.running)),
                    PALETTE[3],
                ))
                .map_err(plot_error)?
                .label("running")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], PALETTE[3]));
        }
        if state.history.iter().any(|r| r.test.is_some()) {
            chart
                .draw_series(LineSeries::new(
                    state
                        .history
                        .iter()
                        .filter_map(|r| r.test.map(|t| (r.epoch as f64, t))),
                    PALETTE[1].stroke_width(2),
                ))
                .map_err(plot_error)?
                .label("test")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], PALETTE[1]));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(plot_error)?;

        // 2. learning rate
        let mut rates: Vec<f64> = state
            .history
            .iter()
            .map(|r| r.lr)
            .filter(|v| *v > 0.0)
            .collect();
        rates.sort_by(f64::total_cmp);
        rates.dedup_by(|a, b| (*a - *b).abs() <= 1e-9 * b.abs());
        let (lr_lo, lr_hi) = match (rates.first(), rates.last()) {
            (Some(lo), Some(hi)) => (lo * 0.8, hi * 1.25),
            _ => (1e-4, 1.0),
        };
        // ticks at the rates used (a log axis alone labels only powers of ten, often one)
        let step = rates.len().div_ceil(8).max(1);
        let ticks: Vec<f64> = rates.into_iter().step_by(step).collect();
        let mut chart = panel(&panels[1], "learning rate")
            .build_cartesian_2d(x.clone(), (lr_lo..lr_hi).log_scale().with_key_points(ticks))
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_label_formatter(&|v| format!("{v:.1e}"))
            .draw()
            .map_err(plot_error)?;
        chart
            .draw_series(LineSeries::new(
                state.history.iter().map(|r| (r.epoch as f64, r.lr)),
                PALETTE[2].stroke_width(2),
            ))
            .map_err(plot_error)?;

        // 3. candidate correlations per layer
        let mut layers: Vec<&String> = state
            .history
            .iter()
            .flat_map(|r| r.correlations.iter().map(|(l, _)| l))
            .collect();
        layers.sort();
        layers.dedup();
        let (_, c_hi) = range(
            state
                .history
                .iter()
                .flat_map(|r| r.correlations.iter().map(|(_, c)| *c)),
        );
        let mut chart = panel(
            &panels[2],
            "candidate correlation (best snapshot) per layer",
        )
        .build_cartesian_2d(x.clone(), 0f64..c_hi.max(0.01))
        .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .draw()
            .map_err(plot_error)?;
        switch_lines(&mut chart, 0.0, c_hi.max(0.01))?;
        for (i, layer) in layers.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            chart
                .draw_series(
                    state
                        .history
                        .iter()
                        .flat_map(|r| {
                            r.correlations
                                .iter()
                                .filter(|(l, _)| l == *layer)
                                .map(move |(_, c)| (r.epoch as f64, *c))
                        })
                        .map(|p| Circle::new(p, 3, color.filled())),
                )
                .map_err(plot_error)?
                .label(layer.as_str())
                .legend(move |(x, y)| Circle::new((x + 10, y), 4, color.filled()));
        }
        if !layers.is_empty() {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(plot_error)?;
        }

        // 4. epoch times
        let (_, t_hi) = range(state.history.iter().map(|r| r.seconds));
        let mut chart = panel(
            &panels[3],
            "epoch time, seconds (green: neuron phase, red: dendrite phase)",
        )
        .build_cartesian_2d(x, 0f64..t_hi.max(1e-3))
        .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .draw()
            .map_err(plot_error)?;
        chart
            .draw_series(state.history.iter().map(|r| {
                let color = if r.phase == Phase::Dendrite {
                    RED
                } else {
                    PALETTE[2]
                };
                Circle::new((r.epoch as f64, r.seconds), 3, color.filled())
            }))
            .map_err(plot_error)?;
        root.present().map_err(plot_error)?;
    }
    let target = config.dir.join("graph.png");
    std::fs::rename(&tmp, &target).map_err(|source| Error::Io {
        action: "replacing",
        path: target,
        source,
    })
}
