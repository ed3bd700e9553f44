//! A stand-in for the firmware's reset vector.
//!
//! Linux on hardware-reduced ACPI reboots through EFI first and, with no EFI, falls back to
//! `machine_real_restart`: real mode, far jump to 0xf000:0xfff0, where a BIOS would reset
//! the board. We have no BIOS, so we put there the few instructions that do what it would:
//! write the reset value to the ACPI reset register, then halt.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::{Error, Result};

/// Physical address of the x86 reset vector (0xf000:0xfff0).
pub const RESET_VECTOR: u64 = 0xffff0;

/// 16-bit code: `mov al, value; mov dx, port; out dx, al; hlt; jmp hlt`.
pub fn reset_stub(reset_port: u16, reset_value: u8) -> [u8; 9] {
    let [port_lo, port_hi] = reset_port.to_le_bytes();
    [
        0xb0,
        reset_value, // mov al, reset_value
        0xba,
        port_lo,
        port_hi, // mov dx, reset_port
        0xee,    // out dx, al
        0xf4,    // hlt
        0xeb,
        0xfd, // jmp short back to hlt
    ]
}

/// Writes the stub at the reset vector.
pub fn write_reset_vector(mem: &GuestMemoryMmap, reset_port: u16, reset_value: u8) -> Result<()> {
    mem.write_slice(
        &reset_stub(reset_port, reset_value),
        GuestAddress(RESET_VECTOR),
    )
    .map_err(|_| Error::GuestWrite {
        what: "reset vector",
        addr: RESET_VECTOR,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stub_writes_the_reset_register() {
        let s = reset_stub(0x602, 1);
        assert_eq!(&s[..5], &[0xb0, 0x01, 0xba, 0x02, 0x06]);
        assert_eq!(s[5], 0xee);
        // The stub fits below 1 MiB.
        assert!(RESET_VECTOR + s.len() as u64 <= crate::layout::HIGH_RAM_START);
    }
}
