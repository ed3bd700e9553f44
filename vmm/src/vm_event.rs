//! How vCPU threads and devices tell the control loop that the VM must stop or restart.

use std::sync::Mutex;

use vmm_sys_util::eventfd::EventFd;

/// What ended the VM's current run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmEvent {
    /// The guest powered off (ACPI S5).
    PowerOff,
    /// The guest asked for a reset (ACPI reset register, i8042 pulse).
    Reset,
    /// The guest cannot go on: triple fault, KVM internal error, failed entry. The text is
    /// what the log says about it.
    GuestFailure(String),
}

/// The first event raised wins; later ones are dropped (a guest that resets while another
/// vCPU triple-faults is reported once).
///
/// Besides, devices ask the control loop to start or stop their threads (activation and
/// reset), which vCPU threads may not do: [`VmEventSignal::request_device_work`].
pub struct VmEventSignal {
    evt: EventFd,
    pending: Mutex<Option<VmEvent>>,
    device_work: EventFd,
}

impl VmEventSignal {
    pub fn new() -> std::io::Result<Self> {
        Ok(VmEventSignal {
            evt: EventFd::new(libc::EFD_NONBLOCK)?,
            pending: Mutex::new(None),
            device_work: EventFd::new(libc::EFD_NONBLOCK)?,
        })
    }

    /// Records `event` unless one is already pending, and wakes the control loop.
    pub fn raise(&self, event: VmEvent) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.is_none() {
            *pending = Some(event);
            if let Err(e) = self.evt.write(1) {
                log::error!("cannot wake the control loop: {e}");
            }
        }
    }

    /// Takes the pending event, if any.
    pub fn take(&self) -> Option<VmEvent> {
        // Drain the counter; it only says "look at `pending`".
        let _ = self.evt.read();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// The descriptor the control loop waits on.
    pub fn eventfd(&self) -> &EventFd {
        &self.evt
    }

    /// A device has activation or reset work for the control loop.
    pub fn request_device_work(&self) {
        if let Err(e) = self.device_work.write(1) {
            log::error!("cannot wake the control loop for device work: {e}");
        }
    }

    /// The descriptor the control loop waits on for device work; reading it clears it.
    pub fn device_work_event(&self) -> &EventFd {
        &self.device_work
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_event_wins() {
        let s = VmEventSignal::new().unwrap();
        assert_eq!(s.take(), None);
        s.raise(VmEvent::Reset);
        s.raise(VmEvent::PowerOff);
        assert_eq!(s.take(), Some(VmEvent::Reset));
        assert_eq!(s.take(), None);
    }
}
