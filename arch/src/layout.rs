//! Guest physical memory layout (see docs/design and ../shared/design.md).
//!
//! ```text
//! 0        .. 640 KiB   RAM: GDT, PVH start info, zero page, page tables, command line
//! 640 KiB  .. 1 MiB     legacy hole; ACPI tables at 0xe0000, reset vector stub at 0xffff0
//! 1 MiB    .. min(ram, 3 GiB)  RAM: kernel and initramfs
//! 3 GiB    .. 4 GiB     32-bit MMIO: PCI, IOAPIC, LAPIC
//! 4 GiB    .. 4 GiB + the rest of boot RAM
//! ```

/// Boot GDT (4 entries).
pub const BOOT_GDT_START: u64 = 0x500;
/// An empty IDT for the 64-bit entry (the kernel installs its own at once).
pub const BOOT_IDT_START: u64 = 0x520;
/// PVH `hvm_start_info`.
pub const PVH_INFO_START: u64 = 0x6000;
/// PVH module list (the initramfs).
pub const PVH_MODLIST_START: u64 = 0x6040;
/// PVH memory map.
pub const PVH_MEMMAP_START: u64 = 0x6100;
/// Most memory-map entries the PVH area has room for.
pub const PVH_MEMMAP_MAX_ENTRIES: usize = 64;
/// Linux `boot_params` ("zero page") for the 64-bit boot protocol.
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack for the 64-bit boot protocol.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Identity page tables: PML4, one PDPT, four page directories of 2 MiB pages (4 GiB).
pub const PML4_START: u64 = 0x9000;
pub const PDPTE_START: u64 = 0xa000;
pub const PDE_START: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// x86 Linux's COMMAND_LINE_SIZE, including the terminating NUL.
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Start of the extended BIOS data area: end of the first usable RAM range.
pub const EBDA_START: u64 = 0x9fc00;
/// RSDP, followed by the other ACPI tables, up to `ACPI_END`.
pub const RSDP_POINTER: u64 = 0xe0000;
pub const ACPI_END: u64 = 0xf_0000;
/// End of the reserved firmware area (ACPI tables and the reset vector stub).
pub const FIRMWARE_END: u64 = 0x10_0000;
/// First byte of RAM above the legacy hole.
pub const HIGH_RAM_START: u64 = 0x10_0000;
/// Start of the 32-bit MMIO hole; RAM below 4 GiB stops here.
pub const MEM_32BIT_GAP_START: u64 = 0xc000_0000;
/// Start of RAM above 4 GiB.
pub const RAM_64BIT_START: u64 = 0x1_0000_0000;
/// I/O APIC and local APIC register windows.
pub const IOAPIC_START: u64 = 0xfec0_0000;
pub const APIC_START: u64 = 0xfee0_0000;
/// The smallest RAM the VMM accepts: room for the boot structures and a kernel.
pub const MIN_RAM_SIZE: u64 = 32 << 20;

/// Guest RAM ranges (start, size) for `ram_size` bytes of boot RAM.
pub fn ram_ranges(ram_size: u64) -> Vec<(u64, u64)> {
    if ram_size <= MEM_32BIT_GAP_START {
        vec![(0, ram_size)]
    } else {
        vec![
            (0, MEM_32BIT_GAP_START),
            (RAM_64BIT_START, ram_size - MEM_32BIT_GAP_START),
        ]
    }
}

/// End (exclusive) of RAM below the 32-bit hole.
pub fn low_ram_end(ram_size: u64) -> u64 {
    ram_size.min(MEM_32BIT_GAP_START)
}

// The boot structures must not overlap; checked when the crate compiles.
const _: () = {
    assert!(BOOT_IDT_START >= BOOT_GDT_START + 4 * 8);
    assert!(PVH_MODLIST_START >= PVH_INFO_START + 56);
    assert!(PVH_MEMMAP_START + (PVH_MEMMAP_MAX_ENTRIES as u64) * 24 <= ZERO_PAGE_START);
    assert!(ZERO_PAGE_START + 4096 <= BOOT_STACK_POINTER);
    assert!(BOOT_STACK_POINTER < PML4_START);
    assert!(PDE_START + 4 * 4096 <= CMDLINE_START);
    assert!(CMDLINE_START + CMDLINE_MAX_SIZE as u64 <= EBDA_START);
    assert!(ACPI_END <= FIRMWARE_END);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_ram_is_one_range() {
        assert_eq!(ram_ranges(512 << 20), vec![(0, 512 << 20)]);
        assert_eq!(low_ram_end(512 << 20), 512 << 20);
    }

    #[test]
    fn large_ram_is_split_around_the_hole() {
        let r = ram_ranges(4 << 30);
        assert_eq!(r, vec![(0, 3 << 30), (4 << 30, 1 << 30)]);
        assert_eq!(low_ram_end(4 << 30), 3 << 30);
    }
}
