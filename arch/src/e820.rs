//! The e820 memory map handed to the guest: boot RAM, and what the guest must not use as
//! RAM or give to PCI devices (the firmware area, the PCI ECAM window). Device memory
//! (virtio-mem regions) is deliberately absent; the SRAT announces it instead.

use crate::layout::{
    ram_ranges, EBDA_START, FIRMWARE_END, HIGH_RAM_START, PCI_ECAM_SIZE, PCI_ECAM_START,
    RSDP_POINTER,
};

pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

/// One e820 range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

/// The map for `ram_size` bytes of boot RAM.
pub fn e820_table(ram_size: u64) -> Vec<E820Entry> {
    let mut table = vec![
        E820Entry {
            addr: 0,
            size: EBDA_START,
            kind: E820_RAM,
        },
        // The ACPI tables and the reset vector stub live here.
        E820Entry {
            addr: RSDP_POINTER,
            size: FIRMWARE_END - RSDP_POINTER,
            kind: E820_RESERVED,
        },
        // Linux uses the MCFG's ECAM only where the firmware reserved it; without this
        // entry it falls back to configuration through ports 0xCF8/0xCFC (an exit to the
        // VMM for every address and every data access) until the ACPI namespace is up.
        E820Entry {
            addr: PCI_ECAM_START,
            size: PCI_ECAM_SIZE,
            kind: E820_RESERVED,
        },
    ];
    for (start, size) in ram_ranges(ram_size) {
        let start_above_hole = start.max(HIGH_RAM_START);
        let end = start + size;
        if end > start_above_hole {
            table.push(E820Entry {
                addr: start_above_hole,
                size: end - start_above_hole,
                kind: E820_RAM,
            });
        }
    }
    table.sort_by_key(|e| e.addr);
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_for_small_ram() {
        let t = e820_table(256 << 20);
        assert_eq!(t.len(), 4);
        assert_eq!(
            t[2],
            E820Entry {
                addr: 1 << 20,
                size: (256 << 20) - (1 << 20),
                kind: E820_RAM
            }
        );
    }

    #[test]
    fn map_for_ram_above_4g() {
        let t = e820_table(5 << 30);
        assert_eq!(t.len(), 5);
        assert!(
            t.windows(2).all(|w| w[0].addr + w[0].size <= w[1].addr),
            "{t:?}"
        );
        assert_eq!(
            t[3],
            E820Entry {
                addr: PCI_ECAM_START,
                size: PCI_ECAM_SIZE,
                kind: E820_RESERVED
            },
            "the ECAM window, which Linux wants reserved before it uses the MCFG"
        );
        assert_eq!(
            t[4],
            E820Entry {
                addr: 4 << 30,
                size: 2 << 30,
                kind: E820_RAM
            }
        );
        let ram: u64 = t
            .iter()
            .filter(|e| e.kind == E820_RAM)
            .map(|e| e.size)
            .sum();
        // Everything but the legacy hole (EBDA..1 MiB) is usable.
        assert_eq!(ram, (5 << 30) - (HIGH_RAM_START - EBDA_START));
    }
}
