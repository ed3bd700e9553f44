//! The hardware-reduced ACPI sleep control, sleep status and reset registers the FADT
//! points at. Writing SLP_EN with the \_S5_ sleep type powers off; writing the reset value
//! to the reset register resets.

use std::sync::Arc;

use crate::bus::BusDevice;
use crate::vm_event::{VmEvent, VmEventSignal};

/// Offsets from the device's base port.
pub const SLEEP_CONTROL_OFFSET: u64 = 0;
pub const SLEEP_STATUS_OFFSET: u64 = 1;
pub const RESET_OFFSET: u64 = 2;
pub const PORT_COUNT: u64 = 3;
pub const RESET_VALUE: u8 = 1;

const SLP_EN: u8 = 1 << 5;
const SLP_TYP_SHIFT: u8 = 2;
const SLP_TYP_MASK: u8 = 0x7;

pub struct AcpiPowerDevice {
    events: Arc<VmEventSignal>,
    s5_sleep_type: u8,
}

impl AcpiPowerDevice {
    pub fn new(events: Arc<VmEventSignal>, s5_sleep_type: u8) -> Self {
        AcpiPowerDevice {
            events,
            s5_sleep_type,
        }
    }
}

impl BusDevice for AcpiPowerDevice {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // Sleep status: never "woken"; the others read as zero.
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        log::debug!("ACPI power write at offset {offset}: {data:02x?}");
        let Some(&value) = data.first() else { return };
        match offset {
            SLEEP_CONTROL_OFFSET if value & SLP_EN != 0 => {
                let sleep_type = (value >> SLP_TYP_SHIFT) & SLP_TYP_MASK;
                if sleep_type == self.s5_sleep_type {
                    log::info!("guest powered off (ACPI S5)");
                    self.events.raise(VmEvent::PowerOff);
                } else {
                    log::warn!("guest asked for unsupported sleep type {sleep_type}");
                }
            }
            RESET_OFFSET if value == RESET_VALUE => {
                log::info!("guest reset through the ACPI reset register");
                self.events.raise(VmEvent::Reset);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s5_powers_off_and_reset_resets() {
        let ev = Arc::new(VmEventSignal::new().unwrap());
        let mut dev = AcpiPowerDevice::new(ev.clone(), 5);
        dev.write(SLEEP_CONTROL_OFFSET, &[(3 << SLP_TYP_SHIFT) | SLP_EN]);
        assert_eq!(
            ev.take(),
            None,
            "S3 is not supported and must not power off"
        );
        dev.write(SLEEP_CONTROL_OFFSET, &[(5 << SLP_TYP_SHIFT) | SLP_EN]);
        assert_eq!(ev.take(), Some(VmEvent::PowerOff));
        dev.write(RESET_OFFSET, &[RESET_VALUE]);
        assert_eq!(ev.take(), Some(VmEvent::Reset));
    }
}
