//! A type-0 PCI configuration space: the 256-byte header and capability area, with a write
//! mask per register so that read-only fields stay read-only, plus the 4 KiB PCI Express
//! extended space, which reads as zero (no extended capabilities) and ignores writes.
//!
//! BAR handling lives in [`bars`], the capability list in [`capability`].

mod bars;
mod capability;
mod state;
#[cfg(test)]
mod tests;

use crate::bar::{BarRegion, NUM_BARS};
use crate::bytes::{merge_dword_part, read_dword_part};

pub use capability::{CAPABILITY_ID_MSIX, CAPABILITY_ID_VENDOR};
pub use state::{PciConfigurationState, RestoreError as ConfigRestoreError};

/// Number of 32-bit registers in the conventional (256-byte) configuration space.
pub const NUM_CONFIG_REGISTERS: usize = 64;
/// Number of 32-bit registers in the extended (4 KiB) configuration space reachable by ECAM.
pub const NUM_EXTENDED_CONFIG_REGISTERS: usize = 1024;

/// Register holding the vendor and device ids.
pub(crate) const REG_ID: usize = 0;
/// Register holding the command (low half) and status (high half) words.
pub(crate) const REG_COMMAND_STATUS: usize = 1;
/// Register holding the revision id, programming interface, subclass and class code.
pub(crate) const REG_CLASS: usize = 2;
/// Register holding cache line size, latency timer, header type and BIST.
pub(crate) const REG_HEADER: usize = 3;
/// First BAR register.
pub(crate) const REG_BAR0: usize = 4;
/// Register holding the subsystem vendor and subsystem ids.
pub(crate) const REG_SUBSYSTEM: usize = 11;
/// Register whose low byte is the capabilities pointer.
pub(crate) const REG_CAPABILITIES: usize = 13;
/// Register holding interrupt line, interrupt pin, min grant and max latency.
pub(crate) const REG_INTERRUPT: usize = 15;

/// Command register bits the guest may change: I/O space, memory space, bus master, parity
/// error response, SERR# enable, interrupt disable.
const COMMAND_WRITABLE: u32 = 0x0547;
/// Command register bit: the device decodes its memory BARs.
pub const COMMAND_MEMORY_SPACE: u16 = 1 << 1;
/// Command register bit: the device may master the bus (DMA, MSI).
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
/// Command register bit: the function must not raise INTx.
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
/// The register holding the command and status words, by dword index.
pub const COMMAND_STATUS_REGISTER: usize = REG_COMMAND_STATUS;
/// Status register bit: the capabilities pointer is valid.
pub const STATUS_CAPABILITIES_LIST: u16 = 1 << 4;

/// Class code of bridges.
pub const CLASS_BRIDGE: u8 = 0x06;
/// Subclass of host bridges (with [`CLASS_BRIDGE`]).
pub const SUBCLASS_HOST_BRIDGE: u8 = 0x00;

/// The read-only identity of a function, written into its header once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PciHeader {
    /// Vendor id (offset 0x00).
    pub vendor_id: u16,
    /// Device id (offset 0x02).
    pub device_id: u16,
    /// Revision id (offset 0x08).
    pub revision_id: u8,
    /// Programming interface (offset 0x09).
    pub prog_if: u8,
    /// Subclass (offset 0x0a).
    pub subclass: u8,
    /// Base class code (offset 0x0b).
    pub class_code: u8,
    /// Subsystem vendor id (offset 0x2c).
    pub subsystem_vendor_id: u16,
    /// Subsystem id (offset 0x2e).
    pub subsystem_id: u16,
}

/// Why a configuration space could not be set up as asked. These are VMM-side mistakes,
/// never caused by the guest.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The BAR number does not exist (or a 64-bit BAR would need register 6).
    #[error("BAR {index} does not exist for a {kind:?} BAR (a type-0 header has BARs 0..=5)")]
    BarIndex {
        /// The BAR number asked for.
        index: u8,
        /// Its kind.
        kind: crate::BarKind,
    },
    /// The BAR (or, for a 64-bit BAR, its high register) is already in use.
    #[error("BAR {index} is already in use")]
    BarInUse {
        /// The BAR number asked for.
        index: u8,
    },
    /// BAR sizes are powers of two of at least 16 bytes.
    #[error("BAR {index}: size {size:#x} is not a power of two of at least 16 bytes")]
    BarSize {
        /// The BAR number.
        index: u8,
        /// The size asked for.
        size: u64,
    },
    /// A BAR must sit at a multiple of its size.
    #[error("BAR {index}: address {addr:#x} is not aligned to its size {size:#x}")]
    BarAlignment {
        /// The BAR number.
        index: u8,
        /// The address asked for.
        addr: u64,
        /// The BAR's size.
        size: u64,
    },
    /// The BAR would reach past what its kind can address (4 GiB for a 32-bit BAR, the
    /// end of the 64-bit space for a 64-bit one).
    #[error("BAR {index}: a {kind:?} BAR cannot decode {addr:#x}+{size:#x}")]
    BarOutOfRange {
        /// The BAR number.
        index: u8,
        /// The address asked for.
        addr: u64,
        /// The BAR's size.
        size: u64,
        /// Its kind.
        kind: crate::BarKind,
    },
    /// The capability does not fit in the 256-byte configuration space.
    #[error(
        "capability {id:#04x} of {len} bytes does not fit at {offset:#x} \
         (the configuration space ends at 0x100)"
    )]
    CapabilitySpace {
        /// The capability id.
        id: u8,
        /// Its length including the two header bytes.
        len: usize,
        /// Where it would have gone.
        offset: usize,
    },
    /// A capability's write mask must cover its body exactly.
    #[error("capability {id:#04x}: write mask of {mask_len} bytes for a body of {body_len}")]
    CapabilityMask {
        /// The capability id.
        id: u8,
        /// Length of the body.
        body_len: usize,
        /// Length of the mask.
        mask_len: usize,
    },
}

/// A BAR as the configuration space tracks it: where it was last placed (not counting size
/// probes), which is what a reprogramming is measured against, and which of its registers
/// hold a size probe (all ones written, the size mask reading back) rather than an address.
#[derive(Clone, Copy, Debug)]
struct BarSlot {
    region: BarRegion,
    /// `[low register, high register]`; the high one is only used by 64-bit BARs.
    probing: [bool; 2],
}

/// One function's type-0 configuration space.
///
/// Reads and writes are by register (`reg`, a dword index) and byte `offset` within it, the
/// way both access mechanisms decode addresses. Writes go through a per-register write mask:
/// a bit the mask leaves out keeps its value whatever the guest writes.
#[derive(Clone, Debug)]
pub struct PciConfiguration {
    registers: [u32; NUM_CONFIG_REGISTERS],
    write_masks: [u32; NUM_CONFIG_REGISTERS],
    bars: [Option<BarSlot>; NUM_BARS],
    /// Offset of the last capability added, whose next pointer links the next one.
    last_capability: Option<usize>,
    /// Where the next capability goes.
    next_capability: usize,
}

impl PciConfiguration {
    /// A header with `header`'s identity, no BARs, no capabilities, interrupt pin 0 (the
    /// function interrupts through MSI-X only) and header type 0, single function.
    pub fn new(header: &PciHeader) -> Self {
        let mut registers = [0u32; NUM_CONFIG_REGISTERS];
        let mut write_masks = [0u32; NUM_CONFIG_REGISTERS];
        registers[REG_ID] = u32::from(header.device_id) << 16 | u32::from(header.vendor_id);
        registers[REG_CLASS] = u32::from(header.class_code) << 24
            | u32::from(header.subclass) << 16
            | u32::from(header.prog_if) << 8
            | u32::from(header.revision_id);
        registers[REG_SUBSYSTEM] =
            u32::from(header.subsystem_id) << 16 | u32::from(header.subsystem_vendor_id);
        write_masks[REG_COMMAND_STATUS] = COMMAND_WRITABLE;
        // Cache line size is read/write; latency timer, header type and BIST read as zero.
        write_masks[REG_HEADER] = 0xff;
        // Interrupt line is a scratch byte for the OS; the pin is the device's to set.
        write_masks[REG_INTERRUPT] = 0xff;
        PciConfiguration {
            registers,
            write_masks,
            bars: [None; NUM_BARS],
            last_capability: None,
            next_capability: capability::FIRST_CAPABILITY_OFFSET,
        }
    }

    /// The value of register `reg`: the header and capabilities for `reg < 64`, zero for the
    /// rest of the 4 KiB extended space, all ones beyond it.
    pub fn read_register(&self, reg: usize) -> u32 {
        match self.registers.get(reg) {
            Some(value) => *value,
            None if reg < NUM_EXTENDED_CONFIG_REGISTERS => 0,
            None => 0xffff_ffff,
        }
    }

    /// Reads `data.len()` bytes at byte `offset` of register `reg`. An access that does not
    /// fit inside the register reads as all ones.
    pub fn read(&self, reg: usize, offset: u64, data: &mut [u8]) {
        read_dword_part(self.read_register(reg), offset, data);
    }

    /// Writes `data` at byte `offset` of register `reg`, through the write mask. Writes
    /// that leave the register, and writes to the extended space, are ignored.
    ///
    /// Returns the BAR move the write caused, if any (see [`crate::BarReprogram`]).
    pub fn write_register(
        &mut self,
        reg: usize,
        offset: u64,
        data: &[u8],
    ) -> Option<crate::BarReprogram> {
        let old = *self.registers.get(reg)?;
        let written = merge_dword_part(old, offset, data)?;
        if let Some(bar) = self.bar_register(reg) {
            return self.write_bar_register(bar, written);
        }
        self.store_masked(reg, written);
        None
    }

    /// The command register.
    pub fn command(&self) -> u16 {
        self.registers[REG_COMMAND_STATUS] as u16
    }

    /// Sets the interrupt pin register (1 = INTA#; 0, the default, = no INTx).
    pub fn set_interrupt_pin(&mut self, pin: u8) {
        self.set_byte(REG_INTERRUPT * 4 + 1, pin);
    }

    /// The status register.
    pub fn status(&self) -> u16 {
        (self.registers[REG_COMMAND_STATUS] >> 16) as u16
    }

    /// Stores `value` into `reg`, keeping the bits outside the write mask.
    fn store_masked(&mut self, reg: usize, value: u32) {
        let mask = self.write_masks[reg];
        self.registers[reg] = (self.registers[reg] & !mask) | (value & mask);
    }

    /// Sets byte `offset` of the 256-byte space (device-side: no write mask). Offsets
    /// outside the space are ignored; callers only pass checked offsets.
    fn set_byte(&mut self, offset: usize, value: u8) {
        if let Some(reg) = self.registers.get_mut(offset / 4) {
            let shift = (offset % 4) * 8;
            *reg = (*reg & !(0xff << shift)) | u32::from(value) << shift;
        }
    }

    /// Byte `offset` of the 256-byte space, or 0 outside it.
    fn byte(&self, offset: usize) -> u8 {
        self.registers
            .get(offset / 4)
            .map_or(0, |reg| (reg >> ((offset % 4) * 8)) as u8)
    }

    /// Sets the write mask of byte `offset` (device-side).
    fn set_mask_byte(&mut self, offset: usize, mask: u8) {
        if let Some(reg) = self.write_masks.get_mut(offset / 4) {
            let shift = (offset % 4) * 8;
            *reg = (*reg & !(0xff << shift)) | u32::from(mask) << shift;
        }
    }
}
