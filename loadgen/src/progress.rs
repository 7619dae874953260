//! The progress bar: on stderr, only when stderr is a terminal and --quiet is not given.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

/// A bar of `len` steps (milliseconds of the run, usually); hidden when not wanted.
pub fn bar(quiet: bool, len: u64) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr_with_hz(10));
    pb.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] [{bar:30}] {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb
}

/// Calls `update` every 200 ms until the returned handle is aborted (nothing when hidden).
pub fn tick<F>(pb: &ProgressBar, mut update: F) -> Option<tokio::task::JoinHandle<()>>
where
    F: FnMut(&ProgressBar) + Send + 'static,
{
    if pb.is_hidden() {
        return None;
    }
    let pb = pb.clone();
    Some(tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(200));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            update(&pb);
        }
    }))
}
