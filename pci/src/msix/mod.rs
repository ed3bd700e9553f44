//! MSI-X: the capability ([`MsixCapability`]), and the table and pending bit array the device
//! exposes through a BAR ([`MsixConfig`]).
//!
//! A vector fires only when MSI-X is enabled and neither the function mask nor the vector's
//! own mask is set. A vector that fires while masked sets its pending bit instead, and is
//! delivered (and the bit cleared) as soon as it is unmasked. While MSI-X is disabled the
//! device has no way to interrupt (there is no INTx), so interrupts are dropped.

mod capability;
mod state;
mod table;
#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use capability::{
    msix_message_control, MsixCapability, MAX_MSIX_VECTORS, MSIX_ENABLE, MSIX_FUNCTION_MASK,
    MSIX_TABLE_ENTRY_SIZE,
};
pub use state::{MsixEntryState, MsixRestoreError, MsixState};
pub use table::MsixTableEntry;

use crate::configuration::PciConfiguration;
use crate::msi::{MsiError, MsiInterruptGroup};

/// An MSI-X capability that cannot be built as asked (a VMM-side mistake).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum MsixError {
    /// Tables have 1 to 2048 entries.
    #[error("an MSI-X table has 1 to 2048 vectors, not {vectors}")]
    VectorCount {
        /// The count asked for.
        vectors: u16,
    },
    /// The BIR names a BAR that does not exist.
    #[error("MSI-X BIR {bir} does not name a BAR (0..=5)")]
    Bir {
        /// The BIR asked for.
        bir: u8,
    },
    /// Table and PBA offsets are 8-byte aligned.
    #[error("MSI-X {what} offset {offset:#x} is not 8-byte aligned")]
    Offset {
        /// "table" or "PBA".
        what: &'static str,
        /// The offset asked for.
        offset: u32,
    },
}

/// Checks a vector count.
fn check_vectors(vectors: u16) -> Result<(), MsixError> {
    if (1..=MAX_MSIX_VECTORS).contains(&vectors) {
        Ok(())
    } else {
        Err(MsixError::VectorCount { vectors })
    }
}

/// The MSI-X state of one device: table, pending bits, enable and function mask.
///
/// The device maps [`read_table`](Self::read_table)/[`write_table`](Self::write_table) and
/// [`read_pba`](Self::read_pba) at the table and PBA offsets of its BARs, calls
/// [`set_message_control`](Self::set_message_control) after each guest write to the
/// capability's message control, and raises interrupts with [`trigger`](Self::trigger).
pub struct MsixConfig {
    table: Vec<MsixTableEntry>,
    pba: Vec<u64>,
    enabled: bool,
    function_masked: bool,
    group: Arc<dyn MsiInterruptGroup>,
}

impl std::fmt::Debug for MsixConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsixConfig")
            .field("table", &self.table)
            .field("pba", &self.pba)
            .field("enabled", &self.enabled)
            .field("function_masked", &self.function_masked)
            .finish_non_exhaustive()
    }
}

impl MsixConfig {
    /// `vectors` entries (1..=2048), all masked, delivered through `group`.
    pub fn new(vectors: u16, group: Arc<dyn MsiInterruptGroup>) -> Result<Self, MsixError> {
        check_vectors(vectors)?;
        let n = usize::from(vectors);
        Ok(MsixConfig {
            table: vec![MsixTableEntry::default(); n],
            pba: vec![0; n.div_ceil(64)],
            enabled: false,
            function_masked: false,
            group,
        })
    }

    /// Number of vectors.
    pub fn vectors(&self) -> u16 {
        // `new` bounds the table to 2048 entries.
        self.table.len() as u16
    }

    /// Bytes of the table: 16 per vector.
    pub fn table_len(&self) -> u64 {
        u64::from(self.vectors()) * MSIX_TABLE_ENTRY_SIZE
    }

    /// Bytes of the PBA: one bit per vector, in whole qwords.
    pub fn pba_len(&self) -> u64 {
        self.pba.len() as u64 * 8
    }

    /// Whether the guest enabled MSI-X.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether the guest set the function mask.
    pub fn function_masked(&self) -> bool {
        self.function_masked
    }

    /// Table entry `vector`.
    pub fn entry(&self, vector: u16) -> Option<MsixTableEntry> {
        self.table.get(usize::from(vector)).copied()
    }

    /// Whether `vector` may not fire now: MSI-X disabled, function masked, or vector masked.
    /// Vectors that do not exist are masked.
    pub fn masked(&self, vector: u16) -> bool {
        self.table
            .get(usize::from(vector))
            .is_none_or(|entry| self.entry_masked(entry))
    }

    /// Whether `vector`'s pending bit is set.
    pub fn pending(&self, vector: u16) -> bool {
        let v = usize::from(vector);
        self.pba
            .get(v / 64)
            .is_some_and(|q| q & (1 << (v % 64)) != 0)
    }

    /// Reads the table at byte `offset` (any size and alignment; bytes past the table read 0).
    pub fn read_table(&self, offset: u64, data: &mut [u8]) {
        for (i, out) in data.iter_mut().enumerate() {
            *out = entry_byte(offset, i).map_or(0, |(v, at)| {
                self.table.get(v).map_or(0, |entry| entry.byte(at))
            });
        }
    }

    /// Writes the table at byte `offset` (any size and alignment; bytes past the table are
    /// ignored). Each entry whose effective mask changed, or whose message changed while it
    /// is unmasked, is handed to the interrupt group; an entry unmasked with its pending bit
    /// set fires.
    pub fn write_table(&mut self, offset: u64, data: &[u8]) {
        let mut touched: Vec<(usize, MsixTableEntry)> = Vec::new();
        for (i, &byte) in data.iter().enumerate() {
            let Some((v, at)) = entry_byte(offset, i) else {
                continue;
            };
            let Some(entry) = self.table.get_mut(v) else {
                continue;
            };
            if !touched.iter().any(|(t, _)| *t == v) {
                touched.push((v, *entry));
            }
            entry.set_byte(at, byte);
        }
        for (v, before) in touched {
            let was_masked = self.entry_masked(&before);
            self.refresh(v, before.msg, was_masked);
        }
    }

    /// Reads the PBA at byte `offset` (any size and alignment; bytes past it read 0).
    pub fn read_pba(&self, offset: u64, data: &mut [u8]) {
        for (i, out) in data.iter_mut().enumerate() {
            let byte = offset
                .checked_add(i as u64)
                .and_then(|at| usize::try_from(at).ok());
            *out = byte.map_or(0, |at| {
                self.pba.get(at / 8).map_or(0, |q| q.to_le_bytes()[at % 8])
            });
        }
    }

    /// Guest writes to the PBA: it is read-only, so they are ignored.
    pub fn write_pba(&mut self, _offset: u64, _data: &[u8]) {}

    /// Applies the capability's message control word after the guest wrote it: the enable
    /// and function mask bits. Vectors whose effective mask changed are updated, and
    /// pending vectors that became unmasked fire.
    pub fn set_message_control(&mut self, control: u16) {
        let enabled = control & MSIX_ENABLE != 0;
        let function_masked = control & MSIX_FUNCTION_MASK != 0;
        if (enabled, function_masked) == (self.enabled, self.function_masked) {
            return;
        }
        let was_masked: Vec<bool> = self.table.iter().map(|e| self.entry_masked(e)).collect();
        self.enabled = enabled;
        self.function_masked = function_masked;
        for (v, was_masked) in was_masked.into_iter().enumerate() {
            let msg = self.table[v].msg;
            self.refresh(v, msg, was_masked);
        }
    }

    /// To call after every guest write to configuration register `reg`: when that register
    /// holds the message control of the MSI-X capability at `cap_offset` in `config`, applies
    /// it (see [`set_message_control`](Self::set_message_control)).
    pub fn config_written(&mut self, config: &PciConfiguration, cap_offset: usize, reg: usize) {
        if reg == cap_offset / 4 {
            self.set_message_control(msix_message_control(config, cap_offset));
        }
    }

    /// Raises `vector`: sent now if it may fire, marked pending if it is masked, dropped if
    /// MSI-X is disabled.
    pub fn trigger(&mut self, vector: u16) -> Result<(), MsiError> {
        let v = usize::from(vector);
        let entry = self.table.get(v).ok_or(MsiError::VectorOutOfRange {
            vector,
            count: self.table.len(),
        })?;
        if !self.enabled {
            log::debug!("MSI-X vector {vector} raised while MSI-X is disabled: dropped");
            return Ok(());
        }
        if self.entry_masked(entry) {
            self.set_pending(v, true);
            return Ok(());
        }
        self.group.trigger(vector)
    }

    /// Back to the reset state: disabled, unmasked function, every entry masked and empty,
    /// nothing pending. The interrupt group is told every vector is masked.
    pub fn reset(&mut self) {
        self.enabled = false;
        self.function_masked = false;
        self.pba.fill(0);
        for (v, entry) in self.table.iter_mut().enumerate() {
            *entry = MsixTableEntry::default();
            // The table was sized by `new` to at most 2048 entries.
            if let Err(e) = self.group.update(v as u16, entry.msg, true) {
                log::error!("MSI-X reset: {e}");
            }
        }
    }

    /// Whether a vector with table entry `entry` is masked, all masks considered.
    fn entry_masked(&self, entry: &MsixTableEntry) -> bool {
        !self.enabled || self.function_masked || entry.masked()
    }

    /// After entry `v` may have changed (it had message `old_msg` and was `was_masked`):
    /// tells the group about a new message or mask, and fires a pending vector that is now
    /// unmasked. Errors cannot go back to the guest, so they are logged.
    fn refresh(&mut self, v: usize, old_msg: crate::MsiMessage, was_masked: bool) {
        let entry = self.table[v];
        let masked = self.entry_masked(&entry);
        // `v` indexes the table, which has at most 2048 entries.
        let vector = v as u16;
        // While a vector stays masked its message does not matter; it is sent on unmask.
        if masked != was_masked || (!masked && entry.msg != old_msg) {
            if let Err(e) = self.group.update(vector, entry.msg, masked) {
                log::error!("MSI-X vector {vector}: {e}");
            }
        }
        if !masked && self.pending(vector) {
            self.set_pending(v, false);
            if let Err(e) = self.group.trigger(vector) {
                log::error!("MSI-X vector {vector}: delivering the pending interrupt: {e}");
            }
        }
    }

    /// Sets or clears the pending bit of vector `v`.
    fn set_pending(&mut self, v: usize, pending: bool) {
        if let Some(q) = self.pba.get_mut(v / 64) {
            let bit = 1u64 << (v % 64);
            if pending {
                *q |= bit;
            } else {
                *q &= !bit;
            }
        }
    }
}

/// The (entry, byte in entry) that byte `i` of an access at table offset `offset` hits.
fn entry_byte(offset: u64, i: usize) -> Option<(usize, usize)> {
    let at = offset.checked_add(u64::try_from(i).ok()?)?;
    let entry = usize::try_from(at / MSIX_TABLE_ENTRY_SIZE).ok()?;
    Some((entry, (at % MSIX_TABLE_ENTRY_SIZE) as usize))
}
