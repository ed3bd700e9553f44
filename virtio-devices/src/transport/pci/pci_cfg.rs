//! The PCI configuration access capability (`VIRTIO_PCI_CAP_PCI_CFG`, virtio 1.x §4.1.4.9):
//! a window through configuration space into BAR 0, for drivers that cannot map the BAR.
//!
//! The driver writes `bar`, `offset` and `length` into the capability, then reads or writes
//! `pci_cfg_data`; the device performs that access of `length` bytes at `offset` of the BAR.
//! An access is carried out only for BAR 0, a length of 1, 2 or 4, and an offset aligned to
//! the length; otherwise the data register keeps what it holds and nothing happens.

use pci::PciConfiguration;

use super::capabilities::PciCfgCap;

/// The window's registers and the access they describe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciCfgWindow {
    cap: PciCfgCap,
}

/// A BAR access the driver asked for through the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowAccess {
    /// Offset in BAR 0.
    pub offset: u64,
    /// Bytes: 1, 2 or 4.
    pub len: usize,
}

impl PciCfgWindow {
    /// The window whose capability registers are `cap`.
    pub fn new(cap: PciCfgCap) -> Self {
        PciCfgWindow { cap }
    }

    /// Whether configuration register `reg` is `pci_cfg_data`, whose accesses go through.
    pub fn is_data_register(&self, reg: usize) -> bool {
        reg == self.cap.data_reg
    }

    /// The access the capability currently describes, if it is one the device performs.
    pub fn access(&self, config: &PciConfiguration) -> Option<WindowAccess> {
        let bar = config.read_register(self.cap.bar_reg) as u8;
        let offset = config.read_register(self.cap.offset_reg);
        let len = config.read_register(self.cap.length_reg);
        let ok = bar == 0 && matches!(len, 1 | 2 | 4) && offset.is_multiple_of(len);
        if !ok {
            log::debug!(
                "virtio-pci: ignoring a PCI_CFG access of {len} bytes at BAR {bar} offset {offset:#x}"
            );
            return None;
        }
        Some(WindowAccess {
            offset: u64::from(offset),
            len: len as usize,
        })
    }

    /// The first `len` bytes of `pci_cfg_data`: what a write through the window writes.
    pub fn data(&self, config: &PciConfiguration, len: usize) -> Vec<u8> {
        let bytes = config.read_register(self.cap.data_reg).to_le_bytes();
        bytes[..len.min(4)].to_vec()
    }

    /// Puts what a read through the window returned into `pci_cfg_data` (the rest zero).
    pub fn set_data(&self, config: &mut PciConfiguration, data: &[u8]) {
        let mut bytes = [0u8; 4];
        let n = data.len().min(4);
        bytes[..n].copy_from_slice(&data[..n]);
        // Not a BAR register, so no reprogram can come of it.
        let _ = config.write_register(self.cap.data_reg, 0, &bytes);
    }
}
