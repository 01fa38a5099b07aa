//! Opt-in progress bars for `map` and `imap` (indicatif).

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar fed by a pool call: position = items done.
#[derive(Debug, Clone)]
pub(crate) struct Progress(ProgressBar);

/// The template of the default bar: count, rate and time left.
const TEMPLATE: &str = "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, ETA {eta})";
/// The template when the length is unknown.
const TEMPLATE_UNKNOWN: &str = "{spinner} [{elapsed_precise}] {pos} done ({per_sec})";

impl Progress {
    /// Uses `bar`, or a new bar on stderr with the default style; sets the
    /// length when it is known and the bar has none.
    pub(crate) fn new(bar: Option<ProgressBar>, len: Option<u64>) -> Progress {
        let bar = bar.unwrap_or_else(|| {
            let bar = match len {
                Some(n) => ProgressBar::new(n),
                None => ProgressBar::no_length(),
            };
            let template = if len.is_some() { TEMPLATE } else { TEMPLATE_UNKNOWN };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style);
            }
            bar
        });
        if let (Some(n), None) = (len, bar.length()) {
            bar.set_length(n);
        }
        Progress(bar)
    }

    pub(crate) fn inc(&self, n: u64) {
        self.0.inc(n);
    }

    pub(crate) fn finish(&self) {
        self.0.finish();
    }

    /// Ends the bar where it is, for a call that failed or was dropped: it
    /// stops ticking and stays as it was (indicatif's `abandon`).
    pub(crate) fn abandon(&self) {
        self.0.abandon();
    }
}
