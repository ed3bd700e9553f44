use super::*;
use crate::bar::{BarKind, BarRegion, BarReprogram};

pub(super) fn header() -> PciHeader {
    PciHeader {
        vendor_id: 0x1af4,
        device_id: 0x1058,
        revision_id: 1,
        prog_if: 0,
        subclass: 0x80,
        class_code: 0x05,
        subsystem_vendor_id: 0x1af4,
        subsystem_id: 0x40,
    }
}

fn bar(index: u8, addr: u64, size: u64, kind: BarKind) -> BarRegion {
    BarRegion {
        index,
        addr,
        size,
        kind,
        prefetchable: false,
    }
}

fn write32(config: &mut PciConfiguration, reg: usize, value: u32) -> Option<BarReprogram> {
    config.write_register(reg, 0, &value.to_le_bytes())
}

#[test]
fn identity_is_read_only() {
    let mut c = PciConfiguration::new(&header());
    assert_eq!(c.read_register(0), 0x1058_1af4);
    assert_eq!(c.read_register(2), 0x0580_0001);
    assert_eq!(c.read_register(11), 0x0040_1af4);
    for reg in [0, 2, 11, 12, 13] {
        let before = c.read_register(reg);
        write32(&mut c, reg, 0xffff_ffff);
        assert_eq!(c.read_register(reg), before, "register {reg}");
    }
}

#[test]
fn command_status_and_interrupt_masks() {
    let mut c = PciConfiguration::new(&header());
    write32(&mut c, 1, 0xffff_ffff);
    assert_eq!(c.command(), 0x0547);
    assert_eq!(
        c.status(),
        0,
        "status is read-only and has no capability bit yet"
    );
    c.write_register(1, 0, &[0x06]);
    assert_eq!(c.command(), 0x0506);
    assert_eq!(c.command() & COMMAND_MEMORY_SPACE, COMMAND_MEMORY_SPACE);

    write32(&mut c, 15, 0xffff_ffff);
    assert_eq!(
        c.read_register(15),
        0xff,
        "line writable, pin 0, grant/latency 0"
    );
    write32(&mut c, 3, 0xffff_ffff);
    assert_eq!(
        c.read_register(3),
        0xff,
        "cache line size only; header type 0"
    );
}

#[test]
fn narrow_reads_and_writes() {
    let mut c = PciConfiguration::new(&header());
    let mut b = [0u8; 2];
    c.read(0, 2, &mut b);
    assert_eq!(u16::from_le_bytes(b), 0x1058);
    let mut one = [0u8; 1];
    c.read(2, 3, &mut one);
    assert_eq!(one[0], 0x05);
    c.write_register(15, 0, &[0x0b]);
    c.read(15, 0, &mut one);
    assert_eq!(one[0], 0x0b);
    // Crossing the end of a register: ignored, reads all ones.
    c.write_register(15, 3, &[1, 2]);
    assert_eq!(c.read_register(15), 0x0b);
    let mut four = [0u8; 4];
    c.read(0, 2, &mut four);
    assert_eq!(four, [0xff; 4]);
}

#[test]
fn extended_space_reads_zero_and_beyond_reads_all_ones() {
    let mut c = PciConfiguration::new(&header());
    assert_eq!(c.read_register(64), 0);
    assert_eq!(c.read_register(1023), 0);
    assert_eq!(c.read_register(1024), 0xffff_ffff);
    assert_eq!(write32(&mut c, 100, 0x1234), None);
    assert_eq!(c.read_register(100), 0);
}

#[test]
fn bar32_size_probe_and_restore() {
    let mut c = PciConfiguration::new(&header());
    c.add_bar(&bar(0, 0xc000_0000, 0x1000, BarKind::Memory32))
        .unwrap();
    assert_eq!(c.read_register(4), 0xc000_0000);
    assert_eq!(write32(&mut c, 4, 0xffff_ffff), None);
    assert_eq!(
        c.read_register(4),
        0xffff_f000,
        "size mask, 32-bit type bits"
    );
    assert_eq!(write32(&mut c, 4, 0xc000_0000), None, "restore is no move");
    assert_eq!(c.read_register(4), 0xc000_0000);
    assert_eq!(c.bar(0).unwrap().addr, 0xc000_0000);
}

#[test]
fn bar32_reprogram_is_reported_with_low_bits_forced() {
    let mut c = PciConfiguration::new(&header());
    let mut region = bar(1, 0xc000_0000, 0x4000, BarKind::Memory32);
    region.prefetchable = true;
    c.add_bar(&region).unwrap();
    assert_eq!(c.read_register(5), 0xc000_0008);
    let change = write32(&mut c, 5, 0xd000_1fff).unwrap();
    assert_eq!(
        change,
        BarReprogram {
            index: 1,
            old_addr: 0xc000_0000,
            new_addr: 0xd000_0000,
            size: 0x4000,
            kind: BarKind::Memory32,
        }
    );
    assert_eq!(c.read_register(5), 0xd000_0008);
    assert_eq!(c.bar(1).unwrap().addr, 0xd000_0000);
    // A byte write moving it again.
    let change = c.write_register(5, 3, &[0xe0]).unwrap();
    assert_eq!(
        (change.old_addr, change.new_addr),
        (0xd000_0000, 0xe000_0000)
    );
}

#[test]
fn bar64_size_probe_and_restore() {
    let mut c = PciConfiguration::new(&header());
    c.add_bar(&bar(2, 0x1_0000_0000, 0x8000, BarKind::Memory64))
        .unwrap();
    assert_eq!(c.read_register(6), 0x0000_0004);
    assert_eq!(c.read_register(7), 0x0000_0001);
    // Linux: probe low, restore low, probe high, restore high.
    assert_eq!(write32(&mut c, 6, 0xffff_ffff), None);
    assert_eq!(c.read_register(6), 0xffff_8004);
    assert_eq!(write32(&mut c, 6, 0x0000_0004), None);
    assert_eq!(write32(&mut c, 7, 0xffff_ffff), None);
    assert_eq!(c.read_register(7), 0xffff_ffff);
    assert_eq!(write32(&mut c, 7, 0x0000_0001), None);
    let size = !(u64::from(0xffff_ffffu32) << 32 | 0xffff_8000) + 1;
    assert_eq!(size, 0x8000);
    assert_eq!(c.bar(2).unwrap().addr, 0x1_0000_0000);
}

#[test]
fn bar64_larger_than_4g_has_no_low_address_bits() {
    let mut c = PciConfiguration::new(&header());
    c.add_bar(&bar(0, 0x10_0000_0000, 0x2_0000_0000, BarKind::Memory64))
        .unwrap();
    write32(&mut c, 4, 0xffff_ffff);
    write32(&mut c, 5, 0xffff_ffff);
    assert_eq!(c.read_register(4), 0x4);
    assert_eq!(c.read_register(5), 0xffff_fffe);
}

#[test]
fn bar64_reprogram_per_register_and_probe_in_the_other_half() {
    let mut c = PciConfiguration::new(&header());
    c.add_bar(&bar(4, 0x1_0000_0000, 0x1000, BarKind::Memory64))
        .unwrap();
    let change = write32(&mut c, 9, 0x2).unwrap();
    assert_eq!(
        (change.old_addr, change.new_addr),
        (0x1_0000_0000, 0x2_0000_0000)
    );
    assert_eq!(change.index, 4);
    // High half probing: a low write does not count as an address until it is restored.
    write32(&mut c, 9, 0xffff_ffff);
    assert_eq!(write32(&mut c, 8, 0x5000), None);
    let change = write32(&mut c, 9, 0x2).unwrap();
    assert_eq!(
        (change.old_addr, change.new_addr),
        (0x2_0000_0000, 0x2_0000_5000)
    );
}

#[test]
fn unused_bars_and_rom_read_zero() {
    let mut c = PciConfiguration::new(&header());
    for reg in 4..=12 {
        write32(&mut c, reg, 0xffff_ffff);
        if reg != 11 {
            assert_eq!(c.read_register(reg), 0, "register {reg}");
        }
    }
}

#[test]
fn add_bar_rejects_bad_requests() {
    let mut c = PciConfiguration::new(&header());
    use ConfigError::*;
    let e = |r: BarRegion, c: &mut PciConfiguration| c.add_bar(&r).unwrap_err();
    assert!(matches!(
        e(bar(6, 0, 0x1000, BarKind::Memory32), &mut c),
        BarIndex { .. }
    ));
    assert!(matches!(
        e(bar(5, 0, 0x1000, BarKind::Memory64), &mut c),
        BarIndex { .. }
    ));
    assert!(matches!(
        e(bar(0, 0, 0x1800, BarKind::Memory32), &mut c),
        BarSize { .. }
    ));
    assert!(matches!(
        e(bar(0, 0, 8, BarKind::Memory32), &mut c),
        BarSize { .. }
    ));
    assert!(matches!(
        e(bar(0, 0x800, 0x1000, BarKind::Memory32), &mut c),
        BarAlignment { .. }
    ));
    assert!(matches!(
        e(bar(0, 0x1_0000_0000, 0x1000, BarKind::Memory32), &mut c),
        BarOutOfRange { .. }
    ));
    assert!(matches!(
        e(
            bar(0, 0xffff_ffff_ffff_f000, 0x1000, BarKind::Memory64),
            &mut c
        ),
        BarOutOfRange { .. }
    ));
    c.add_bar(&bar(1, 0, 0x1000, BarKind::Memory64)).unwrap();
    assert!(matches!(
        e(bar(2, 0x1000, 0x1000, BarKind::Memory32), &mut c),
        BarInUse { index: 2 }
    ));
    assert!(matches!(
        e(bar(0, 0x1000, 0x1000, BarKind::Memory64), &mut c),
        BarInUse { index: 0 }
    ));
    assert!(matches!(
        e(bar(1, 0x1000, 0x1000, BarKind::Memory32), &mut c),
        BarInUse { index: 1 }
    ));
    assert_eq!(c.bars().len(), 1);
}

#[test]
fn capability_chain_walk() {
    let mut c = PciConfiguration::new(&header());
    assert!(c.capabilities().is_empty());
    let a = c.add_capability(CAPABILITY_ID_VENDOR, &[0xaa; 3]).unwrap();
    let b = c.add_capability(CAPABILITY_ID_MSIX, &[0xbb; 10]).unwrap();
    let d = c.add_capability(CAPABILITY_ID_VENDOR, &[]).unwrap();
    assert_eq!((a, b, d), (0x40, 0x48, 0x54));
    assert_eq!(
        c.status() & STATUS_CAPABILITIES_LIST,
        STATUS_CAPABILITIES_LIST
    );
    assert_eq!(c.read_register(13) & 0xff, 0x40);
    assert_eq!(c.read_register(0x40 / 4), 0xaaaa_4809);
    assert_eq!(
        c.capabilities(),
        vec![(0x09, 0x40), (0x11, 0x48), (0x09, 0x54)]
    );
    assert_eq!(c.find_capability(CAPABILITY_ID_MSIX), Some(0x48));
    assert_eq!(c.find_capability(0x05), None);
}

#[test]
fn capability_write_mask() {
    let mut c = PciConfiguration::new(&header());
    let at = c
        .add_capability_with_mask(CAPABILITY_ID_MSIX, &[0x03, 0x00], &[0x00, 0xc0])
        .unwrap();
    let reg = at / 4;
    write32(&mut c, reg, 0xffff_ffff);
    assert_eq!(
        c.read_register(reg),
        0xc003_0011,
        "id, next and low byte are read-only"
    );
    assert!(matches!(
        c.add_capability_with_mask(CAPABILITY_ID_MSIX, &[0; 2], &[0]),
        Err(ConfigError::CapabilityMask { .. })
    ));
}

#[test]
fn capabilities_that_do_not_fit_are_refused() {
    let mut c = PciConfiguration::new(&header());
    let big = c.add_capability(CAPABILITY_ID_VENDOR, &[0; 0xb0]).unwrap();
    assert_eq!(big, 0x40);
    let e = c
        .add_capability(CAPABILITY_ID_VENDOR, &[0; 0x0f])
        .unwrap_err();
    assert_eq!(
        e,
        ConfigError::CapabilitySpace {
            id: 9,
            len: 0x11,
            offset: 0xf4
        }
    );
    assert_eq!(c.add_capability(CAPABILITY_ID_VENDOR, &[0; 10]), Ok(0xf4));
    assert_eq!(c.capabilities().len(), 2);
}

#[test]
fn any_access_is_safe() {
    let mut c = PciConfiguration::new(&header());
    c.add_bar(&bar(0, 0xc000_0000, 0x1000, BarKind::Memory32))
        .unwrap();
    c.add_bar(&bar(2, 0x1_0000_0000, 0x1000, BarKind::Memory64))
        .unwrap();
    c.add_capability(CAPABILITY_ID_VENDOR, &[1, 2, 3]).unwrap();
    for reg in 0..1100 {
        for offset in 0..8 {
            for len in [1, 2, 3, 4, 8] {
                let data = [0xa5u8; 8];
                c.write_register(reg, offset, &data[..len]);
                let mut out = [0u8; 8];
                c.read(reg, offset, &mut out[..len]);
            }
        }
    }
    // The identity survived the storm.
    assert_eq!(c.read_register(0), 0x1058_1af4);
}
