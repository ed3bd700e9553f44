//! Identity page tables for the 64-bit boot protocol: the first 4 GiB mapped with 2 MiB
//! pages (1 GiB pages are not offered on every host).

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::layout::{PDE_START, PDPTE_START, PML4_START};
use crate::{Error, Result};

const PRESENT_WRITABLE: u64 = 0x3;
const PAGE_SIZE_2M: u64 = 0x80;
const DIRECTORIES: u64 = 4;

/// Writes the tables and returns the value for CR3.
pub fn write_identity_tables(mem: &GuestMemoryMmap) -> Result<u64> {
    let write = |value: u64, addr: u64| {
        mem.write_obj(value, GuestAddress(addr))
            .map_err(|_| Error::GuestWrite {
                what: "page tables",
                addr,
            })
    };
    write(PDPTE_START | PRESENT_WRITABLE, PML4_START)?;
    for dir in 0..DIRECTORIES {
        let pd = PDE_START + dir * 0x1000;
        write(pd | PRESENT_WRITABLE, PDPTE_START + dir * 8)?;
        for i in 0..512u64 {
            let phys = ((dir << 9) + i) << 21;
            write(phys | PAGE_SIZE_2M | PRESENT_WRITABLE, pd + i * 8)?;
        }
    }
    Ok(PML4_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_the_first_4g_one_to_one() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        assert_eq!(write_identity_tables(&mem).unwrap(), PML4_START);
        let pml4: u64 = mem.read_obj(GuestAddress(PML4_START)).unwrap();
        assert_eq!(pml4 & !0xfff, PDPTE_START);
        // Last 2 MiB page below 4 GiB.
        let pdpte3: u64 = mem.read_obj(GuestAddress(PDPTE_START + 3 * 8)).unwrap();
        let last: u64 = mem
            .read_obj(GuestAddress((pdpte3 & !0xfff) + 511 * 8))
            .unwrap();
        assert_eq!(last & !0xfff, (4 << 30) - (2 << 20));
        assert_eq!(last & PAGE_SIZE_2M, PAGE_SIZE_2M);
    }
}
