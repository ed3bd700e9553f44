//! Byte-level access to 32-bit registers, for accesses narrower than a register.
//!
//! Configuration space is kept as dwords, but the guest reads and writes it one, two or four
//! bytes at a time at any byte offset. These helpers do the slicing and refuse, rather than
//! panic on, accesses that would leave the register.

/// The byte range `offset..offset + len` of a dword, or `None` when it is empty or does not
/// fit inside the four bytes.
fn span(offset: u64, len: usize) -> Option<std::ops::Range<usize>> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(len)?;
    (len > 0 && end <= 4).then_some(start..end)
}

/// Copies bytes `offset..offset + data.len()` of `value` (little endian) into `data`.
/// An access that does not fit inside the dword reads as all ones, as an absent register
/// would. Returns whether the access fitted.
pub(crate) fn read_dword_part(value: u32, offset: u64, data: &mut [u8]) -> bool {
    match span(offset, data.len()) {
        Some(range) => {
            data.copy_from_slice(&value.to_le_bytes()[range]);
            true
        }
        None => {
            data.fill(0xff);
            false
        }
    }
}

/// `old` with bytes `offset..offset + data.len()` replaced by `data`, or `None` when the
/// access does not fit inside the dword.
pub(crate) fn merge_dword_part(old: u32, offset: u64, data: &[u8]) -> Option<u32> {
    let range = span(offset, data.len())?;
    let mut bytes = old.to_le_bytes();
    bytes[range].copy_from_slice(data);
    Some(u32::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_merges_inside_the_dword() {
        let mut b = [0u8; 2];
        assert!(read_dword_part(0x1234_5678, 1, &mut b));
        assert_eq!(b, [0x56, 0x34]);
        assert_eq!(merge_dword_part(0x1234_5678, 3, &[0xab]), Some(0xab34_5678));
        assert_eq!(merge_dword_part(0, 0, &[1, 2, 3, 4]), Some(0x0403_0201));
    }

    #[test]
    fn refuses_accesses_that_leave_the_dword() {
        let mut b = [0u8; 4];
        assert!(!read_dword_part(0, 1, &mut b));
        assert_eq!(b, [0xff; 4]);
        assert!(!read_dword_part(0, u64::MAX, &mut b[..1]));
        assert!(!read_dword_part(0, 0, &mut []));
        assert_eq!(merge_dword_part(0, 3, &[1, 2]), None);
        assert_eq!(merge_dword_part(0, 0, &[0; 8]), None);
        assert_eq!(merge_dword_part(0, 0, &[]), None);
    }
}
