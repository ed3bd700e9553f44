//! Memory BARs in the configuration space: placement, the size probe, and reprogramming.
//!
//! A BAR register reads back its address bits, with the bits below the BAR's size always
//! zero, and its low four bits fixed: memory space (bit 0 clear), type (bits 2:1, 64-bit or
//! not) and prefetchable (bit 3). Writing all ones and reading back therefore yields the size
//! mask, which is how the guest learns the size. A 64-bit BAR pairs two registers; the high
//! one holds address bits 63:32.

use super::{BarSlot, ConfigError, PciConfiguration, REG_BAR0};
use crate::bar::{BarKind, BarRegion, BarReprogram, NUM_BARS};

/// Bits of a memory BAR's low register that are flags, not address.
const BAR_FLAG_BITS: u32 = 0xf;
/// The prefetchable flag.
const BAR_PREFETCHABLE: u32 = 1 << 3;
/// The smallest memory BAR the PCI specification allows.
const MIN_BAR_SIZE: u64 = 16;

/// Which register of which BAR a configuration register is.
#[derive(Clone, Copy, Debug)]
pub(super) struct BarRegister {
    /// The BAR number (of the low register, for a 64-bit BAR).
    index: usize,
    /// Whether this is the high register of a 64-bit BAR.
    high: bool,
}

/// The writable address bits of a BAR of `size` bytes: `(low register, high register)`.
fn address_masks(size: u64) -> (u32, u32) {
    let mask = !(size - 1);
    (mask as u32 & !BAR_FLAG_BITS, (mask >> 32) as u32)
}

impl PciConfiguration {
    /// Places a memory BAR: sets its registers to `region.addr` and its write masks so that
    /// the guest can probe the size and move it, but not change its size or flags.
    pub fn add_bar(&mut self, region: &BarRegion) -> Result<(), ConfigError> {
        let BarRegion {
            index,
            addr,
            size,
            kind,
            prefetchable,
        } = *region;
        let registers = match kind {
            BarKind::Memory32 => 1,
            BarKind::Memory64 => 2,
        };
        let i = usize::from(index);
        if i + registers > NUM_BARS {
            return Err(ConfigError::BarIndex { index, kind });
        }
        if (i..i + registers).any(|r| self.bar_register(REG_BAR0 + r).is_some()) {
            return Err(ConfigError::BarInUse { index });
        }
        if !size.is_power_of_two() || size < MIN_BAR_SIZE {
            return Err(ConfigError::BarSize { index, size });
        }
        if !addr.is_multiple_of(size) {
            return Err(ConfigError::BarAlignment { index, addr, size });
        }
        let limit = match kind {
            BarKind::Memory32 => 1u64 << 32,
            BarKind::Memory64 => u64::MAX,
        };
        if addr.checked_add(size - 1).is_none_or(|last| last >= limit) {
            return Err(ConfigError::BarOutOfRange {
                index,
                addr,
                size,
                kind,
            });
        }

        let (low_mask, high_mask) = address_masks(size);
        let flags = kind.type_bits() | if prefetchable { BAR_PREFETCHABLE } else { 0 };
        let low = REG_BAR0 + i;
        self.registers[low] = (addr as u32 & low_mask) | flags;
        self.write_masks[low] = low_mask;
        if kind == BarKind::Memory64 {
            self.registers[low + 1] = (addr >> 32) as u32;
            self.write_masks[low + 1] = high_mask;
        }
        self.bars[i] = Some(BarSlot {
            region: *region,
            probing: [false; 2],
        });
        Ok(())
    }

    /// BAR `index` where it was last placed, by [`add_bar`](Self::add_bar) or by the guest.
    pub fn bar(&self, index: u8) -> Option<BarRegion> {
        self.bars
            .get(usize::from(index))
            .copied()
            .flatten()
            .map(|slot| slot.region)
    }

    /// Every BAR, in index order.
    pub fn bars(&self) -> Vec<BarRegion> {
        self.bars.iter().flatten().map(|slot| slot.region).collect()
    }

    /// Which BAR register `reg` is, if it belongs to a placed BAR.
    pub(super) fn bar_register(&self, reg: usize) -> Option<BarRegister> {
        let i = reg.checked_sub(REG_BAR0).filter(|&i| i < NUM_BARS)?;
        if self.bars[i].is_some() {
            return Some(BarRegister {
                index: i,
                high: false,
            });
        }
        let below = i.checked_sub(1)?;
        let slot = self.bars[below]?;
        (slot.region.kind == BarKind::Memory64).then_some(BarRegister {
            index: below,
            high: true,
        })
    }

    /// Applies a guest write (already merged to a whole register value) to a BAR register,
    /// and reports the move if the BAR's address changed.
    pub(super) fn write_bar_register(
        &mut self,
        bar: BarRegister,
        written: u32,
    ) -> Option<BarReprogram> {
        let reg = REG_BAR0 + bar.index + usize::from(bar.high);
        self.store_masked(reg, written);
        let mut slot = self.bars[bar.index]?;
        slot.probing[usize::from(bar.high)] = written == 0xffff_ffff;
        let change = if slot.probing.contains(&true) {
            // The registers hold a size mask, not an address: nothing moved (yet).
            None
        } else {
            let new_addr = self.bar_address_in_registers(bar.index, slot.region.kind);
            let old_addr = slot.region.addr;
            slot.region.addr = new_addr;
            (new_addr != old_addr).then_some(BarReprogram {
                index: slot.region.index,
                old_addr,
                new_addr,
                size: slot.region.size,
                kind: slot.region.kind,
            })
        };
        self.bars[bar.index] = Some(slot);
        change
    }

    /// The address the registers of BAR `index` hold now.
    fn bar_address_in_registers(&self, index: usize, kind: BarKind) -> u64 {
        let low = u64::from(self.registers[REG_BAR0 + index] & !BAR_FLAG_BITS);
        match kind {
            BarKind::Memory32 => low,
            BarKind::Memory64 => u64::from(self.registers[REG_BAR0 + index + 1]) << 32 | low,
        }
    }
}
