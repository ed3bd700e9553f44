//! Just enough of the i8042 keyboard controller for the reset line: a write of 0xFE to the
//! command port (0x64) resets the machine. There is no keyboard behind it.

use std::sync::Arc;

use crate::bus::BusDevice;
use crate::vm_event::{VmEvent, VmEventSignal};

const CMD_PULSE_RESET: u8 = 0xfe;
/// Offset of the command/status port when the device spans 0x60..=0x64.
const COMMAND_PORT_OFFSET: u64 = 4;

pub struct I8042Device {
    events: Arc<VmEventSignal>,
}

impl I8042Device {
    pub fn new(events: Arc<VmEventSignal>) -> Self {
        I8042Device { events }
    }
}

impl BusDevice for I8042Device {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // Status: output buffer empty, input buffer empty; data: nothing.
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        log::debug!("i8042 write at offset {offset}: {data:02x?}");
        if offset == COMMAND_PORT_OFFSET && data.first() == Some(&CMD_PULSE_RESET) {
            log::info!("guest reset through the i8042");
            self.events.raise(VmEvent::Reset);
        }
    }
}
