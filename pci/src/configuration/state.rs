//! A function's configuration space saved and brought back (snapshot, migration): the 64
//! registers of the type-0 header and capabilities, as the guest left them.

use serde::{Deserialize, Serialize};

use super::{PciConfiguration, NUM_CONFIG_REGISTERS};
use crate::bar::BarReprogram;

/// The registers of a configuration space, as [`PciConfiguration::state`] took them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PciConfigurationState {
    /// Registers 0 to 63 (the 256 bytes of the header and capabilities).
    pub registers: Vec<u32>,
}

/// Why saved registers do not fit this function.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RestoreError {
    /// The saved space is not 64 registers long.
    #[error("{found} configuration registers saved, {NUM_CONFIG_REGISTERS} expected")]
    Length {
        /// How many were saved.
        found: usize,
    },
    /// A bit the guest cannot write differs: the saved function is another device, or
    /// one laid out differently.
    #[error(
        "configuration register {reg:#x} reads {saved:#010x} in the saved state, but this \
         function's read-only bits give {current:#010x}"
    )]
    ReadOnly {
        /// The register.
        reg: usize,
        /// Its saved value.
        saved: u32,
        /// Its value here.
        current: u32,
    },
}

impl PciConfiguration {
    /// The registers as they are now.
    pub fn state(&self) -> PciConfigurationState {
        PciConfigurationState {
            registers: self.registers.to_vec(),
        }
    }

    /// Brings back registers [`state`](Self::state) took from a function built the same way.
    /// Every read-only bit must match this function's, or nothing changes. BARs go where
    /// the saved registers put them; the moves this makes are returned for the bus to follow,
    /// low register first.
    pub fn restore(
        &mut self,
        state: &PciConfigurationState,
    ) -> Result<Vec<BarReprogram>, RestoreError> {
        if state.registers.len() != NUM_CONFIG_REGISTERS {
            return Err(RestoreError::Length {
                found: state.registers.len(),
            });
        }
        for (reg, &saved) in state.registers.iter().enumerate() {
            let current = self.registers[reg];
            if (saved ^ current) & !self.write_masks[reg] != 0 {
                return Err(RestoreError::ReadOnly {
                    reg,
                    saved,
                    current,
                });
            }
        }
        let mut moves = Vec::new();
        for (reg, &saved) in state.registers.iter().enumerate() {
            match self.bar_register(reg) {
                Some(bar) => moves.extend(self.write_bar_register(bar, saved)),
                None => self.store_masked(reg, saved),
            }
        }
        Ok(moves)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configuration::tests::header;
    use crate::{BarKind, BarRegion};

    fn function() -> PciConfiguration {
        let mut config = PciConfiguration::new(&header());
        config
            .add_bar(&BarRegion {
                index: 0,
                addr: 0x1_0000_0000,
                size: 0x4000,
                kind: BarKind::Memory64,
                prefetchable: false,
            })
            .unwrap();
        config
    }

    #[test]
    fn registers_come_back_and_a_moved_bar_is_reported() {
        let mut source = function();
        source.write_register(1, 0, &[0x06, 0x04]);
        source.write_register(4, 0, &0x2000_0000u32.to_le_bytes());
        source.write_register(5, 0, &0x2u32.to_le_bytes());
        let state = source.state();

        let mut target = function();
        let moves = target.restore(&state).unwrap();
        assert_eq!(target.state(), state);
        assert_eq!(target.command(), 0x406);
        assert_eq!(target.bar(0).unwrap().addr, 0x2_2000_0000);
        let last = moves.last().unwrap();
        assert_eq!(
            (moves[0].old_addr, last.new_addr),
            (0x1_0000_0000, 0x2_2000_0000)
        );
    }

    #[test]
    fn another_device_or_length_is_refused_and_nothing_changes() {
        let mut target = function();
        let before = target.state();
        let mut other = before.clone();
        other.registers[0] = 0x1234_1af4;
        assert!(matches!(
            target.restore(&other),
            Err(RestoreError::ReadOnly { reg: 0, .. })
        ));
        other.registers.truncate(10);
        assert_eq!(
            target.restore(&other),
            Err(RestoreError::Length { found: 10 })
        );
        assert_eq!(target.state(), before);
    }
}
