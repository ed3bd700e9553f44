//! Configuration access through memory: the PCI Express ECAM window (the MCFG table tells
//! the guest where it is).

use std::sync::{Arc, Mutex};

use crate::address::PciAddress;
use crate::bus::PciBus;
use crate::bytes::read_dword_part;
use crate::BusDevice;

/// Bytes of ECAM per bus: 32 devices × 8 functions × 4 KiB.
pub const ECAM_BUS_SIZE: u64 = 1 << 20;

/// The ECAM window, as a [`BusDevice`] for the MMIO bus at the window's base (the config
/// space of bus 0), [`ECAM_BUS_SIZE`] bytes per bus decoded.
///
/// The offset is `bus << 20 | device << 15 | function << 12 | register byte`. Each function
/// has 4 KiB: the 256-byte configuration space, then extended space that reads as zero.
/// Byte, word and dword accesses are served; one that runs past the end of its dword, or
/// reaches an absent function, reads all ones and is not written.
pub struct PciConfigMmio {
    bus: Arc<Mutex<PciBus>>,
}

impl PciConfigMmio {
    /// Access to `bus`'s configuration space.
    pub fn new(bus: Arc<Mutex<PciBus>>) -> Self {
        PciConfigMmio { bus }
    }
}

impl BusDevice for PciConfigMmio {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match PciAddress::from_ecam_offset(offset) {
            Some((address, _)) => self
                .bus
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .read_config(&address),
            None => 0xffff_ffff,
        };
        read_dword_part(value, offset & 3, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some((address, byte)) = PciAddress::from_ecam_offset(offset) else {
            return;
        };
        if byte + data.len() as u64 <= 4 {
            self.bus
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .write_config(&address, byte, data);
        }
    }
}
