//! The boot GDT and its segment descriptors.

use kvm_bindings::kvm_segment;

/// Flat segments: null, 64-bit code, 32-bit code, data.
pub const BOOT_GDT: [u64; 4] = [
    gdt_entry(0, 0, 0),            // null
    gdt_entry(0xa09b, 0, 0xfffff), // code, 64-bit (L)
    gdt_entry(0xc09b, 0, 0xfffff), // code, 32-bit (D)
    gdt_entry(0xc093, 0, 0xfffff), // data
];
pub const CODE64_SELECTOR: u16 = 1 << 3;
pub const CODE32_SELECTOR: u16 = 2 << 3;
pub const DATA_SELECTOR: u16 = 3 << 3;

/// Packs flags, base and limit into a descriptor.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0x0000_f0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// The KVM segment register image of descriptor `index` of `BOOT_GDT`.
pub fn segment(index: usize) -> kvm_segment {
    let entry = BOOT_GDT[index];
    let base = ((entry >> 16) & 0xff_ffff) | ((entry >> 32) & 0xff00_0000);
    let limit_raw = ((entry & 0xffff) | ((entry >> 32) & 0xf_0000)) as u32;
    let g = ((entry >> 55) & 1) as u8;
    let limit = if g == 1 {
        (limit_raw << 12) | 0xfff
    } else {
        limit_raw
    };
    kvm_segment {
        base,
        limit,
        selector: (index as u16) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: 0,
        padding: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code64_segment_is_long_mode() {
        let s = segment(1);
        assert_eq!((s.l, s.db, s.present, s.s, s.type_), (1, 0, 1, 1, 0xb));
        assert_eq!(s.limit, 0xffff_ffff);
        assert_eq!(s.selector, CODE64_SELECTOR);
    }

    #[test]
    fn data_segment_is_flat_writable() {
        let s = segment(3);
        assert_eq!((s.base, s.limit, s.type_, s.db), (0, 0xffff_ffff, 3, 1));
    }
}
