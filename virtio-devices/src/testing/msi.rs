//! An MSI group that records the vectors it delivers, so tests can wait for interrupts
//! raised on a device thread.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use pci::{MsiError, MsiInterruptGroup, MsiMessage};

/// See the module doc.
#[derive(Default)]
pub struct RecordingMsi {
    triggered: Mutex<Vec<u16>>,
    changed: Condvar,
    /// Every `update` call: vector, message, masked.
    pub updates: Mutex<Vec<(u16, MsiMessage, bool)>>,
}

impl RecordingMsi {
    /// How many times `vector` was delivered.
    pub fn count(&self, vector: u16) -> usize {
        self.triggered
            .lock()
            .unwrap()
            .iter()
            .filter(|&&v| v == vector)
            .count()
    }

    /// Every delivery so far, in order.
    pub fn all(&self) -> Vec<u16> {
        self.triggered.lock().unwrap().clone()
    }

    /// Waits up to `timeout` until `vector` was delivered at least `n` times.
    pub fn wait_for(&self, vector: u16, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut triggered = self.triggered.lock().unwrap();
        loop {
            if triggered.iter().filter(|&&v| v == vector).count() >= n {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            triggered = self
                .changed
                .wait_timeout(triggered, deadline - now)
                .unwrap()
                .0;
        }
    }
}

impl MsiInterruptGroup for RecordingMsi {
    fn update(&self, vector: u16, msg: MsiMessage, masked: bool) -> Result<(), MsiError> {
        self.updates.lock().unwrap().push((vector, msg, masked));
        Ok(())
    }

    fn trigger(&self, vector: u16) -> Result<(), MsiError> {
        self.triggered.lock().unwrap().push(vector);
        self.changed.notify_all();
        Ok(())
    }
}
