//! The `signal_handler` thread: waits for SIGTERM and SIGINT (blocked in every other
//! thread) and tells the VMM thread through an eventfd; a second signal ends the process at
//! once.

use super::rules::{any, thread_runtime, Result, Rules};

pub(super) fn rules() -> Result<Rules> {
    let mut rules = thread_runtime()?;
    rules.extend([
        // sigwait.
        any(libc::SYS_rt_sigtimedwait),
        // A second signal while the VMM shuts down: exit now.
        any(libc::SYS_exit_group),
    ]);
    Ok(rules)
}
