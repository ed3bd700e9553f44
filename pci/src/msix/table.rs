//! One MSI-X table entry and its byte layout.
//!
//! ```text
//! +0  message address, low    +4  message address, high
//! +8  message data            +12 vector control (bit 0: masked)
//! ```

use crate::msi::MsiMessage;

/// Vector control bit: the vector is masked.
const VECTOR_CONTROL_MASK: u32 = 1;

/// One vector of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixTableEntry {
    /// Where and what the vector writes.
    pub msg: MsiMessage,
    /// Vector control; bit 0 masks the vector, the other bits are reserved (kept as written).
    pub vector_control: u32,
}

impl Default for MsixTableEntry {
    /// Entries come out of reset masked, with an empty message.
    fn default() -> Self {
        MsixTableEntry {
            msg: MsiMessage::default(),
            vector_control: VECTOR_CONTROL_MASK,
        }
    }
}

impl MsixTableEntry {
    /// Whether the entry's own mask bit is set.
    pub fn masked(&self) -> bool {
        self.vector_control & VECTOR_CONTROL_MASK != 0
    }

    /// The entry's four dwords.
    fn dwords(&self) -> [u32; 4] {
        [
            self.msg.addr_lo,
            self.msg.addr_hi,
            self.msg.data,
            self.vector_control,
        ]
    }

    /// Byte `at` (0..16) of the entry as the guest sees it.
    pub(super) fn byte(&self, at: usize) -> u8 {
        self.dwords()
            .get(at / 4)
            .map_or(0, |dword| dword.to_le_bytes()[at % 4])
    }

    /// Sets byte `at` (0..16) of the entry; other offsets are ignored.
    pub(super) fn set_byte(&mut self, at: usize, value: u8) {
        let field = match at / 4 {
            0 => &mut self.msg.addr_lo,
            1 => &mut self.msg.addr_hi,
            2 => &mut self.msg.data,
            3 => &mut self.vector_control,
            _ => return,
        };
        let mut bytes = field.to_le_bytes();
        bytes[at % 4] = value;
        *field = u32::from_le_bytes(bytes);
    }
}
