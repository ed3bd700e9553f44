//! Guest physical memory layout (see docs/design.md and docs/memory.md).
//!
//! ```text
//! 0        .. 640 KiB   RAM: GDT, PVH start info, zero page, page tables, command line
//! 640 KiB  .. 1 MiB     legacy hole; ACPI tables at 0xe0000, reset vector stub at 0xffff0
//! 1 MiB    .. min(ram, 3 GiB)  RAM: kernel and initramfs
//! 3 GiB    .. 3.625 GiB 32-bit PCI MMIO window (BARs)
//! 3.625 GiB .. 3.875 GiB PCI ECAM (256 buses), described by the MCFG
//! 4 GiB - 20 MiB ..     IOAPIC, LAPIC
//! 4 GiB    .. 4 GiB + the rest of boot RAM
//! next 1 GiB boundary   one region per virtio-mem device, each aligned to
//!                       max(block size, 128 MiB); not in e820, HOT_PLUGGABLE in the SRAT
//! next 1 GiB boundary   64-bit PCI MMIO window
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
/// 32-bit PCI MMIO window, for BARs that must sit below 4 GiB.
pub const PCI_MMIO32_START: u64 = MEM_32BIT_GAP_START;
pub const PCI_MMIO32_SIZE: u64 = 640 << 20;
/// PCI Express enhanced configuration space (ECAM): 1 MiB per bus.
pub const PCI_ECAM_START: u64 = PCI_MMIO32_START + PCI_MMIO32_SIZE;
pub const PCI_ECAM_SIZE: u64 = 256 << 20;
/// The 64-bit PCI MMIO window's size; it starts after the virtio-mem regions.
pub const PCI_MMIO64_SIZE: u64 = 64 << 30;
/// virtio-mem regions start at a 1 GiB boundary after boot RAM, and each is aligned to at
/// least this (Linux adds memory in 128 MiB sections on x86-64).
pub const DEVICE_REGION_MIN_ALIGN: u64 = 128 << 20;
const GIB: u64 = 1 << 30;
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

/// End (exclusive) of the highest boot RAM range, or None if it is past the top of the
/// 64-bit address space (more than 2^64 - 1 GiB of boot RAM: the 1 GiB hole below 4 GiB
/// pushes the rest up).
pub fn ram_end(ram_size: u64) -> Option<u64> {
    ram_ranges(ram_size)
        .last()
        .map_or(Some(0), |&(start, size)| start.checked_add(size))
}

/// Rounds `addr` up to a multiple of `align` (a power of two), or None on overflow.
pub fn align_up(addr: u64, align: u64) -> Option<u64> {
    debug_assert!(align.is_power_of_two());
    addr.checked_add(align - 1).map(|a| a & !(align - 1))
}

/// Places device memory regions of `sizes` bytes after `ram_size` bytes of boot RAM, each
/// aligned to max(`block_size`, 128 MiB); returns their start addresses and the start of
/// the 64-bit PCI window that follows them, or None if the layout does not fit in 64 bits.
pub fn place_device_regions(
    ram_size: u64,
    block_size: u64,
    sizes: &[u64],
) -> Option<(Vec<u64>, u64)> {
    let align = block_size.max(DEVICE_REGION_MIN_ALIGN);
    let mut next = align_up(ram_end(ram_size)?.max(RAM_64BIT_START), GIB)?;
    let mut starts = Vec::with_capacity(sizes.len());
    for &size in sizes {
        let start = align_up(next, align)?;
        starts.push(start);
        next = start.checked_add(size)?;
    }
    let mmio64 = align_up(next, GIB)?;
    mmio64.checked_add(PCI_MMIO64_SIZE)?;
    Some((starts, mmio64))
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
    assert!(PCI_ECAM_START + PCI_ECAM_SIZE <= IOAPIC_START);
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

    #[test]
    fn device_regions_follow_boot_ram_aligned() {
        // 1 GiB of boot RAM: regions start at the first 1 GiB boundary above 4 GiB.
        let (starts, mmio64) =
            place_device_regions(1 << 30, 2 << 20, &[3 << 30, 100 << 20]).unwrap();
        assert_eq!(starts, vec![4 << 30, 7 << 30]);
        // 100 MiB region ends at 7 GiB + 100 MiB; the PCI window is at the next GiB.
        assert_eq!(mmio64, 8 << 30);
        // 4.5 GiB of boot RAM ends at 5.5 GiB: the regions start at 6 GiB; 1 GiB blocks align.
        let (starts, _) = place_device_regions(4608 << 20, 1 << 30, &[1 << 30, 1 << 30]).unwrap();
        assert_eq!(starts, vec![6 << 30, 7 << 30]);
        // Odd sizes still give aligned starts.
        let (starts, _) = place_device_regions(1 << 30, 2 << 20, &[130 << 20, 2 << 20]).unwrap();
        assert_eq!(starts[1] % (128 << 20), 0);
        assert!(starts[1] >= starts[0] + (130 << 20));
        assert!(place_device_regions(1 << 30, 2 << 20, &[u64::MAX - (1 << 30)]).is_none());
    }

    /// Found by the `api_request` fuzz body (its pseudo-random unit test): `vm.boot` of a VM
    /// with `"size": 18446744073709547520` (2^64 - 4 KiB), which validation accepts,
    /// overflowed computing the end of boot RAM.
    #[test]
    fn boot_ram_past_the_top_of_the_address_space_does_not_fit() {
        assert_eq!(ram_end(0), Some(0));
        assert_eq!(ram_end(4 << 30), Some(5 << 30));
        assert_eq!(ram_end(u64::MAX - GIB), Some(u64::MAX));
        assert_eq!(ram_end(u64::MAX - GIB + 1), None);
        assert_eq!(ram_end(u64::MAX - 4095), None);
        assert!(place_device_regions(u64::MAX - 4095, 2 << 20, &[]).is_none());
        assert!(place_device_regions(u64::MAX - 4095, 2 << 20, &[2 << 20]).is_none());
    }
}
