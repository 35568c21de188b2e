//! `graph.png`: scores with the phase switches, training loss, learning rate, candidate
//! correlations and epoch times, one panel each.

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

/// Largest magnitude a panel's axis reaches: beyond it a diverging run's values are drawn
/// at the edge (plotters' tick search does not end on ranges near `f64::MAX`).
const LIMIT: f64 = 1e12;

/// A panel's value range with 5% padding: finite, wider than the values' own precision, and
/// within [`LIMIT`]; when a few wild values (a diverging epoch) would flatten the rest, the
/// range covers the middle 90% of the values.
fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let mut v: Vec<f64> = values.filter(|v| v.is_finite()).collect();
    if v.is_empty() {
        return (0.0, 1.0);
    }
    v.sort_by(f64::total_cmp);
    let (mut lo, mut hi) = (v[0], v[v.len() - 1]);
    let (p5, p95) = (v[v.len() / 20], v[v.len() - 1 - v.len() / 20]);
    if hi - lo > 100.0 * (p95 - p5).max(f64::MIN_POSITIVE) || !(hi - lo).is_finite() {
        (lo, hi) = (p5, p95);
    }
    let (lo, hi) = (lo.clamp(-LIMIT, LIMIT), hi.clamp(-LIMIT, LIMIT));
    let pad = ((hi - lo) * 0.05)
        .max(hi.abs().max(lo.abs()) * 1e-6)
        .max(1e-9);
    (lo - pad, hi + pad)
}

/// `v` moved into `lo..=hi` (points outside are drawn at the edge).
fn clip(v: f64, (lo, hi): (f64, f64)) -> f64 {
    v.clamp(lo, hi)
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

type Area<'b> = DrawingArea<BitMapBackend<'b>, plotters::coord::Shift>;
type Chart<'a, 'b, Y = plotters::coord::types::RangedCoordf64> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>;

/// Most epochs a panel draws: a longer run is drawn from every k-th epoch (and the last), so
/// a graph costs about the same at epoch 2,000 and at 20,000.
const MAX_POINTS: usize = 2000;

/// What the graph draws of `state` (its history and switches), the history thinned to about
/// [`MAX_POINTS`] epochs.
fn thin(state: &TrackerState) -> TrackerState {
    let every = state.history.len().div_ceil(MAX_POINTS);
    let last = state.history.len().saturating_sub(1);
    TrackerState {
        history: state
            .history
            .iter()
            .enumerate()
            .filter(|(i, _)| i % every == 0 || *i == last)
            .map(|(_, r)| r.clone())
            .collect(),
        switches: state.switches.clone(),
        ..TrackerState::default()
    }
}

/// Draws the graph to a temporary file and renames it over `graph.png`; the temporary file
/// is removed if either fails.
pub(super) fn draw(config: &TrackerConfig, state: &TrackerState) -> Result<()> {
    register_font();
    let thinned;
    let state = if state.history.len() > MAX_POINTS {
        thinned = thin(state);
        &thinned
    } else {
        state
    };
    let target = config.dir.join("graph.png");
    let tmp = crate::disk::temp_path(&target)?;
    let drawn = (|| {
        let root = BitMapBackend::new(&tmp, (1200, 1700)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let panels = root.split_evenly((5, 1));
        let end = state.history.last().map_or(0, |r| r.epoch + 1);
        let epochs = 0f64..end.max(2) as f64;
        scores(&panels[0], config, state, epochs.clone())?;
        train_loss(&panels[1], state, epochs.clone())?;
        learning_rate(&panels[2], state, epochs.clone())?;
        correlations(&panels[3], state, epochs.clone())?;
        epoch_times(&panels[4], state, epochs)?;
        root.present().map_err(plot_error)
    })();
    if let Err(e) = drawn {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    crate::disk::replace(&tmp, &target)
}

/// A panel with linear axes over `epochs` and `lo..hi`, its mesh drawn.
fn linear<'a, 'b>(
    area: &'a Area<'b>,
    caption: &str,
    epochs: std::ops::Range<f64>,
    (lo, hi): (f64, f64),
) -> Result<Chart<'a, 'b>> {
    let mut chart = panel(area, caption)
        .build_cartesian_2d(epochs, lo..hi)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .draw()
        .map_err(plot_error)?;
    Ok(chart)
}

type LogAxis =
    plotters::coord::combinators::WithKeyPoints<plotters::coord::combinators::LogCoord<f64>>;

/// A panel with a linear epoch axis and a log axis over `lo..hi` ticked at `ticks` (a log
/// axis alone labels only powers of ten, often one), its mesh drawn.
fn logarithmic<'a, 'b>(
    area: &'a Area<'b>,
    caption: &str,
    epochs: std::ops::Range<f64>,
    (lo, hi): (f64, f64),
    ticks: Vec<f64>,
) -> Result<Chart<'a, 'b, LogAxis>> {
    let mut chart = panel(area, caption)
        .build_cartesian_2d(epochs, (lo..hi).log_scale().with_key_points(ticks))
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_label_formatter(&|v| format!("{v:.1e}"))
        .draw()
        .map_err(plot_error)?;
    Ok(chart)
}

/// A vertical line at every phase switch: red into a dendrite phase, blue out of it.
fn switch_lines<Y: Ranged<ValueType = f64>>(
    chart: &mut Chart<'_, '_, Y>,
    state: &TrackerState,
    lo: f64,
    hi: f64,
) -> Result<()> {
    for s in &state.switches {
        let color = if s.to == Phase::Dendrite { RED } else { BLUE };
        let at = s.epoch as f64 + 0.5;
        chart
            .draw_series(LineSeries::new([(at, lo), (at, hi)], color.stroke_width(2)))
            .map_err(plot_error)?;
    }
    Ok(())
}

/// A labelled line.
fn line<Y: Ranged<ValueType = f64>>(
    chart: &mut Chart<'_, '_, Y>,
    points: impl Iterator<Item = (f64, f64)>,
    style: ShapeStyle,
    label: &str,
) -> Result<()> {
    chart
        .draw_series(LineSeries::new(points, style))
        .map_err(plot_error)?
        .label(label)
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
    Ok(())
}

/// The legend box of a panel.
fn legend<'a, 'b: 'a, Y: Ranged<ValueType = f64>>(
    chart: &mut Chart<'a, 'b, Y>,
    position: SeriesLabelPosition,
) -> Result<()> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(position)
        .draw()
        .map_err(plot_error)
}

/// How a panel's value axis is drawn.
enum Axis {
    /// Log scale over the bounds, ticked at each power of ten in them.
    Log((f64, f64), Vec<f64>),
    Linear((f64, f64)),
}

/// Log scale when every value is positive and they span two decades or more (a loss falling
/// from 0.7 to 0.005 would be a flat line at zero on a linear axis), linear otherwise.
fn axis_for(values: &[f64]) -> Axis {
    let finite = || values.iter().copied().filter(|v| v.is_finite());
    let smallest = finite().fold(f64::INFINITY, f64::min);
    let largest = finite().fold(0.0, f64::max);
    if smallest > 0.0 && largest / smallest >= 100.0 {
        let (lo, hi) = (
            (smallest * 0.8).max(1.0 / LIMIT),
            (largest * 1.25).min(LIMIT),
        );
        let decades = (lo.log10().floor() as i32..=hi.log10().ceil() as i32)
            .map(|p| 10f64.powi(p))
            .filter(|v| (lo..=hi).contains(v))
            .collect();
        return Axis::Log((lo, hi), decades);
    }
    Axis::Linear(range(finite()))
}

/// Validation (and running and test) scores with the switches, on the axis [`axis_for`]
/// picks.
fn scores(
    area: &Area<'_>,
    config: &TrackerConfig,
    state: &TrackerState,
    epochs: std::ops::Range<f64>,
) -> Result<()> {
    let values: Vec<f64> = state
        .history
        .iter()
        .flat_map(|r| {
            [Some(r.score), Some(r.running), r.test]
                .into_iter()
                .flatten()
        })
        .collect();
    let direction = if config.maximize {
        "higher is better"
    } else {
        "lower is better"
    };
    let switches = "red: to dendrite phase, blue: to neuron phase";
    match axis_for(&values) {
        Axis::Log(bounds, ticks) => {
            let caption = format!("validation score ({direction}, log scale); {switches}");
            let mut chart = logarithmic(area, &caption, epochs, bounds, ticks)?;
            score_lines(&mut chart, config, state, bounds)
        }
        Axis::Linear(bounds) => {
            let caption = format!("validation score ({direction}); {switches}");
            let mut chart = linear(area, &caption, epochs, bounds)?;
            score_lines(&mut chart, config, state, bounds)
        }
    }
}

/// The mean training loss of each epoch (`Tracker::add_train_loss`), with the switches; a
/// note in the caption when none was recorded.
fn train_loss(area: &Area<'_>, state: &TrackerState, epochs: std::ops::Range<f64>) -> Result<()> {
    let values: Vec<f64> = state.history.iter().filter_map(|r| r.train_loss).collect();
    let caption = if values.is_empty() {
        "training loss (none recorded: call Tracker::add_train_loss each epoch)"
    } else {
        "training loss"
    };
    match axis_for(&values) {
        Axis::Log(bounds, ticks) => {
            let caption = format!("{caption}, log scale");
            let mut chart = logarithmic(area, &caption, epochs, bounds, ticks)?;
            loss_line(&mut chart, state, bounds)
        }
        Axis::Linear(bounds) => {
            let mut chart = linear(area, caption, epochs, bounds)?;
            loss_line(&mut chart, state, bounds)
        }
    }
}

/// The training-loss panel's switches and line, on either axis.
fn loss_line<Y: Ranged<ValueType = f64>>(
    chart: &mut Chart<'_, '_, Y>,
    state: &TrackerState,
    bounds: (f64, f64),
) -> Result<()> {
    switch_lines(chart, state, bounds.0, bounds.1)?;
    let points = state
        .history
        .iter()
        .filter_map(|r| r.train_loss.map(|l| (r.epoch as f64, clip(l, bounds))));
    chart
        .draw_series(LineSeries::new(points, PALETTE[4].stroke_width(2)))
        .map_err(plot_error)?;
    Ok(())
}

/// The score panel's lines, switches and legend, on either axis.
fn score_lines<'a, 'b: 'a, Y: Ranged<ValueType = f64>>(
    chart: &mut Chart<'a, 'b, Y>,
    config: &TrackerConfig,
    state: &TrackerState,
    bounds: (f64, f64),
) -> Result<()> {
    switch_lines(chart, state, bounds.0, bounds.1)?;
    let at = |r: &super::EpochRecord, v: f64| (r.epoch as f64, clip(v, bounds));
    let history = || state.history.iter();
    line(
        chart,
        history().map(|r| at(r, r.score)),
        PALETTE[0].stroke_width(2),
        "validation",
    )?;
    if config.running_window > 1 {
        let running = history().map(|r| at(r, r.running));
        line(chart, running, PALETTE[3].into(), "running")?;
    }
    if history().any(|r| r.test.is_some()) {
        let test = history().filter_map(|r| r.test.map(|t| at(r, t)));
        line(chart, test, PALETTE[1].stroke_width(2), "test")?;
    }
    // the corner the scores leave free: a loss falls, an accuracy rises
    let corner = if config.maximize {
        SeriesLabelPosition::LowerRight
    } else {
        SeriesLabelPosition::UpperRight
    };
    legend(chart, corner)
}

/// The learning rate on a log axis, ticked at the rates used.
fn learning_rate(
    area: &Area<'_>,
    state: &TrackerState,
    epochs: std::ops::Range<f64>,
) -> Result<()> {
    let mut rates: Vec<f64> = state
        .history
        .iter()
        .map(|r| r.lr)
        .filter(|v| *v > 0.0)
        .collect();
    rates.sort_by(f64::total_cmp);
    rates.dedup_by(|a, b| (*a - *b).abs() <= 1e-9 * b.abs());
    let (lo, hi) = match (rates.first(), rates.last()) {
        (Some(lo), Some(hi)) => (lo * 0.8, hi * 1.25),
        _ => (1e-4, 1.0),
    };
    let step = rates.len().div_ceil(8).max(1);
    let ticks: Vec<f64> = rates.into_iter().step_by(step).collect();
    let mut chart = logarithmic(area, "learning rate", epochs, (lo, hi), ticks)?;
    chart
        .draw_series(LineSeries::new(
            state.history.iter().map(|r| (r.epoch as f64, r.lr)),
            PALETTE[2].stroke_width(2),
        ))
        .map_err(plot_error)?;
    Ok(())
}

/// Each layer's best candidate correlation, one colour per layer.
fn correlations(area: &Area<'_>, state: &TrackerState, epochs: std::ops::Range<f64>) -> Result<()> {
    let mut layers: Vec<&String> = state
        .history
        .iter()
        .flat_map(|r| r.correlations.iter().map(|(l, _)| l))
        .collect();
    layers.sort();
    layers.dedup();
    let all = state.history.iter().flat_map(|r| r.correlations.iter());
    let hi = range(all.map(|(_, c)| *c)).1.max(0.01);
    let bounds = (0.0, hi);
    let caption = "candidate correlation (best snapshot) per layer";
    let mut chart = linear(area, caption, epochs, (0.0, hi))?;
    switch_lines(&mut chart, state, 0.0, hi)?;
    for (i, layer) in layers.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let points = state.history.iter().flat_map(|r| {
            r.correlations
                .iter()
                .filter(|(l, _)| l == *layer)
                .map(move |(_, c)| (r.epoch as f64, clip(*c, bounds)))
        });
        chart
            .draw_series(points.map(|p| Circle::new(p, 3, color.filled())))
            .map_err(plot_error)?
            .label(layer.as_str())
            .legend(move |(x, y)| Circle::new((x + 10, y), 4, color.filled()));
    }
    if layers.is_empty() {
        return Ok(());
    }
    legend(&mut chart, SeriesLabelPosition::MiddleRight)
}

/// Seconds per epoch, coloured by phase.
fn epoch_times(area: &Area<'_>, state: &TrackerState, epochs: std::ops::Range<f64>) -> Result<()> {
    let hi = range(state.history.iter().map(|r| r.seconds)).1.max(1e-3);
    let caption = "epoch time, seconds (green: neuron phase, red: dendrite phase)";
    let mut chart = linear(area, caption, epochs, (0.0, hi))?;
    chart
        .draw_series(state.history.iter().map(|r| {
            let color = if r.phase == Phase::Dendrite {
                RED
            } else {
                PALETTE[2]
            };
            Circle::new(
                (r.epoch as f64, clip(r.seconds, (0.0, hi))),
                3,
                color.filled(),
            )
        }))
        .map_err(plot_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{axis_for, Axis};

    #[test]
    fn log_axis_only_for_positive_values_spanning_two_decades() {
        let Axis::Log((lo, hi), ticks) = axis_for(&[0.7, 0.05, 0.005, f64::NAN]) else {
            panic!("a loss from 0.7 to 0.005 needs a log axis");
        };
        assert!(lo <= 0.005 && hi >= 0.7, "{lo} {hi}");
        assert_eq!(ticks, vec![0.01, 0.1]);
        assert!(matches!(axis_for(&[0.7, 0.0071]), Axis::Linear(_)));
        assert!(matches!(axis_for(&[0.7, 0.0, 0.001]), Axis::Linear(_)));
        assert!(matches!(axis_for(&[]), Axis::Linear((0.0, 1.0))));
    }
}
