//! The `signal_handler` thread, as in Cloud Hypervisor: SIGTERM and SIGINT are blocked in
//! every other thread and waited for here. The first one asks the VMM thread, through an
//! eventfd, to shut the VM down and exit as `vmm.shutdown` does (the terminal is restored,
//! the API socket removed); a second one ends the process at once.

use std::io;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

use crate::seccomp::ThreadFilter;

/// The signals the thread handles.
const SIGNALS: [libc::c_int; 2] = [libc::SIGTERM, libc::SIGINT];

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set it is given; sigaddset adds valid signals.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in SIGNALS {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// What the VMM thread watches: `event` becomes readable when a signal arrived.
pub struct ExitSignal {
    pub event: EventFd,
    received: Arc<AtomicI32>,
}

impl ExitSignal {
    /// The signal that arrived, if one did.
    pub fn received(&self) -> Option<i32> {
        let _ = self.event.read();
        match self.received.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s),
        }
    }
}

/// Blocks SIGTERM and SIGINT in the calling thread, and so in every thread it starts from
/// now on. Call it before starting any thread: a thread that has them unblocked would take
/// them and die of them.
pub fn block_exit_signals() -> io::Result<()> {
    let set = signal_set();
    // SAFETY: `set` is initialised; the old mask is not asked for.
    let ret = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if ret != 0 {
        return Err(io::Error::from_raw_os_error(ret));
    }
    Ok(())
}

/// Starts the thread that waits for SIGTERM and SIGINT, once they are blocked
/// ([`block_exit_signals`]).
pub fn start(seccomp: ThreadFilter) -> io::Result<ExitSignal> {
    let set = signal_set();
    let event = EventFd::new(libc::EFD_NONBLOCK)?;
    let notify = event.try_clone()?;
    let received = Arc::new(AtomicI32::new(0));
    let record = received.clone();
    // Never joined: it waits until the process exits.
    std::thread::Builder::new()
        .name("signal_handler".into())
        .spawn(move || {
            if let Err(e) = seccomp.apply_to_current() {
                log::error!("SIGTERM and SIGINT stay blocked: {e}");
                return;
            }
            wait_for_signals(&set, &record, &notify);
        })?;
    Ok(ExitSignal { event, received })
}

fn wait_for_signals(set: &libc::sigset_t, record: &AtomicI32, notify: &EventFd) {
    loop {
        let mut signal: libc::c_int = 0;
        // SAFETY: `set` is initialised and `signal` is ours to write.
        let ret = unsafe { libc::sigwait(set, &mut signal) };
        if ret != 0 {
            continue;
        }
        if record.swap(signal, Ordering::SeqCst) != 0 {
            // A second signal: the clean shutdown is taking too long for the user.
            // SAFETY: _exit ends the process without running anything else.
            unsafe { libc::_exit(128 + signal) };
        }
        log::warn!("signal {signal} received: shutting down");
        if notify.write(1).is_err() {
            // SAFETY: as above; without the eventfd the VMM cannot be told.
            unsafe { libc::_exit(128 + signal) };
        }
    }
}
