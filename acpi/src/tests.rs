// SPDX-License-Identifier: Apache-2.0

//! Tests that write the tables into guest memory and read them back the way a guest would,
//! using the field offsets from the ACPI specification (not from `acpi_tables`).

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::*;

const RSDP_ADDR: GuestAddress = GuestAddress(0xe0000);
const AREA_END: GuestAddress = GuestAddress(0x10_0000);

fn config(num_vcpus: u32, pci: Option<PciHostBridge>) -> AcpiConfig {
    AcpiConfig {
        num_vcpus,
        ioapic_id: 1,
        ioapic_addr: 0xfec0_0000,
        ioapic_gsi_base: 0,
        lapic_addr: 0xfee0_0000,
        com1_port: 0x3f8,
        com1_irq: 4,
        sleep_control_port: 0x600,
        sleep_status_port: 0x601,
        reset_port: 0x604,
        reset_value: 0x0f,
        ged_port: 0x610,
        ged_irq: 5,
        pci,
        numa: vec![NumaNode {
            proximity_domain: 0,
            // At most 256 (the MADT refuses more before the SRAT is built, and u32::MAX
            // vCPUs would not fit in memory here).
            cpus: (0..num_vcpus.min(256)).collect(),
            memory: vec![MemoryAffinity {
                base: 0,
                size: 512 << 20,
                hotpluggable: false,
            }],
        }],
        numa_distances: Vec::new(),
    }
}

fn bridge() -> PciHostBridge {
    PciHostBridge {
        ecam_base: 0xe000_0000,
        ecam_size: 0x1000_0000,
        bus_start: 0,
        bus_end: 255,
        mmio32_base: 0xc000_0000,
        mmio32_size: 0x2000_0000,
        mmio64_base: 0x80_0000_0000,
        mmio64_size: 0x40_0000_0000,
        intx_routes: Vec::new(),
    }
}

/// The first MiB of guest RAM, like the VMM's low memory.
fn low_memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).expect("guest memory")
}

fn read(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    mem.read_slice(&mut buf, GuestAddress(addr))
        .expect("read guest memory");
    buf
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |acc, x| acc.wrapping_add(*x))
}

/// Reads the system description table at `addr`, checking its length field and checksum.
fn table_at(mem: &GuestMemoryMmap, addr: u64) -> Vec<u8> {
    let header = read(mem, addr, 36);
    let len = u32_at(&header, 4) as usize;
    assert!(len >= 36, "table at {addr:#x} has length {len}");
    let table = read(mem, addr, len);
    let sig = String::from_utf8_lossy(&table[0..4]).into_owned();
    assert_eq!(sum(&table), 0, "{sig} checksum");
    assert_eq!(&table[10..16], b"ACCORD", "{sig} OEM ID");
    assert_eq!(&table[16..24], b"ACCORDIO", "{sig} OEM table ID");
    table
}

/// Everything a guest finds by following the RSDP.
struct Tables {
    rsdp: Vec<u8>,
    xsdt_addr: u64,
    xsdt: Vec<u8>,
    /// (address, bytes) of each table the XSDT lists, in order.
    listed: Vec<(u64, Vec<u8>)>,
    dsdt_addr: u64,
    dsdt: Vec<u8>,
}

impl Tables {
    fn find(&self, sig: &[u8; 4]) -> Option<&Vec<u8>> {
        self.listed.iter().map(|(_, t)| t).find(|t| &t[0..4] == sig)
    }

    fn get(&self, sig: &[u8; 4]) -> &Vec<u8> {
        self.find(sig)
            .unwrap_or_else(|| panic!("{} not in XSDT", String::from_utf8_lossy(sig)))
    }

    fn signatures(&self) -> Vec<&[u8]> {
        self.listed.iter().map(|(_, t)| &t[0..4]).collect()
    }
}

/// Creates the tables for `cfg` in low memory and reads them back from the RSDP on.
fn create(cfg: &AcpiConfig) -> (GuestMemoryMmap, Tables) {
    let mem = low_memory();
    let rsdp_addr = create_acpi_tables(&mem, RSDP_ADDR, AREA_END, cfg).expect("tables");
    assert_eq!(rsdp_addr, RSDP_ADDR);

    let rsdp = read(&mem, RSDP_ADDR.0, 36);
    assert_eq!(&rsdp[0..8], b"RSD PTR ");
    assert_eq!(sum(&rsdp[0..20]), 0, "RSDP checksum (first 20 bytes)");
    assert_eq!(sum(&rsdp), 0, "RSDP extended checksum");
    assert_eq!(rsdp[15], 2, "RSDP revision");
    assert_eq!(u32_at(&rsdp, 20), 36, "RSDP length");
    assert_eq!(u32_at(&rsdp, 16), 0, "no RSDT");

    let xsdt_addr = u64_at(&rsdp, 24);
    let xsdt = table_at(&mem, xsdt_addr);
    assert_eq!(&xsdt[0..4], b"XSDT");
    assert_eq!((xsdt.len() - 36) % 8, 0);
    let listed: Vec<_> = xsdt[36..]
        .chunks(8)
        .map(|entry| {
            let addr = u64::from_le_bytes(entry.try_into().unwrap());
            (addr, table_at(&mem, addr))
        })
        .collect();

    let fadt = &listed
        .iter()
        .find(|(_, t)| &t[0..4] == b"FACP")
        .expect("FADT in XSDT")
        .1;
    let dsdt_addr = u64_at(fadt, 140);
    let dsdt = table_at(&mem, dsdt_addr);
    assert_eq!(&dsdt[0..4], b"DSDT");

    // Every table lies in the area, after the RSDP, without overlapping another one.
    let mut spans: Vec<(u64, u64)> = listed
        .iter()
        .map(|(a, t)| (*a, *a + t.len() as u64))
        .collect();
    spans.push((xsdt_addr, xsdt_addr + xsdt.len() as u64));
    spans.push((dsdt_addr, dsdt_addr + dsdt.len() as u64));
    spans.push((RSDP_ADDR.0, RSDP_ADDR.0 + 36));
    spans.sort();
    assert_eq!(spans[0].0, RSDP_ADDR.0);
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "tables overlap: {spans:x?}");
    }
    assert!(spans.last().unwrap().1 <= AREA_END.0);

    let tables = Tables {
        rsdp,
        xsdt_addr,
        xsdt,
        listed,
        dsdt_addr,
        dsdt,
    };
    (mem, tables)
}

/// MADT interrupt controller structures as (type, bytes).
fn madt_entries(madt: &[u8]) -> Vec<(u8, &[u8])> {
    let mut entries = Vec::new();
    let mut off = 44;
    while off < madt.len() {
        let (kind, len) = (madt[off], madt[off + 1] as usize);
        assert!(len >= 2 && off + len <= madt.len(), "bad MADT entry");
        entries.push((kind, &madt[off..off + len]));
        off += len;
    }
    entries
}

#[test]
fn rsdp_and_xsdt_without_pci() {
    let (_mem, t) = create(&config(2, None));
    assert_eq!(&t.rsdp[9..15], b"ACCORD");
    assert_eq!(t.xsdt[8], 1, "XSDT revision");
    assert_eq!(
        t.signatures(),
        vec![&b"FACP"[..], &b"APIC"[..], &b"SRAT"[..]]
    );
    assert!(t.find(b"SLIT").is_none(), "one node: no SLIT");
    assert!(t.find(b"MCFG").is_none());
    assert!(t.xsdt_addr > t.dsdt_addr);
}

#[test]
fn xsdt_lists_mcfg_with_pci() {
    let (_mem, t) = create(&config(2, Some(bridge())));
    assert_eq!(
        t.signatures(),
        vec![&b"FACP"[..], &b"APIC"[..], &b"SRAT"[..], &b"MCFG"[..]]
    );
}

#[test]
fn fadt_is_hardware_reduced_with_the_configured_registers() {
    let cfg = config(4, None);
    let (_mem, t) = create(&cfg);
    let fadt = t.get(b"FACP");

    assert_eq!(fadt.len(), 276, "ACPI 6.x FADT length");
    assert_eq!(fadt[8], 6, "FADT major revision");
    assert_eq!(fadt[131], 5, "FADT minor revision");

    let flags = u32_at(fadt, 112);
    assert_ne!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
    assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");
    assert_eq!(flags, (1 << 20) | (1 << 10), "no other flags");
    assert_eq!(fadt[45], 0, "preferred PM profile: unspecified");
    assert_eq!(
        u16_at(fadt, 109),
        (1 << 2) | (1 << 5),
        "IAPC_BOOT_ARCH: VGA and CMOS RTC not present"
    );

    // No FACS, DSDT only through X_DSDT.
    assert_eq!(u32_at(fadt, 36), 0, "FIRMWARE_CTRL");
    assert_eq!(u64_at(fadt, 132), 0, "X_FIRMWARE_CTRL");
    assert_eq!(u32_at(fadt, 40), 0, "32-bit DSDT");
    assert_eq!(u64_at(fadt, 140), t.dsdt_addr, "X_DSDT");

    // Generic address structures: system I/O (1), 8 bits, offset 0, byte access (1), port.
    let gas = |off: usize| {
        (
            fadt[off],
            fadt[off + 1],
            fadt[off + 2],
            fadt[off + 3],
            u64_at(fadt, off + 4),
        )
    };
    assert_eq!(
        gas(116),
        (1, 8, 0, 1, u64::from(cfg.reset_port)),
        "RESET_REG"
    );
    assert_eq!(fadt[128], cfg.reset_value, "RESET_VALUE");
    assert_eq!(
        gas(244),
        (1, 8, 0, 1, u64::from(cfg.sleep_control_port)),
        "SLEEP_CONTROL_REG"
    );
    assert_eq!(
        gas(256),
        (1, 8, 0, 1, u64::from(cfg.sleep_status_port)),
        "SLEEP_STATUS_REG"
    );
    // The fixed-hardware blocks a hardware-reduced platform does not have are empty.
    assert!(fadt[46..108].iter().all(|b| *b == 0), "legacy PM fields");
    assert!(
        fadt[148..244].iter().all(|b| *b == 0),
        "X_PM*/X_GPE* blocks"
    );

    assert_eq!(&fadt[268..276], b"ACCORDIO", "hypervisor vendor identity");
}

#[test]
fn madt_describes_every_vcpu_and_the_ioapic() {
    let cfg = config(8, None);
    let (_mem, t) = create(&cfg);
    let madt = t.get(b"APIC");

    assert_eq!(u32_at(madt, 36), cfg.lapic_addr);
    assert_eq!(u32_at(madt, 40) & 1, 1, "PCAT_COMPAT");

    let entries = madt_entries(madt);
    let lapics: Vec<_> = entries.iter().filter(|(k, _)| *k == 0).collect();
    assert_eq!(lapics.len(), 8);
    for (i, (_, e)) in lapics.iter().enumerate() {
        assert_eq!(e.len(), 8);
        assert_eq!(e[2], i as u8, "processor UID");
        assert_eq!(e[3], i as u8, "APIC ID");
        assert_eq!(u32_at(e, 4), 1, "enabled");
    }

    let ioapics: Vec<_> = entries.iter().filter(|(k, _)| *k == 1).collect();
    assert_eq!(ioapics.len(), 1);
    let ioapic = ioapics[0].1;
    assert_eq!(ioapic.len(), 12);
    assert_eq!(ioapic[2], cfg.ioapic_id);
    assert_eq!(u32_at(ioapic, 4), cfg.ioapic_addr);
    assert_eq!(u32_at(ioapic, 8), cfg.ioapic_gsi_base);

    let overrides: Vec<_> = entries.iter().filter(|(k, _)| *k == 2).collect();
    assert_eq!(overrides.len(), 1);
    let iso = overrides[0].1;
    assert_eq!(iso.len(), 10);
    assert_eq!((iso[2], iso[3]), (0, 0), "ISA bus, IRQ 0");
    assert_eq!(u32_at(iso, 4), 2, "GSI 2");
    assert_eq!(u16_at(iso, 8), 0, "conforms to ISA: edge, active high");

    let nmis: Vec<_> = entries.iter().filter(|(k, _)| *k == 4).collect();
    assert_eq!(nmis.len(), 1);
    let nmi = nmis[0].1;
    assert_eq!(nmi.len(), 6);
    assert_eq!(nmi[2], 0xff, "all processors");
    assert_eq!(u16_at(nmi, 3), 0b0101, "edge, active high");
    assert_eq!(nmi[5], 1, "LINT1");

    assert_eq!(entries.len(), 8 + 3, "nothing else in the MADT");
}

#[test]
fn madt_takes_255_vcpus_but_not_0_or_256() {
    let (_mem, t) = create(&config(255, None));
    let lapics = madt_entries(t.get(b"APIC"))
        .into_iter()
        .filter(|(k, _)| *k == 0)
        .count();
    assert_eq!(lapics, 255);

    for count in [0, 256, u32::MAX] {
        let err = create_acpi_tables(&low_memory(), RSDP_ADDR, AREA_END, &config(count, None))
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidVcpuCount { count: c } if c == count),
            "{err}"
        );
    }
}

#[test]
fn mcfg_describes_the_ecam_window() {
    let pci = bridge();
    let (_mem, t) = create(&config(1, Some(pci.clone())));
    let mcfg = t.get(b"MCFG");
    assert_eq!(mcfg.len(), 36 + 8 + 16);
    assert_eq!(u64_at(mcfg, 44), pci.ecam_base);
    assert_eq!(u16_at(mcfg, 52), 0, "segment");
    assert_eq!((mcfg[54], mcfg[55]), (0, 255), "bus range");
}

#[test]
fn mcfg_base_is_bus_zero_address_when_bus_start_is_not_zero() {
    let pci = PciHostBridge {
        ecam_base: 0xe100_0000,
        ecam_size: 0x10 << 20,
        bus_start: 0x10,
        bus_end: 0x1f,
        ..bridge()
    };
    let (_mem, t) = create(&config(1, Some(pci)));
    let mcfg = t.get(b"MCFG");
    assert_eq!(u64_at(mcfg, 44), 0xe000_0000);
    assert_eq!((mcfg[54], mcfg[55]), (0x10, 0x1f));

    let pci0 = device_body(&t.dsdt, b"PCI0");
    assert_eq!(name_integer(pci0, b"_BBN"), 0x10);
    let crs = resources(name_buffer(pci0, b"_CRS"));
    assert_eq!(
        crs[0],
        Resource::Addr {
            kind: 2,
            min: 0x10,
            max: 0x1f,
            len: 0x10
        }
    );
}

// --- AML reading, just enough for our DSDT ---

/// Decodes an AML PkgLength at `b[0..]`: (value, bytes used).
fn pkg_length(b: &[u8]) -> (usize, usize) {
    let follow = (b[0] >> 6) as usize;
    if follow == 0 {
        return ((b[0] & 0x3f) as usize, 1);
    }
    let mut len = (b[0] & 0x0f) as usize;
    for i in 0..follow {
        len |= (b[1 + i] as usize) << (4 + 8 * i);
    }
    (len, 1 + follow)
}

/// Decodes an AML integer at `b[0..]`: (value, bytes used).
fn integer(b: &[u8]) -> (u64, usize) {
    match b[0] {
        0x00 => (0, 1),
        0x01 => (1, 1),
        0xff => (u64::MAX, 1),
        0x0a => (b[1].into(), 2),
        0x0b => (u16_at(b, 1).into(), 3),
        0x0c => (u32_at(b, 1).into(), 5),
        0x0e => (u64_at(b, 1), 9),
        op => panic!("not an integer: opcode {op:#x}"),
    }
}

fn position(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The body (after the name) of `Device (name)` somewhere in `aml`.
fn device_body<'a>(aml: &'a [u8], name: &[u8; 4]) -> &'a [u8] {
    let mut from = 0;
    while let Some(i) = position(&aml[from..], &[0x5b, 0x82]) {
        let op = from + i;
        let (len, used) = pkg_length(&aml[op + 2..]);
        let name_at = op + 2 + used;
        if &aml[name_at..name_at + 4] == name {
            return &aml[name_at + 4..op + 2 + len];
        }
        from = op + 2;
    }
    panic!("no Device ({})", String::from_utf8_lossy(name));
}

/// The value of `Name (name, <integer>)` in `body`.
fn name_integer(body: &[u8], name: &[u8; 4]) -> u64 {
    let mut needle = vec![0x08];
    needle.extend_from_slice(name);
    let at = position(body, &needle).expect("Name") + 5;
    integer(&body[at..]).0
}

/// The contents of the buffer in `Name (name, Buffer (..) {..})` in `body`.
fn name_buffer<'a>(body: &'a [u8], name: &[u8; 4]) -> &'a [u8] {
    let mut needle = vec![0x08];
    needle.extend_from_slice(name);
    let at = position(body, &needle).expect("Name") + 5;
    assert_eq!(body[at], 0x11, "BufferOp");
    let (pkg_len, pkg_used) = pkg_length(&body[at + 1..]);
    let (size, size_used) = integer(&body[at + 1 + pkg_used..]);
    let data = at + 1 + pkg_used + size_used;
    assert_eq!(pkg_len, pkg_used + size_used + size as usize);
    &body[data..data + size as usize]
}

#[derive(Debug, PartialEq)]
enum Resource {
    /// IO (Decode16, min, max, alignment, length)
    Io { min: u16, max: u16, len: u8 },
    /// Extended interrupt: flags, GSI.
    Irq { flags: u8, gsi: u32 },
    /// Memory32Fixed
    Mem32Fixed { base: u32, len: u32 },
    /// Word/DWord/QWord address space: resource type (0 memory, 1 I/O, 2 bus).
    Addr {
        kind: u8,
        min: u64,
        max: u64,
        len: u64,
    },
}

/// Decodes a resource template; checks it ends with an end tag.
fn resources(mut b: &[u8]) -> Vec<Resource> {
    let mut out = Vec::new();
    loop {
        let tag = b[0];
        if tag & 0x80 == 0 {
            let len = (tag & 7) as usize;
            match tag >> 3 {
                0x0f => {
                    assert_eq!(b.len(), 2, "end tag ends the template");
                    return out;
                }
                0x08 => out.push(Resource::Io {
                    min: u16_at(b, 2),
                    max: u16_at(b, 4),
                    len: b[7],
                }),
                other => panic!("unexpected small resource {other:#x}"),
            }
            b = &b[1 + len..];
        } else {
            let len = u16_at(b, 1) as usize;
            let d = &b[3..3 + len];
            match tag {
                0x89 => {
                    assert_eq!(d[1], 1, "one interrupt");
                    out.push(Resource::Irq {
                        flags: d[0],
                        gsi: u32_at(d, 2),
                    })
                }
                0x86 => out.push(Resource::Mem32Fixed {
                    base: u32_at(d, 1),
                    len: u32_at(d, 5),
                }),
                0x88 => out.push(Resource::Addr {
                    kind: d[0],
                    min: u16_at(d, 5).into(),
                    max: u16_at(d, 7).into(),
                    len: u16_at(d, 11).into(),
                }),
                0x87 => out.push(Resource::Addr {
                    kind: d[0],
                    min: u32_at(d, 7).into(),
                    max: u32_at(d, 11).into(),
                    len: u32_at(d, 19).into(),
                }),
                0x8a => out.push(Resource::Addr {
                    kind: d[0],
                    min: u64_at(d, 11),
                    max: u64_at(d, 19),
                    len: u64_at(d, 35),
                }),
                other => panic!("unexpected large resource {other:#x}"),
            }
            b = &b[3 + len..];
        }
    }
}

/// EISA ID encoding as `EISAName` produces it (a DWordConst).
fn eisa_id(id: &str) -> u64 {
    let mut needle = Vec::new();
    acpi_tables::aml::EISAName::new(id).to_aml_bytes(&mut needle);
    integer(&needle).0
}

#[test]
fn dsdt_has_com1() {
    let cfg = config(1, None);
    let (_mem, t) = create(&cfg);
    assert!(t.dsdt[8] >= 2, "DSDT revision >= 2: 64-bit AML integers");
    let aml = &t.dsdt[36..];

    // Scope (\_SB_) { Device (COM1) ... }
    assert_eq!(aml[0], 0x10, "ScopeOp first");
    let (_, used) = pkg_length(&aml[1..]);
    assert_eq!(&aml[1 + used..1 + used + 5], b"\\_SB_");

    let com1 = device_body(aml, b"COM1");
    assert_eq!(name_integer(com1, b"_HID"), eisa_id("PNP0501"));
    assert_eq!(eisa_id("PNP0501"), 0x0105_d041);
    assert_eq!(
        resources(name_buffer(com1, b"_CRS")),
        vec![
            Resource::Io {
                min: 0x3f8,
                max: 0x3f8,
                len: 8
            },
            // Consumer, edge, active high, exclusive.
            Resource::Irq {
                flags: 0b0011,
                gsi: 4
            },
        ]
    );

    assert!(position(aml, b"PCI0").is_none());
    assert!(position(aml, b"MBRD").is_none());
}

/// The body of `Method (name, ..)` in `aml`, after its flags byte; and the flags.
fn method_body<'a>(aml: &'a [u8], name: &[u8; 4]) -> (u8, &'a [u8]) {
    let mut from = 0;
    while let Some(i) = position(&aml[from..], &[0x14]) {
        let op = from + i;
        let (len, used) = pkg_length(&aml[op + 1..]);
        let name_at = op + 1 + used;
        if aml.get(name_at..name_at + 4) == Some(&name[..]) {
            return (aml[name_at + 4], &aml[name_at + 5..op + 1 + len]);
        }
        from = op + 1;
    }
    panic!("no Method ({})", String::from_utf8_lossy(name));
}

#[test]
fn dsdt_has_the_generic_event_device_and_power_button() {
    for pci in [None, Some(bridge())] {
        let cfg = AcpiConfig {
            ged_port: 0x1234,
            ged_irq: 9,
            ..config(1, pci)
        };
        let (_mem, t) = create(&cfg);
        let aml = &t.dsdt[36..];

        let ged = device_body(aml, b"GED_");
        // Name (_HID, "ACPI0013"): a string, not an EISA id.
        assert!(
            position(ged, b"\x08_HID\x0dACPI0013\x00").is_some(),
            "GED _HID"
        );
        assert_eq!(name_integer(ged, b"_UID"), 0);
        assert_eq!(
            resources(name_buffer(ged, b"_CRS")),
            // Consumer, edge, active high, exclusive.
            vec![Resource::Irq {
                flags: 0b0011,
                gsi: 9
            }]
        );

        // OperationRegion (GDST, SystemIO, 0x1234, 1)
        assert!(
            position(ged, b"\x5b\x80GDST\x01\x0b\x34\x12\x01").is_some(),
            "GED OperationRegion: {ged:02x?}"
        );
        // Field (GDST, ByteAcc, NoLock, WriteAsZeros) { GDAT, 8 }
        let field = position(ged, b"\x5b\x81").expect("Field");
        let (len, used) = pkg_length(&ged[field + 2..]);
        assert_eq!(
            &ged[field + 2 + used..field + 2 + len],
            b"GDST\x41GDAT\x08",
            "Field body"
        );

        let (flags, evt) = method_body(ged, b"_EVT");
        assert_eq!(flags, 0b1001, "_EVT: one argument, serialized");
        // If (LEqual (Arg0, 9)) {
        assert_eq!(evt[0], 0xa0, "IfOp");
        let (if_len, if_used) = pkg_length(&evt[1..]);
        assert_eq!(1 + if_len, evt.len(), "one If makes up the method");
        let body = &evt[1 + if_used..];
        assert_eq!(&body[..4], b"\x93\x68\x0a\x09", "LEqual (Arg0, 9)");
        let body = &body[4..];
        //     Store (GDAT, Local0)
        assert_eq!(&body[..6], b"\x70GDAT\x60");
        //     If (And (Local0, GED_EVENT_POWER_BUTTON, Zero)) { Notify (\_SB_.PWRB, 0x80) }
        let inner = &body[6..];
        assert_eq!(inner[0], 0xa0, "IfOp");
        let (inner_len, inner_used) = pkg_length(&inner[1..]);
        assert_eq!(1 + inner_len, inner.len());
        let mut expected = vec![0x7b, 0x60];
        GED_EVENT_POWER_BUTTON.to_aml_bytes(&mut expected);
        expected.push(0x00);
        expected.extend_from_slice(b"\x86\\\x2e_SB_PWRB\x0a\x80");
        assert_eq!(&inner[1 + inner_used..], &expected[..]);

        let pwrb = device_body(aml, b"PWRB");
        assert_eq!(name_integer(pwrb, b"_HID"), eisa_id("PNP0C0C"));
        assert_eq!(eisa_id("PNP0C0C"), 0x0c0c_d041);
        assert_eq!(name_integer(pwrb, b"_UID"), 0);

        // Both are in \_SB_, after COM1.
        let (scope_len, scope_used) = pkg_length(&aml[1..]);
        let scope = &aml[1 + scope_used..1 + scope_len];
        let com1_at = position(scope, b"COM1").unwrap();
        let ged_at = position(scope, b"GED_").unwrap();
        let pwrb_at = position(scope, b"PWRB\x08").unwrap();
        assert!(com1_at < ged_at && ged_at < pwrb_at);
    }
    assert_eq!(GED_EVENT_POWER_BUTTON, 1);
    assert_eq!(GED_PORT_COUNT, 1);
}

#[test]
fn dsdt_s5_package_starts_with_s5_sleep_type() {
    let (_mem, t) = create(&config(1, None));
    let aml = &t.dsdt[36..];
    let at = position(aml, b"\x08_S5_").expect("Name (_S5_, ..)") + 5;
    assert_eq!(aml[at], 0x12, "PackageOp");
    let (_, used) = pkg_length(&aml[at + 1..]);
    let elements = &aml[at + 1 + used..];
    assert_eq!(elements[0], 4, "four elements");
    let (first, n) = integer(&elements[1..]);
    assert_eq!(first, u64::from(S5_SLEEP_TYPE));
    let (second, _) = integer(&elements[1 + n..]);
    assert_eq!(second, u64::from(S5_SLEEP_TYPE));
    assert_eq!(S5_SLEEP_CONTROL_VALUE, (S5_SLEEP_TYPE << 2) | (1 << 5));
}

#[test]
fn dsdt_has_the_pci_host_bridge() {
    let pci = bridge();
    let (_mem, t) = create(&config(1, Some(pci.clone())));
    let aml = &t.dsdt[36..];

    let pci0 = device_body(aml, b"PCI0");
    assert_eq!(name_integer(pci0, b"_HID"), eisa_id("PNP0A08"));
    assert_eq!(name_integer(pci0, b"_CID"), eisa_id("PNP0A03"));
    assert_eq!(name_integer(pci0, b"_SEG"), 0);
    assert_eq!(name_integer(pci0, b"_UID"), 0);
    assert_eq!(name_integer(pci0, b"_BBN"), 0);
    assert_eq!(
        resources(name_buffer(pci0, b"_CRS")),
        vec![
            Resource::Addr {
                kind: 2,
                min: 0,
                max: 255,
                len: 256
            },
            Resource::Io {
                min: 0xcf8,
                max: 0xcf8,
                len: 8
            },
            Resource::Addr {
                kind: 1,
                min: 0,
                max: 0xcf7,
                len: 0xcf8
            },
            Resource::Addr {
                kind: 1,
                min: 0xd00,
                max: 0xffff,
                len: 0xf300
            },
            Resource::Addr {
                kind: 0,
                min: 0xc000_0000,
                max: 0xdfff_ffff,
                len: 0x2000_0000
            },
            Resource::Addr {
                kind: 0,
                min: 0x80_0000_0000,
                max: 0xbf_ffff_ffff,
                len: 0x40_0000_0000
            },
        ]
    );

    let mbrd = device_body(aml, b"MBRD");
    assert_eq!(name_integer(mbrd, b"_HID"), eisa_id("PNP0C02"));
    assert_eq!(
        resources(name_buffer(mbrd, b"_CRS")),
        vec![Resource::Mem32Fixed {
            base: 0xe000_0000,
            len: 0x1000_0000
        }]
    );

    // COM1 is still there.
    device_body(aml, b"COM1");
}

#[test]
fn empty_mmio_windows_are_left_out() {
    let pci = PciHostBridge {
        mmio32_size: 0,
        mmio64_size: 0,
        ..bridge()
    };
    let (_mem, t) = create(&config(1, Some(pci)));
    let crs = resources(name_buffer(device_body(&t.dsdt[36..], b"PCI0"), b"_CRS"));
    assert_eq!(
        crs.len(),
        4,
        "bus range, config ports, two I/O windows: {crs:?}"
    );
    assert!(crs
        .iter()
        .all(|r| !matches!(r, Resource::Addr { kind: 0, .. })));
}

#[test]
fn ecam_above_4g_is_reserved_with_a_qword_descriptor() {
    let pci = PciHostBridge {
        ecam_base: 0x1_0000_0000,
        ..bridge()
    };
    let (_mem, t) = create(&config(1, Some(pci)));
    let crs = resources(name_buffer(device_body(&t.dsdt[36..], b"MBRD"), b"_CRS"));
    assert_eq!(
        crs,
        vec![Resource::Addr {
            kind: 0,
            min: 0x1_0000_0000,
            max: 0x1_0fff_ffff,
            len: 0x1000_0000
        }]
    );
}

// --- errors ---

#[test]
fn out_of_room_is_an_error_and_writes_nothing() {
    let mem = low_memory();
    let err = create_acpi_tables(
        &mem,
        RSDP_ADDR,
        GuestAddress(RSDP_ADDR.0 + 0x100),
        &config(4, None),
    )
    .unwrap_err();
    assert!(matches!(err, Error::OutOfRoom { .. }), "{err}");
    assert!(read(&mem, RSDP_ADDR.0, 0x20000).iter().all(|b| *b == 0));

    // Not even the RSDP fits.
    let err = create_acpi_tables(
        &mem,
        RSDP_ADDR,
        GuestAddress(RSDP_ADDR.0 + 16),
        &config(4, None),
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::OutOfRoom { table: "RSDP", .. }),
        "{err}"
    );

    // The end is below the start.
    let err = create_acpi_tables(&mem, RSDP_ADDR, GuestAddress(0), &config(4, None)).unwrap_err();
    assert!(
        matches!(err, Error::OutOfRoom { table: "RSDP", .. }),
        "{err}"
    );

    // Near the top of the address space.
    let top = GuestAddress(u64::MAX - 15);
    let err = create_acpi_tables(&mem, top, GuestAddress(u64::MAX), &config(4, None)).unwrap_err();
    assert!(matches!(err, Error::OutOfRoom { .. }), "{err}");
}

#[test]
fn exactly_enough_room_is_enough() {
    // Find out how much the tables take, then give them exactly that.
    let (_mem, t) = create(&config(3, Some(bridge())));
    let used_end = t
        .listed
        .iter()
        .map(|(a, b)| a + b.len() as u64)
        .chain([t.xsdt_addr + t.xsdt.len() as u64])
        .max()
        .unwrap();
    let mem = low_memory();
    create_acpi_tables(
        &mem,
        RSDP_ADDR,
        GuestAddress(used_end),
        &config(3, Some(bridge())),
    )
    .expect("fits exactly");
    let err = create_acpi_tables(
        &mem,
        RSDP_ADDR,
        GuestAddress(used_end - 1),
        &config(3, Some(bridge())),
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::OutOfRoom { table: "XSDT", .. }),
        "{err}"
    );
}

#[test]
fn missing_guest_memory_is_an_error_and_writes_nothing() {
    // Guest RAM covers only 4 KiB of the area; the tables start 0x100 bytes before its end, so
    // the RSDP and the DSDT would land in RAM, the later tables past it.
    let mem = GuestMemoryMmap::from_ranges(&[(RSDP_ADDR, 0x1000)]).unwrap();
    let rsdp = GuestAddress(RSDP_ADDR.0 + 0xf00);
    let err = create_acpi_tables(&mem, rsdp, AREA_END, &config(4, None)).unwrap_err();
    assert!(matches!(err, Error::NotGuestMemory { .. }), "{err}");
    assert!(read(&mem, RSDP_ADDR.0, 0x1000).iter().all(|b| *b == 0));

    // Not even the RSDP is in RAM.
    let err =
        create_acpi_tables(&mem, GuestAddress(0x1000), AREA_END, &config(4, None)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotGuestMemory {
                table: "RSDP",
                addr: 0x1000,
                len: 36
            }
        ),
        "{err}"
    );
}

#[test]
fn misaligned_rsdp_is_an_error() {
    let err = create_acpi_tables(
        &low_memory(),
        GuestAddress(0xe0008),
        AREA_END,
        &config(1, None),
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::MisalignedRsdp { addr: 0xe0008 }),
        "{err}"
    );
}

#[test]
fn zero_ports_are_an_error() {
    type BreakConfig = fn(&mut AcpiConfig);
    let cases: [(BreakConfig, &str); 3] = [
        (|c| c.reset_port = 0, "RESET_REG"),
        (|c| c.sleep_control_port = 0, "SLEEP_CONTROL_REG"),
        (|c| c.sleep_status_port = 0, "SLEEP_STATUS_REG"),
    ];
    for (break_it, name) in cases {
        let mut cfg = config(1, None);
        break_it(&mut cfg);
        let err = create_acpi_tables(&low_memory(), RSDP_ADDR, AREA_END, &cfg).unwrap_err();
        assert!(
            matches!(err, Error::ZeroPort { register } if register == name),
            "{err}"
        );
    }
}

#[test]
fn inconsistent_pci_host_bridges_are_errors() {
    let cases = [
        PciHostBridge {
            bus_start: 2,
            bus_end: 1,
            ..bridge()
        },
        PciHostBridge {
            ecam_size: 0x0fff_ffff,
            ..bridge()
        },
        PciHostBridge {
            ecam_base: 0xe008_0000,
            ..bridge()
        },
        PciHostBridge {
            ecam_base: 0x10_0000,
            bus_start: 2,
            bus_end: 3,
            ..bridge()
        },
        PciHostBridge {
            ecam_base: u64::MAX - 0x0fff_ffff - 0xfffff,
            ..bridge()
        },
        PciHostBridge {
            mmio32_base: 0xf000_0000,
            mmio32_size: 0x2000_0000,
            ..bridge()
        },
        PciHostBridge {
            mmio32_base: 0xd000_0000,
            ..bridge()
        },
        PciHostBridge {
            mmio64_base: u64::MAX,
            mmio64_size: 2,
            ..bridge()
        },
        PciHostBridge {
            mmio64_base: 0xe800_0000,
            mmio64_size: 0x1000,
            ..bridge()
        },
    ];
    for pci in cases {
        let mem = low_memory();
        let err = create_acpi_tables(&mem, RSDP_ADDR, AREA_END, &config(1, Some(pci.clone())))
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidPciHostBridge { .. }),
            "{pci:x?}: {err}"
        );
        assert!(read(&mem, RSDP_ADDR.0, 0x1000).iter().all(|b| *b == 0));
    }
}

/// SRAT static resource allocation structures as byte slices, after the 48-byte header.
fn srat_entries(srat: &[u8]) -> Vec<&[u8]> {
    let mut entries = Vec::new();
    let mut off = 48;
    while off < srat.len() {
        let len = srat[off + 1] as usize;
        assert!(len >= 2 && off + len <= srat.len(), "bad SRAT entry");
        entries.push(&srat[off..off + len]);
        off += len;
    }
    entries
}

/// A range of boot RAM.
fn ram(base: u64, size: u64) -> MemoryAffinity {
    MemoryAffinity {
        base,
        size,
        hotpluggable: false,
    }
}

/// A virtio-mem device region.
fn hotplug(base: u64, size: u64) -> MemoryAffinity {
    MemoryAffinity {
        base,
        size,
        hotpluggable: true,
    }
}

/// Four vCPUs on two nodes, 4 GiB of boot RAM split around the 32-bit hole (the low part on
/// node 0, the high part on node 1), and one virtio-mem region per node.
fn two_nodes() -> AcpiConfig {
    AcpiConfig {
        numa: vec![
            NumaNode {
                proximity_domain: 0,
                cpus: vec![0, 1],
                memory: vec![ram(0, 3 << 30), hotplug(6 << 30, 2 << 30)],
            },
            NumaNode {
                proximity_domain: 1,
                cpus: vec![2, 3],
                memory: vec![ram(4 << 30, 1 << 30), hotplug(8 << 30, 4 << 30)],
            },
        ],
        ..config(4, None)
    }
}

#[test]
fn srat_header_is_revision_3_with_the_reserved_fields() {
    let (_mem, t) = create(&config(1, None));
    let srat = t.get(b"SRAT");
    assert_eq!(srat[8], 3, "SRAT revision");
    assert_eq!(
        u32_at(srat, 36),
        1,
        "reserved, 1 for backward compatibility"
    );
    assert_eq!(u64_at(srat, 40), 0, "reserved");
    assert_eq!(srat.len(), 48 + 16 + 40, "header, one vCPU, one RAM range");
    assert_eq!(u32_at(srat, 4) as usize, srat.len(), "length field");
    assert_eq!(sum(srat), 0, "checksum");
}

#[test]
fn srat_of_one_node_has_every_vcpu_and_ram_range() {
    let cfg = AcpiConfig {
        numa: vec![NumaNode {
            proximity_domain: 0,
            cpus: (0..8).collect(),
            memory: vec![ram(0, 3 << 30), ram(4 << 30, 1 << 30)],
        }],
        ..config(8, None)
    };
    let (_mem, t) = create(&cfg);
    let srat = t.get(b"SRAT");
    assert_eq!(srat.len(), 48 + 8 * 16 + 2 * 40);
    let entries = srat_entries(srat);
    assert_eq!(entries.len(), 10);
    for (apic_id, e) in entries[..8].iter().enumerate() {
        assert_eq!(
            *e,
            &[0, 16, 0, apic_id as u8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..]
        );
    }
    for (e, (base, size)) in entries[8..].iter().zip([(0, 3 << 30), (4 << 30, 1 << 30)]) {
        assert_eq!((e[0], e[1]), (1, 40));
        assert_eq!(u32_at(e, 2), 0, "proximity domain");
        assert_eq!(u64_at(e, 8), base);
        assert_eq!(u64_at(e, 16), size);
        assert_eq!(u32_at(e, 28), 1, "ENABLED, not HOT_PLUGGABLE");
    }
    assert!(t.find(b"SLIT").is_none(), "one node: no SLIT");
}

#[test]
fn srat_of_two_nodes_with_a_hotplug_region_each() {
    let (_mem, t) = create(&two_nodes());
    let srat = t.get(b"SRAT");
    assert_eq!(sum(srat), 0, "checksum");
    assert_eq!(u32_at(srat, 4), 48 + 4 * 16 + 4 * 40);
    assert_eq!(srat.len(), 48 + 4 * 16 + 4 * 40);

    #[rustfmt::skip]
    let expected: [&[u8]; 8] = [
        // Processor Local APIC Affinity: type 0, length 16, PXM[7:0], APIC ID,
        // flags (ENABLED), SAPIC EID, PXM[31:8], clock domain.
        &[0, 16, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        &[0, 16, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        &[0, 16, 1, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        &[0, 16, 1, 3, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        // Memory Affinity: type 1, length 40, PXM, reserved (2), base low, base high,
        // length low, length high, reserved (4), flags, reserved (8).
        // Node 0 boot RAM: 0 + 3 GiB, ENABLED.
        &[1, 40, 0, 0, 0, 0, 0, 0,
          0, 0, 0, 0, 0, 0, 0, 0,
          0, 0, 0, 0xc0, 0, 0, 0, 0,
          0, 0, 0, 0, 1, 0, 0, 0,
          0, 0, 0, 0, 0, 0, 0, 0],
        // Node 1 boot RAM: 4 GiB + 1 GiB, ENABLED.
        &[1, 40, 1, 0, 0, 0, 0, 0,
          0, 0, 0, 0, 1, 0, 0, 0,
          0, 0, 0, 0x40, 0, 0, 0, 0,
          0, 0, 0, 0, 1, 0, 0, 0,
          0, 0, 0, 0, 0, 0, 0, 0],
        // Node 0 virtio-mem region: 6 GiB + 2 GiB, ENABLED | HOT_PLUGGABLE.
        &[1, 40, 0, 0, 0, 0, 0, 0,
          0, 0, 0, 0x80, 1, 0, 0, 0,
          0, 0, 0, 0x80, 0, 0, 0, 0,
          0, 0, 0, 0, 3, 0, 0, 0,
          0, 0, 0, 0, 0, 0, 0, 0],
        // Node 1 virtio-mem region: 8 GiB + 4 GiB, ENABLED | HOT_PLUGGABLE.
        &[1, 40, 1, 0, 0, 0, 0, 0,
          0, 0, 0, 0, 2, 0, 0, 0,
          0, 0, 0, 0, 1, 0, 0, 0,
          0, 0, 0, 0, 3, 0, 0, 0,
          0, 0, 0, 0, 0, 0, 0, 0],
    ];
    assert_eq!(srat_entries(srat), expected);
}

#[test]
fn srat_does_not_depend_on_the_order_of_nodes_cpus_and_ranges() {
    let mut shuffled = two_nodes();
    shuffled.numa.reverse();
    for node in &mut shuffled.numa {
        node.cpus.reverse();
        node.memory.reverse();
    }
    let (_mem, a) = create(&two_nodes());
    let (_mem, b) = create(&shuffled);
    assert_eq!(a.get(b"SRAT"), b.get(b"SRAT"));
    assert_eq!(a.get(b"SLIT"), b.get(b"SLIT"));
}

#[test]
fn nodes_with_only_memory_or_only_vcpus_are_accepted() {
    let cfg = AcpiConfig {
        numa: vec![
            NumaNode {
                proximity_domain: 0,
                cpus: vec![0, 1],
                memory: vec![],
            },
            NumaNode {
                proximity_domain: 1,
                cpus: vec![],
                memory: vec![ram(0, 512 << 20), hotplug(4 << 30, 1 << 30)],
            },
        ],
        ..config(2, None)
    };
    let (_mem, t) = create(&cfg);
    let entries = srat_entries(t.get(b"SRAT"));
    assert_eq!(entries.len(), 4);
    assert_eq!((entries[0][2], entries[1][2]), (0, 0), "vCPUs on node 0");
    assert_eq!((u32_at(entries[2], 2), u32_at(entries[3], 2)), (1, 1));
}

#[test]
fn proximity_domains_above_255_use_the_high_bytes() {
    // 300 nodes, vCPU 0 on the last one, 2 MiB of RAM each.
    let numa: Vec<NumaNode> = (0..300u32)
        .map(|pxm| NumaNode {
            proximity_domain: pxm,
            cpus: if pxm == 299 { vec![0] } else { vec![] },
            memory: vec![ram(u64::from(pxm) << 21, 2 << 20)],
        })
        .collect();
    let (_mem, t) = create(&AcpiConfig {
        numa,
        ..config(1, None)
    });
    let entries = srat_entries(t.get(b"SRAT"));
    assert_eq!(entries.len(), 301);
    // PXM 299 = 0x12b: bits 7:0 at offset 2, bits 31:8 at offsets 9..12.
    assert_eq!(
        entries[0],
        &[0, 16, 0x2b, 0, 1, 0, 0, 0, 0, 0x01, 0, 0, 0, 0, 0, 0][..]
    );
    assert_eq!(u32_at(entries[300], 2), 299);
    let slit = t.get(b"SLIT");
    assert_eq!(u64_at(slit, 36), 300);
    assert_eq!(slit.len(), 44 + 300 * 300);
}

#[test]
fn slit_is_written_for_two_nodes_with_default_distances() {
    let (_mem, t) = create(&two_nodes());
    assert_eq!(
        t.signatures(),
        vec![&b"FACP"[..], &b"APIC"[..], &b"SRAT"[..], &b"SLIT"[..]]
    );
    let slit = t.get(b"SLIT");
    assert_eq!(slit[8], 1, "SLIT revision");
    assert_eq!(u32_at(slit, 4), 48);
    assert_eq!(slit.len(), 48);
    assert_eq!(sum(slit), 0, "checksum");
    assert_eq!(u64_at(slit, 36), 2, "localities");
    assert_eq!(&slit[44..], &[10, 20, 20, 10]);
}

#[test]
fn slit_keeps_a_given_matrix_even_when_asymmetric() {
    let mut cfg = two_nodes();
    cfg.numa.push(NumaNode {
        proximity_domain: 2,
        cpus: vec![],
        memory: vec![hotplug(16 << 30, 1 << 30)],
    });
    cfg.numa_distances = vec![vec![10, 15, 30], vec![25, 10, 11], vec![31, 254, 10]];
    let (_mem, t) = create(&cfg);
    let slit = t.get(b"SLIT");
    assert_eq!(slit.len(), 44 + 9);
    assert_eq!(u64_at(slit, 36), 3);
    assert_eq!(&slit[44..], &[10, 15, 30, 25, 10, 11, 31, 254, 10]);
}

#[test]
fn a_one_node_matrix_is_checked_but_writes_no_slit() {
    let cfg = AcpiConfig {
        numa_distances: vec![vec![10]],
        ..config(2, None)
    };
    let (_mem, t) = create(&cfg);
    assert!(t.find(b"SLIT").is_none());
}

#[test]
fn bad_distance_matrices_are_rejected() {
    let cases: [(usize, Vec<Vec<u8>>); 11] = [
        (2, vec![vec![10, 20]]),                             // too few rows
        (2, vec![vec![10, 20], vec![20, 10], vec![20, 20]]), // too many rows
        (2, vec![vec![10, 20], vec![20]]),                   // short row
        (2, vec![vec![10, 20, 20], vec![20, 10, 20]]),       // long rows
        (2, vec![vec![11, 20], vec![20, 10]]),               // diagonal not 10
        (2, vec![vec![10, 20], vec![20, 0]]),                // diagonal not 10
        (2, vec![vec![10, 10], vec![20, 10]]),               // 10 between two nodes
        (2, vec![vec![10, 20], vec![9, 10]]),                // reserved value
        (2, vec![vec![10, 0], vec![20, 10]]),                // reserved value
        (2, vec![vec![10, 255], vec![255, 10]]),             // "unreachable"
        (1, vec![vec![20]]),                                 // one node, diagonal not 10
    ];
    for (nodes, distances) in cases {
        let mut cfg = two_nodes();
        cfg.numa.truncate(nodes);
        if nodes == 1 {
            cfg.numa[0].cpus = (0..4).collect();
        }
        cfg.numa_distances = distances.clone();
        let mem = low_memory();
        let err = create_acpi_tables(&mem, RSDP_ADDR, AREA_END, &cfg).unwrap_err();
        assert!(
            matches!(err, Error::InvalidNumaDistances { .. }),
            "{distances:?}: {err}"
        );
        assert!(read(&mem, RSDP_ADDR.0, 0x1000).iter().all(|b| *b == 0));
    }
}

#[test]
fn bad_numa_nodes_are_rejected() {
    type BreakConfig = fn(&mut AcpiConfig);
    let cases: [(BreakConfig, &str); 11] = [
        (|c| c.numa.clear(), "no node"),
        (|c| c.numa[1].proximity_domain = 2, "proximity domains"),
        (|c| c.numa[1].proximity_domain = 0, "proximity domains"),
        (|c| c.numa[1].cpus.push(1), "listed twice"),
        (|c| c.numa[0].cpus.push(0), "listed twice"),
        (
            |c| c.numa[0].cpus.retain(|&id| id != 0),
            "APIC ID 0 is in no",
        ),
        (
            |c| c.numa[1].cpus.retain(|&id| id != 3),
            "APIC ID 3 is in no",
        ),
        (|c| c.numa[1].cpus.push(4), "APIC IDs are 0..4"),
        (|c| c.numa[0].memory.push(ram(1 << 40, 0)), "empty"),
        (|c| c.numa[0].memory.push(ram(u64::MAX, 2)), "wraps"),
        // Node 1's region would overlap node 0's (6 GiB + 2 GiB).
        (|c| c.numa[1].memory[1].base = 7 << 30, "overlaps"),
    ];
    for (break_it, what) in cases {
        let mut cfg = two_nodes();
        break_it(&mut cfg);
        let mem = low_memory();
        let err = create_acpi_tables(&mem, RSDP_ADDR, AREA_END, &cfg).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidNuma { reason } if reason.contains(what)),
            "expected '{what}', got: {err}"
        );
        assert!(read(&mem, RSDP_ADDR.0, 0x1000).iter().all(|b| *b == 0));
    }
}

/// Writes the tables to `$ACPI_DUMP_DIR`, one `.dat` file per table, for checking them with
/// ACPICA by hand: `pci-*.dat` for a machine with a PCI host bridge, `nopci-*.dat` without,
/// `numa-*.dat` for two NUMA nodes with a virtio-mem region each (the SRAT and SLIT).
///
/// ```text
/// ACPI_DUMP_DIR=/tmp/acpi cargo test -p acpi -- --ignored dump_tables
/// cd /tmp/acpi && iasl -d *.dat && grep -n 'COM1\|_S5_\|PCI0\|GED_\|PWRB' pci-dsdt.dsl
/// acpiexec -b 'evaluate \_S5; evaluate \_SB.PCI0._CRS; evaluate \_SB.GED._CRS' pci-dsdt.dat
/// iasl -d numa-srat.dat && iasl -d numa-slit.dat    # one table per run
/// ```
///
/// (iasl cannot disassemble the RSDP on its own; the unit tests check it.)
#[test]
#[ignore = "writes files; run by hand with ACPI_DUMP_DIR set"]
fn dump_tables() {
    let dir = std::env::var("ACPI_DUMP_DIR").expect("set ACPI_DUMP_DIR");
    let configs = [
        ("pci", config(4, Some(bridge()))),
        ("nopci", config(4, None)),
        ("numa", two_nodes()),
    ];
    for (prefix, cfg) in configs {
        let (_mem, t) = create(&cfg);
        let mut all = vec![
            ("rsdp".to_string(), t.rsdp.clone()),
            ("xsdt".to_string(), t.xsdt.clone()),
            ("dsdt".to_string(), t.dsdt.clone()),
        ];
        for (_, table) in &t.listed {
            let name = match &table[0..4] {
                b"APIC" => "madt".to_string(),
                b"FACP" => "fadt".to_string(),
                sig => String::from_utf8_lossy(sig).to_lowercase(),
            };
            all.push((name, table.clone()));
        }
        for (name, bytes) in all {
            std::fs::write(format!("{dir}/{prefix}-{name}.dat"), bytes).expect("write table");
        }
    }
}

#[test]
fn intx_routes_become_link_devices_and_a_prt() {
    let pci = PciHostBridge {
        intx_routes: vec![
            PciIntxRoute { device: 1, gsi: 16 },
            PciIntxRoute { device: 3, gsi: 17 },
        ],
        ..bridge()
    };
    let (_mem, t) = create(&config(1, Some(pci)));
    let aml = &t.dsdt[36..];
    for (link, gsi) in [(b"LNK0", 16), (b"LNK1", 17)] {
        let body = device_body(aml, link);
        assert_eq!(name_integer(body, b"_HID"), eisa_id("PNP0C0F"));
        assert_eq!(name_integer(body, b"_STA"), 0x0b);
        // Edge triggered (bit 1), active high (bit 2 clear), consumer (bit 0).
        let irq = vec![Resource::Irq { flags: 0x03, gsi }];
        assert_eq!(resources(name_buffer(body, b"_PRS")), irq);
        assert_eq!(resources(name_buffer(body, b"_CRS")), irq);
        assert!(position(body, b"_SRS").is_some() && position(body, b"_DIS").is_some());
    }
    let pci0 = device_body(aml, b"PCI0");
    let prt = position(pci0, b"_PRT").expect("PCI0 has a _PRT");
    let prt = &pci0[prt..];
    // Device 1's entry: DWord 0x0001FFFF, pin 0, \_SB_.LNK0, index 0.
    assert!(position(prt, &[0x0c, 0xff, 0xff, 0x01, 0x00]).is_some());
    assert!(position(prt, &[0x0c, 0xff, 0xff, 0x03, 0x00]).is_some());
    assert!(position(prt, b"LNK0").is_some() && position(prt, b"LNK1").is_some());

    // Without routes: no _PRT and no links.
    let (_mem, t) = create(&config(1, Some(bridge())));
    assert!(position(&t.dsdt, b"_PRT").is_none());
    assert!(position(&t.dsdt, b"LNK0").is_none());
}

#[test]
fn bad_intx_routes_are_errors() {
    let route = |device, gsi| PciIntxRoute { device, gsi };
    for routes in [
        vec![route(32, 16)],
        vec![route(1, 16), route(1, 17)],
        vec![route(1, 16), route(2, 16)],
        (0..9).map(|d| route(d, 16 + u32::from(d))).collect(),
    ] {
        let pci = PciHostBridge {
            intx_routes: routes.clone(),
            ..bridge()
        };
        let err = create_acpi_tables(&low_memory(), RSDP_ADDR, AREA_END, &config(1, Some(pci)))
            .expect_err("refused");
        assert!(
            matches!(err, Error::InvalidPciHostBridge { .. }),
            "{routes:?}: {err}"
        );
    }
}
