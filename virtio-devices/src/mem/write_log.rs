//! [`WriteLog`]: the guest memory the device thread writes (responses and the used ring),
//! recorded while a live migration needs to know it. KVM's dirty log sees only the vCPUs'
//! writes; the device's own go through the VMM's mapping.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Guest-physical ranges `(address, length)` written since the log was last taken; `None`
/// while nobody records. `recording` lets the device thread skip the lock on every request
/// outside a migration.
#[derive(Debug, Default)]
pub struct WriteLog {
    recording: AtomicBool,
    log: Mutex<Option<Vec<(u64, u64)>>>,
}

impl WriteLog {
    fn lock(&self) -> MutexGuard<'_, Option<Vec<(u64, u64)>>> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts recording (afresh).
    pub fn start(&self) {
        *self.lock() = Some(Vec::new());
        self.recording.store(true, Ordering::SeqCst);
    }

    /// Stops recording and forgets what was recorded.
    pub fn stop(&self) {
        self.recording.store(false, Ordering::SeqCst);
        *self.lock() = None;
    }

    /// Whether writes are being recorded.
    pub fn is_recording(&self) -> bool {
        self.recording.load(Ordering::SeqCst)
    }

    /// Records a write, if recording.
    pub fn record(&self, addr: u64, len: u64) {
        if !self.is_recording() {
            return;
        }
        if let Some(log) = self.lock().as_mut() {
            log.push((addr, len));
        }
    }

    /// What was written since the last call (recording goes on).
    pub fn take(&self) -> Vec<(u64, u64)> {
        self.lock().as_mut().map(std::mem::take).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_only_between_start_and_stop() {
        let log = WriteLog::default();
        log.record(0x1000, 10);
        assert!(log.take().is_empty());
        log.start();
        log.record(0x1000, 10);
        log.record(0x2000, 6);
        assert_eq!(log.take(), vec![(0x1000, 10), (0x2000, 6)]);
        assert!(log.take().is_empty());
        log.record(0x3000, 1);
        log.stop();
        assert!(log.take().is_empty());
        assert!(!log.is_recording());
    }
}
