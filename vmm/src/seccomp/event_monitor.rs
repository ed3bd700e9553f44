//! The `event-monitor` thread: takes lines from a channel and writes them to the file or
//! descriptor opened before it started. Nothing but the runtime: write, futex, close.

use super::rules::{thread_runtime, Result, Rules};

pub(super) fn rules() -> Result<Rules> {
    thread_runtime()
}
