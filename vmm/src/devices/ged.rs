//! The ACPI Generic Event Device's register: the guest's `_EVT` method reads which events
//! are pending (reading clears them), after the device raised its interrupt. Today the only
//! event is the power button; the DSDT turns it into `Notify(\_SB.PWRB, 0x80)`.

use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;

pub struct GedDevice {
    pending: u8,
    irqfd: EventFd,
}

impl GedDevice {
    /// `irqfd` is registered on the GSI the DSDT gives the GED.
    pub fn new(irqfd: EventFd) -> Self {
        GedDevice { pending: 0, irqfd }
    }

    /// Events latched and not yet read, to save.
    pub fn pending(&self) -> u8 {
        self.pending
    }

    /// Brings back what [`pending`](Self::pending) saved (the interrupt, if any, is in the
    /// saved IOAPIC).
    pub fn set_pending(&mut self, events: u8) {
        self.pending = events;
    }

    /// Latches `events` (bits of `acpi::GED_EVENT_*`) and interrupts the guest.
    pub fn notify(&mut self, events: u8) -> std::io::Result<()> {
        self.pending |= events;
        self.irqfd.write(1)
    }
}

impl BusDevice for GedDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset == 0 {
            if let Some(first) = data.first_mut() {
                *first = std::mem::take(&mut self.pending);
            }
        }
    }

    fn write(&mut self, _offset: u64, _data: &[u8]) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_returns_and_clears_pending_events() {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut ged = GedDevice::new(irq.try_clone().unwrap());
        let mut b = [0u8];
        ged.read(0, &mut b);
        assert_eq!(b[0], 0);
        ged.notify(1).unwrap();
        assert_eq!(irq.read().unwrap(), 1);
        ged.read(0, &mut b);
        assert_eq!(b[0], 1);
        ged.read(0, &mut b);
        assert_eq!(b[0], 0);
    }
}
