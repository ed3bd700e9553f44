//! What a PCI function implements, and the adapter that puts one of its BARs on an MMIO bus.

use std::sync::{Arc, Mutex};

use crate::bar::{BarRegion, BarReprogram, BarRequest};
use crate::configuration::{ConfigError, PciConfiguration};
use crate::BusDevice;

/// An error a device reports to the VMM (the VMM logs it; the guest never sees it).
pub type DeviceError = Box<dyn std::error::Error + Send + Sync>;

/// A PCI function on the root bus (function 0 of its device).
///
/// A device owns a [`PciConfiguration`] and hands it out through [`config`](Self::config)
/// and [`config_mut`](Self::config_mut); the configuration methods default to plain
/// forwarding to it. A device overrides them where its capabilities need side effects (for
/// example calling [`crate::MsixConfig::config_written`] after each configuration write).
pub trait PciDevice: Send {
    /// The device's configuration space.
    fn config(&self) -> &PciConfiguration;

    /// The device's configuration space, to change.
    fn config_mut(&mut self) -> &mut PciConfiguration;

    /// The BARs the device needs. The bus allocates them when the device is added and
    /// calls [`assign_bar`](Self::assign_bar) for each.
    fn bar_requests(&self) -> Vec<BarRequest> {
        Vec::new()
    }

    /// The bus placed a BAR (its size may have been rounded up).
    fn assign_bar(&mut self, bar: &BarRegion) -> Result<(), ConfigError> {
        self.config_mut().add_bar(bar)
    }

    /// Configuration register `reg` (dword index, 0..1024).
    fn read_config_register(&mut self, reg: usize) -> u32 {
        self.config().read_register(reg)
    }

    /// A guest write of `data` (1 to 4 bytes) at byte `offset` of register `reg`. Returns the
    /// BAR move it caused, which the bus carries out.
    fn write_config_register(
        &mut self,
        reg: usize,
        offset: u64,
        data: &[u8],
    ) -> Option<BarReprogram> {
        self.config_mut().write_register(reg, offset, data)
    }

    /// A guest read at `offset` inside BAR `index`. The default reads zeros.
    fn read_bar(&mut self, index: u8, offset: u64, data: &mut [u8]) {
        let _ = (index, offset);
        data.fill(0);
    }

    /// A guest write at `offset` inside BAR `index`. The default ignores it.
    fn write_bar(&mut self, index: u8, offset: u64, data: &[u8]) {
        let _ = (index, offset, data);
    }

    /// The BAR has moved and the VMM has moved its MMIO mapping: move whatever else the
    /// device registered at the old address (ioeventfds, for example).
    fn move_bar(&mut self, change: &BarReprogram) -> Result<(), DeviceError> {
        let _ = change;
        Ok(())
    }
}

/// One BAR of a device as a [`BusDevice`], to insert on the VMM's MMIO bus at the BAR's
/// address with the BAR's size. When the guest moves the BAR, the VMM moves this same
/// object to the new address.
pub struct PciBarBusDevice {
    device: Arc<Mutex<dyn PciDevice>>,
    index: u8,
}

impl PciBarBusDevice {
    /// BAR `index` of `device`.
    pub fn new(device: Arc<Mutex<dyn PciDevice>>, index: u8) -> Self {
        PciBarBusDevice { device, index }
    }
}

impl BusDevice for PciBarBusDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.device
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .read_bar(self.index, offset, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.device
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write_bar(self.index, offset, data);
    }
}
