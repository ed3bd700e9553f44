//! The capability list: capabilities placed one after another from offset 0x40, each
//! 4-byte aligned, each starting with its id and the offset of the next one (0 ends the
//! list), the first one named by the capabilities pointer at 0x34.

use super::{ConfigError, PciConfiguration, REG_CAPABILITIES, REG_COMMAND_STATUS};
use super::{NUM_CONFIG_REGISTERS, STATUS_CAPABILITIES_LIST};

/// Capability id of MSI-X.
pub const CAPABILITY_ID_MSIX: u8 = 0x11;
/// Capability id of vendor-specific capabilities (virtio-pci uses these).
pub const CAPABILITY_ID_VENDOR: u8 = 0x09;

/// Offset of the first capability: right after the type-0 header.
pub(super) const FIRST_CAPABILITY_OFFSET: usize = 0x40;
/// End of the space capabilities can use.
const CONFIG_SPACE_END: usize = NUM_CONFIG_REGISTERS * 4;
/// Bytes of a capability's header: id and next pointer.
const CAPABILITY_HEADER_LEN: usize = 2;
/// The most capabilities a 256-byte space can hold; bounds walks over a corrupt list.
const MAX_CAPABILITIES: usize = (CONFIG_SPACE_END - FIRST_CAPABILITY_OFFSET) / 4;

impl PciConfiguration {
    /// Appends a read-only capability `id` with `body` (the bytes after the id and next
    /// pointer) to the list. Returns its offset in configuration space.
    pub fn add_capability(&mut self, id: u8, body: &[u8]) -> Result<usize, ConfigError> {
        self.add_capability_with_mask(id, body, &vec![0; body.len()])
    }

    /// Appends capability `id` with `body`, whose bytes the guest may change where the bits
    /// of `write_mask` (one byte per body byte) are set. The device reads the result back
    /// with [`read_register`](Self::read_register) to act on it. Returns its offset.
    pub fn add_capability_with_mask(
        &mut self,
        id: u8,
        body: &[u8],
        write_mask: &[u8],
    ) -> Result<usize, ConfigError> {
        if write_mask.len() != body.len() {
            return Err(ConfigError::CapabilityMask {
                id,
                body_len: body.len(),
                mask_len: write_mask.len(),
            });
        }
        let offset = self.next_capability;
        let len = CAPABILITY_HEADER_LEN + body.len();
        let end = offset
            .checked_add(len)
            .filter(|&end| end <= CONFIG_SPACE_END)
            .ok_or(ConfigError::CapabilitySpace { id, len, offset })?;

        self.set_byte(offset, id);
        self.set_byte(offset + 1, 0);
        for (i, (&byte, &mask)) in body.iter().zip(write_mask).enumerate() {
            let at = offset + CAPABILITY_HEADER_LEN + i;
            self.set_byte(at, byte);
            self.set_mask_byte(at, mask);
        }
        // `offset` is below 0x100, so it fits the 8-bit pointers.
        match self.last_capability {
            Some(last) => self.set_byte(last + 1, offset as u8),
            None => {
                self.set_byte(REG_CAPABILITIES * 4, offset as u8);
                self.registers[REG_COMMAND_STATUS] |= u32::from(STATUS_CAPABILITIES_LIST) << 16;
            }
        }
        self.last_capability = Some(offset);
        self.next_capability = end.next_multiple_of(4);
        Ok(offset)
    }

    /// The capability list as the guest walks it: `(id, offset)` in list order.
    pub fn capabilities(&self) -> Vec<(u8, usize)> {
        let mut list = Vec::new();
        if self.status() & STATUS_CAPABILITIES_LIST == 0 {
            return list;
        }
        let mut offset = usize::from(self.byte(REG_CAPABILITIES * 4) & !3);
        while offset != 0 && list.len() < MAX_CAPABILITIES {
            list.push((self.byte(offset), offset));
            offset = usize::from(self.byte(offset + 1) & !3);
        }
        list
    }

    /// Offset of the first capability with `id`.
    pub fn find_capability(&self, id: u8) -> Option<usize> {
        self.capabilities()
            .into_iter()
            .find_map(|(cap, offset)| (cap == id).then_some(offset))
    }
}
