//! The MSI-X table, PBA and control bits saved and brought back (snapshot, migration).

use serde::{Deserialize, Serialize};

use super::{MsixConfig, MsixTableEntry};
use crate::msi::MsiMessage;

/// One table entry: address low, address high, data, vector control.
pub type MsixEntryState = [u32; 4];

/// What [`MsixConfig::state`] saves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsixState {
    /// Every table entry.
    pub table: Vec<MsixEntryState>,
    /// The pending bits, 64 vectors a qword.
    pub pba: Vec<u64>,
    /// Message control's MSI-X Enable.
    pub enabled: bool,
    /// Message control's Function Mask.
    pub function_masked: bool,
}

/// Saved MSI-X state that does not fit this function.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MsixRestoreError {
    /// The table or the PBA has another size.
    #[error("the saved MSI-X table has {saved} vectors and its PBA {pba} qwords; this function has {vectors} vectors")]
    Size {
        /// Saved table entries.
        saved: usize,
        /// Saved PBA qwords.
        pba: usize,
        /// This function's vectors.
        vectors: u16,
    },
}

impl MsixConfig {
    /// The table, the pending bits and the control bits as they are now.
    pub fn state(&self) -> MsixState {
        MsixState {
            table: self
                .table
                .iter()
                .map(|e| [e.msg.addr_lo, e.msg.addr_hi, e.msg.data, e.vector_control])
                .collect(),
            pba: self.pba.clone(),
            enabled: self.enabled,
            function_masked: self.function_masked,
        }
    }

    /// Brings back what [`state`](Self::state) saved on a function with as many vectors,
    /// and hands every vector's message and mask to the interrupt group, so that the routes
    /// are what the guest had set up. Pending vectors stay pending, as they were.
    pub fn restore(&mut self, state: &MsixState) -> Result<(), MsixRestoreError> {
        if state.table.len() != self.table.len() || state.pba.len() != self.pba.len() {
            return Err(MsixRestoreError::Size {
                saved: state.table.len(),
                pba: state.pba.len(),
                vectors: self.vectors(),
            });
        }
        for (entry, &[addr_lo, addr_hi, data, vector_control]) in
            self.table.iter_mut().zip(&state.table)
        {
            *entry = MsixTableEntry {
                msg: MsiMessage {
                    addr_lo,
                    addr_hi,
                    data,
                },
                vector_control,
            };
        }
        self.pba.copy_from_slice(&state.pba);
        self.enabled = state.enabled;
        self.function_masked = state.function_masked;
        for v in 0..self.table.len() {
            let entry = self.table[v];
            let masked = self.entry_masked(&entry);
            // The table has at most 2048 entries (`new`).
            if let Err(e) = self.group.update(v as u16, entry.msg, masked) {
                log::error!("MSI-X vector {v}: restoring its route: {e}");
            }
        }
        Ok(())
    }
}
