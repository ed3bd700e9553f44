//! Configuration access through I/O ports: CONFIG_ADDRESS at 0xCF8 and CONFIG_DATA at
//! 0xCFC..=0xCFF ("configuration mechanism #1").

use std::sync::{Arc, Mutex};

use crate::address::PciAddress;
use crate::bus::PciBus;
use crate::bytes::read_dword_part;
use crate::BusDevice;

/// First port of the pair; register [`PciConfigIo`] here.
pub const PCI_CONFIG_IO_PORT: u64 = 0xcf8;
/// Ports [`PciConfigIo`] decodes from [`PCI_CONFIG_IO_PORT`].
pub const PCI_CONFIG_IO_PORT_SIZE: u64 = 8;

/// Offset of CONFIG_DATA from CONFIG_ADDRESS.
const DATA_OFFSET: u64 = 4;

/// The 0xCF8/0xCFC port pair, as a [`BusDevice`] for the port I/O bus at
/// [`PCI_CONFIG_IO_PORT`] with size [`PCI_CONFIG_IO_PORT_SIZE`].
///
/// CONFIG_ADDRESS is only reached by dword accesses at 0xCF8 (byte accesses there, like
/// the reset control register at 0xCF9 on a PC, are not this device's and are ignored).
/// CONFIG_DATA takes byte, word and dword accesses at 0xCFC..=0xCFF, each reaching the same
/// bytes of the selected register. Accesses while the enable bit is clear, to an absent
/// function, or that run past 0xCFF read all ones and are not written.
pub struct PciConfigIo {
    bus: Arc<Mutex<PciBus>>,
    config_address: u32,
}

impl PciConfigIo {
    /// Access to `bus`'s configuration space.
    pub fn new(bus: Arc<Mutex<PciBus>>) -> Self {
        PciConfigIo {
            bus,
            config_address: 0,
        }
    }

    /// CONFIG_ADDRESS as the guest last wrote it, to save (a guest paused between writing it
    /// and reading CONFIG_DATA reads the register it selected after a restore).
    pub fn config_address(&self) -> u32 {
        self.config_address
    }

    /// Brings back what [`config_address`](Self::config_address) saved.
    pub fn set_config_address(&mut self, value: u32) {
        self.config_address = value;
    }

    /// The register CONFIG_ADDRESS selects, if enabled.
    fn selected(&self) -> Option<PciAddress> {
        PciAddress::from_config_address(self.config_address)
    }
}

impl BusDevice for PciConfigIo {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset == 0 && data.len() == 4 {
            data.copy_from_slice(&self.config_address.to_le_bytes());
            return;
        }
        let Some(byte) = offset.checked_sub(DATA_OFFSET) else {
            data.fill(0xff);
            return;
        };
        let value = match self.selected() {
            Some(address) => self
                .bus
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .read_config(&address),
            None => 0xffff_ffff,
        };
        read_dword_part(value, byte, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == 0 {
            if let Ok(value) = <[u8; 4]>::try_from(data) {
                self.config_address = u32::from_le_bytes(value);
            }
            return;
        }
        let Some(byte) = offset.checked_sub(DATA_OFFSET) else {
            return;
        };
        let fits = byte
            .checked_add(data.len() as u64)
            .is_some_and(|end| end <= 4);
        if let (Some(address), true) = (self.selected(), fits) {
            self.bus
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .write_config(&address, byte, data);
        }
    }
}
