//! The MSI-X capability structure in configuration space.
//!
//! ```text
//! +0  id 0x11 | next | message control (table size - 1, function mask bit 14, enable bit 15)
//! +4  table offset (8-byte aligned) | table BIR (bits 2:0)
//! +8  PBA offset (8-byte aligned)   | PBA BIR (bits 2:0)
//! ```

use super::MsixError;
use crate::configuration::{ConfigError, PciConfiguration, CAPABILITY_ID_MSIX};

/// Message control bit: MSI-X is enabled.
pub const MSIX_ENABLE: u16 = 1 << 15;
/// Message control bit: every vector is masked.
pub const MSIX_FUNCTION_MASK: u16 = 1 << 14;
/// The most vectors an MSI-X table can have.
pub const MAX_MSIX_VECTORS: u16 = 2048;
/// Bytes of one table entry.
pub const MSIX_TABLE_ENTRY_SIZE: u64 = 16;

/// Where a device's MSI-X table and PBA live, and how many vectors it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixCapability {
    vectors: u16,
    table_bir: u8,
    table_offset: u32,
    pba_bir: u8,
    pba_offset: u32,
}

/// The BIR (BAR number) must name one of the six BARs.
fn check_bir(bir: u8) -> Result<(), MsixError> {
    if usize::from(bir) < crate::NUM_BARS {
        Ok(())
    } else {
        Err(MsixError::Bir { bir })
    }
}

/// Table and PBA offsets share their dword with the BIR, so they are 8-byte aligned.
fn check_offset(what: &'static str, offset: u32) -> Result<(), MsixError> {
    if offset.is_multiple_of(8) {
        Ok(())
    } else {
        Err(MsixError::Offset { what, offset })
    }
}

impl MsixCapability {
    /// `vectors` table entries (1..=2048), the table at `table_offset` of BAR `table_bir`
    /// and the PBA at `pba_offset` of BAR `pba_bir`.
    pub fn new(
        vectors: u16,
        table_bir: u8,
        table_offset: u32,
        pba_bir: u8,
        pba_offset: u32,
    ) -> Result<Self, MsixError> {
        super::check_vectors(vectors)?;
        check_bir(table_bir)?;
        check_bir(pba_bir)?;
        check_offset("table", table_offset)?;
        check_offset("PBA", pba_offset)?;
        Ok(MsixCapability {
            vectors,
            table_bir,
            table_offset,
            pba_bir,
            pba_offset,
        })
    }

    /// Number of vectors.
    pub fn vectors(&self) -> u16 {
        self.vectors
    }

    /// `(BAR, offset)` of the table.
    pub fn table(&self) -> (u8, u32) {
        (self.table_bir, self.table_offset)
    }

    /// `(BAR, offset)` of the PBA.
    pub fn pba(&self) -> (u8, u32) {
        (self.pba_bir, self.pba_offset)
    }

    /// The capability's bytes after the id and next pointer, as reset: disabled, unmasked.
    pub fn body(&self) -> [u8; 10] {
        let mut body = [0u8; 10];
        body[0..2].copy_from_slice(&(self.vectors - 1).to_le_bytes());
        let table = self.table_offset | u32::from(self.table_bir);
        body[2..6].copy_from_slice(&table.to_le_bytes());
        let pba = self.pba_offset | u32::from(self.pba_bir);
        body[6..10].copy_from_slice(&pba.to_le_bytes());
        body
    }

    /// Which bits of [`body`](Self::body) the guest may write: enable and function mask.
    pub fn write_mask() -> [u8; 10] {
        let mut mask = [0u8; 10];
        mask[0..2].copy_from_slice(&(MSIX_ENABLE | MSIX_FUNCTION_MASK).to_le_bytes());
        mask
    }

    /// Appends the capability to `config`'s list; returns its offset.
    pub fn add_to(&self, config: &mut PciConfiguration) -> Result<usize, ConfigError> {
        config.add_capability_with_mask(CAPABILITY_ID_MSIX, &self.body(), &Self::write_mask())
    }
}

/// The message control word of the MSI-X capability at `offset` in `config`: what to hand
/// to [`super::MsixConfig::set_message_control`] after the guest wrote that register.
pub fn msix_message_control(config: &PciConfiguration, offset: usize) -> u16 {
    // Capabilities are dword aligned, so message control is the register's high half.
    (config.read_register(offset / 4) >> 16) as u16
}
