//! The host bridge at 00:00.0: a function with nothing but its identity.

use crate::configuration::{PciConfiguration, PciHeader, CLASS_BRIDGE, SUBCLASS_HOST_BRIDGE};
use crate::device::PciDevice;

/// Vendor id of the host bridge (Intel).
pub const HOST_BRIDGE_VENDOR_ID: u16 = 0x8086;
/// Device id of the host bridge: Intel's id for a virtual PCIe host bridge, which no Linux
/// driver claims or applies quirks to.
pub const HOST_BRIDGE_DEVICE_ID: u16 = 0x0d57;

/// The PCI host bridge: class 06/00, no BARs, no capabilities.
#[derive(Clone, Debug)]
pub struct PciRoot {
    config: PciConfiguration,
}

impl Default for PciRoot {
    fn default() -> Self {
        Self::new()
    }
}

impl PciRoot {
    /// A host bridge in its reset state.
    pub fn new() -> Self {
        PciRoot {
            config: PciConfiguration::new(&PciHeader {
                vendor_id: HOST_BRIDGE_VENDOR_ID,
                device_id: HOST_BRIDGE_DEVICE_ID,
                class_code: CLASS_BRIDGE,
                subclass: SUBCLASS_HOST_BRIDGE,
                ..PciHeader::default()
            }),
        }
    }
}

impl PciDevice for PciRoot {
    fn config(&self) -> &PciConfiguration {
        &self.config
    }

    fn config_mut(&mut self) -> &mut PciConfiguration {
        &mut self.config
    }
}
