//! A progress bar for batch loops, on standard error, that the caller can switch off.

use std::io::Write;
use std::time::Instant;

/// Shows `label [#####.....] done/total` on standard error while a loop runs.
///
/// ```
/// let mut bar = pai_core::tracker::Progress::new("epoch 1", 100, false); // off: prints nothing
/// for _ in 0..100 {
///     bar.tick();
/// }
/// bar.finish();
/// ```
#[derive(Debug)]
pub struct Progress {
    label: String,
    total: usize,
    done: usize,
    enabled: bool,
    start: Instant,
    drawn: usize,
}

impl Progress {
    /// A bar over `total` steps; `enabled: false` makes every call a no-op.
    pub fn new(label: &str, total: usize, enabled: bool) -> Self {
        Self {
            label: label.to_string(),
            total,
            done: 0,
            enabled,
            start: Instant::now(),
            drawn: usize::MAX,
        }
    }

    /// One step done.
    pub fn tick(&mut self) {
        self.done += 1;
        if !self.enabled {
            return;
        }
        let width = 30;
        let filled = (self.done * width)
            .checked_div(self.total)
            .unwrap_or(width)
            .min(width);
        if filled != self.drawn || self.done == self.total {
            self.drawn = filled;
            let mut err = std::io::stderr().lock();
            let _ = write!(
                err,
                "\r{} [{}{}] {}/{} {:.1}s",
                self.label,
                "#".repeat(filled),
                ".".repeat(width - filled),
                self.done,
                self.total,
                self.start.elapsed().as_secs_f64()
            );
            let _ = err.flush();
        }
    }

    /// Ends the line.
    pub fn finish(&mut self) {
        if self.enabled {
            let _ = writeln!(std::io::stderr());
        }
    }
}
