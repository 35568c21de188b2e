//! The CSV files a run leaves behind, rewritten atomically after every epoch.

use super::{TrackerConfig, TrackerState};
use crate::disk::write_atomic;
use crate::error::Result;

fn opt(v: Option<f64>) -> String {
    v.map_or(String::new(), |v| format!("{v}"))
}

/// One CSV file under the run's directory: the header, then one line per row.
fn csv<T>(
    config: &TrackerConfig,
    name: &str,
    header: &str,
    rows: impl IntoIterator<Item = T>,
    line: impl Fn(T) -> String,
) -> Result<()> {
    let mut text = format!("{header}\n");
    for row in rows {
        text.push_str(&line(row));
        text.push('\n');
    }
    write_atomic(&config.dir.join(name), text.as_bytes())
}

/// `scores.csv`, `switches.csv`, `params.csv`, `best_test_scores.csv`, `correlations.csv`.
pub(super) fn write_all(config: &TrackerConfig, state: &TrackerState) -> Result<()> {
    let mut extras: Vec<&String> = state.history.iter().flat_map(|r| r.extras.keys()).collect();
    extras.sort();
    extras.dedup();
    let header = "epoch,phase,score,running,test,train_loss,lr,dendrites,params,bytes,seconds";
    let header: String = std::iter::once(header)
        .chain(extras.iter().map(|n| n.as_str()))
        .collect::<Vec<_>>()
        .join(",");
    csv(config, "scores.csv", &header, &state.history, |r| {
        let mut line = format!(
            "{},{},{},{},{},{},{},{},{},{},{:.6}",
            r.epoch,
            r.phase,
            r.score,
            r.running,
            opt(r.test),
            opt(r.train_loss),
            r.lr,
            r.dendrites,
            r.params,
            r.bytes,
            r.seconds
        );
        for n in &extras {
            line.push(',');
            line.push_str(&opt(r.extras.get(*n).copied()));
        }
        line
    })?;
    csv(
        config,
        "switches.csv",
        "epoch,to,dendrites,reason",
        &state.switches,
        |s| format!("{},{},{},{}", s.epoch, s.to, s.dendrites, s.reason),
    )?;
    csv(
        config,
        "params.csv",
        "epoch,dendrites,params",
        &state.history,
        |r| format!("{},{},{}", r.epoch, r.dendrites, r.params),
    )?;
    csv(
        config,
        "best_test_scores.csv",
        "dendrites,params,best_val,test_at_best_val,epoch",
        &state.architectures,
        |a| {
            let test = opt(a.test);
            format!("{},{},{},{test},{}", a.dendrites, a.params, a.val, a.epoch)
        },
    )?;
    let correlations = state
        .history
        .iter()
        .flat_map(|r| r.correlations.iter().map(move |(l, c)| (r.epoch, l, c)));
    csv(
        config,
        "correlations.csv",
        "epoch,layer,best_correlation",
        correlations,
        |(epoch, layer, c)| format!("{epoch},{layer},{c}"),
    )
}
