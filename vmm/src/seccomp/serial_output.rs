//! The `serial-output` thread: waits for the guest's serial output (a condition variable)
//! and writes it to the terminal or log file opened before it started. Nothing but the
//! runtime: write, futex, close.

use super::rules::{thread_runtime, Result, Rules};

pub(super) fn rules() -> Result<Rules> {
    thread_runtime()
}
