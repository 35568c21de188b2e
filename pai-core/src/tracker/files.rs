//! The CSV files a run leaves behind, rewritten atomically after every epoch.

use std::fmt::Write as _;

use super::{TrackerConfig, TrackerState};
use crate::disk::write_atomic;
use crate::error::Result;

fn opt(v: Option<f64>) -> String {
    v.map_or(String::new(), |v| format!("{v}"))
}

fn write(config: &TrackerConfig, name: &str, text: &str) -> Result<()> {
    write_atomic(&config.dir.join(name), text.as_bytes())
}

/// `scores.csv`, `switches.csv`, `params.csv`, `best_test_scores.csv`, `correlations.csv`.
pub(super) fn write_all(config: &TrackerConfig, state: &TrackerState) -> Result<()> {
    let extra_names: Vec<&String> = {
        let mut names: Vec<&String> = state.history.iter().flat_map(|r| r.extras.keys()).collect();
        names.sort();
        names.dedup();
        names
    };
    let mut scores =
        String::from("epoch,phase,score,running,test,train_loss,lr,dendrites,params,seconds");
    for n in &extra_names {
        let _ = write!(scores, ",{n}");
    }
    scores.push('\n');
    for r in &state.history {
        let _ = write!(
            scores,
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
        for n in &extra_names {
            let _ = write!(scores, ",{}", opt(r.extras.get(*n).copied()));
        }
        scores.push('\n');
    }
    write(config, "scores.csv", &scores)?;

    let mut switches = String::from("epoch,to,dendrites,reason\n");
    for s in &state.switches {
        let _ = writeln!(
            switches,
            "{},{},{},{}",
            s.epoch, s.to, s.dendrites, s.reason
        );
    }
    write(config, "switches.csv", &switches)?;

    let mut params = String::from("epoch,dendrites,params\n");
    for r in &state.history {
        let _ = writeln!(params, "{},{},{}", r.epoch, r.dendrites, r.params);
    }
    write(config, "params.csv", &params)?;

    let mut best = String::from("dendrites,params,best_val,test_at_best_val,epoch\n");
    for a in &state.architectures {
        let _ = writeln!(
            best,
            "{},{},{},{},{}",
            a.dendrites,
            a.params,
            a.val,
            opt(a.test),
            a.epoch
        );
    }
    write(config, "best_test_scores.csv", &best)?;

    let mut corr = String::from("epoch,layer,best_correlation\n");
    for r in &state.history {
        for (layer, c) in &r.correlations {
            let _ = writeln!(corr, "{},{},{}", r.epoch, layer, c);
        }
    }
    write(config, "correlations.csv", &corr)
}
