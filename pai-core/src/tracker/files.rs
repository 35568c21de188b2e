//! The CSV files a run leaves behind. The per-epoch ones (`scores.csv`, `params.csv`,
//! `correlations.csv`) get the new epoch's rows appended after the bytes the last committed
//! epoch left, so an epoch costs the same however long the run; they are rewritten whole
//! (atomically) when a new extra-score column appears or after a resume. The others
//! (`switches.csv`, `best_test_scores.csv`) are small and rewritten every epoch.

use std::fmt::Write;

use super::{EpochRecord, TrackerConfig, TrackerState};
use crate::disk::{append_after, write_atomic};
use crate::error::Result;

fn opt(v: Option<f64>) -> String {
    v.map_or(String::new(), |v| format!("{v}"))
}

/// One CSV file under the run's directory, rewritten: the header, then one line per row.
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

/// What the per-epoch CSV files hold as of the last committed epoch.
#[derive(Debug, Clone, Default)]
pub(super) struct CsvLog {
    /// Epochs written; `None` before the first write of this tracker (a resume rewrites).
    epochs: Option<usize>,
    /// The extra-score columns of `scores.csv`.
    extras: Vec<String>,
    /// Lengths of `scores.csv`, `params.csv`, `correlations.csv`.
    lengths: [u64; 3],
}

const PER_EPOCH: [&str; 3] = ["scores.csv", "params.csv", "correlations.csv"];

/// The per-epoch files' headers, for the extra-score columns `extras`.
fn headers(extras: &[String]) -> [String; 3] {
    let scores = "epoch,phase,score,running,test,train_loss,lr,dendrites,params,bytes,seconds";
    [
        std::iter::once(scores)
            .chain(extras.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(","),
        "epoch,dendrites,params".into(),
        "epoch,layer,best_correlation".into(),
    ]
}

/// One epoch's rows of the per-epoch files, each line ended.
fn rows(r: &EpochRecord, extras: &[String]) -> [String; 3] {
    let mut scores = format!(
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
    for n in extras {
        scores.push(',');
        scores.push_str(&opt(r.extras.get(n).copied()));
    }
    scores.push('\n');
    let params = format!("{},{},{}\n", r.epoch, r.dendrites, r.params);
    let mut correlations = String::new();
    for (layer, c) in &r.correlations {
        // writing to a String cannot fail
        let _ = writeln!(correlations, "{},{layer},{c}", r.epoch);
    }
    [scores, params, correlations]
}

/// Writes every CSV file for the state after an epoch: the per-epoch files by appending the
/// newest epoch's rows when `log` is one epoch behind with the same columns, whole otherwise.
/// Returns the log to commit with the epoch.
pub(super) fn write_all(
    config: &TrackerConfig,
    state: &TrackerState,
    log: &CsvLog,
) -> Result<CsvLog> {
    let epochs = state.history.len();
    // one epoch after the log: its columns and the newest epoch's; else every epoch's
    let follows = log.epochs.is_some_and(|n| n + 1 == epochs);
    let mut extras: Vec<String> = if follows {
        let newest = state.history.last().map(|r| r.extras.keys());
        log.extras
            .iter()
            .cloned()
            .chain(newest.into_iter().flatten().cloned())
            .collect()
    } else {
        state
            .history
            .iter()
            .flat_map(|r| r.extras.keys().cloned())
            .collect()
    };
    extras.sort();
    extras.dedup();
    let mut lengths = [0; 3];
    let mut appended = false;
    if let Some(last) = state.history.last() {
        if follows && log.extras == extras {
            appended = true;
            for (i, row) in rows(last, &extras).iter().enumerate() {
                let path = config.dir.join(PER_EPOCH[i]);
                // `None`: someone removed or cut the file; all three are rewritten below
                let Some(length) = append_after(&path, log.lengths[i], row.as_bytes())? else {
                    appended = false;
                    break;
                };
                lengths[i] = length;
            }
        }
    }
    if !appended {
        let mut texts = headers(&extras).map(|h| h + "\n");
        for r in &state.history {
            for (text, row) in texts.iter_mut().zip(rows(r, &extras)) {
                text.push_str(&row);
            }
        }
        for (i, text) in texts.iter().enumerate() {
            write_atomic(&config.dir.join(PER_EPOCH[i]), text.as_bytes())?;
            lengths[i] = text.len() as u64;
        }
    }
    csv(
        config,
        "switches.csv",
        "epoch,to,dendrites,reason",
        &state.switches,
        |s| format!("{},{},{},{}", s.epoch, s.to, s.dendrites, s.reason),
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
    Ok(CsvLog {
        epochs: Some(epochs),
        extras,
        lengths,
    })
}
