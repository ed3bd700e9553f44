// SPDX-License-Identifier: Apache-2.0

//! MADT (signature `APIC`, "multiple APIC description table").
//!
//! The MADT is how the guest finds its CPUs and interrupt controllers: the local APIC base
//! address, one Processor Local APIC entry per vCPU (this is the list Linux brings CPUs up
//! from), the I/O APIC with its GSI base, the ISA IRQ0 -> GSI2 override every PC has (the PIT
//! timer is wired to I/O APIC pin 2), and the LINT1 NMI wiring of the local APICs.
//!
//! `acpi_tables` 0.2 has the Local APIC and I/O APIC structures but neither the x86 Interrupt
//! Source Override / Local APIC NMI structures nor a way to set the MADT flags, so the table is
//! assembled on its generic `Sdt` builder and those two structures are encoded here.

use acpi_tables::madt::{EnabledStatus, IoApic, ProcessorLocalApic};
use acpi_tables::sdt::Sdt;

use crate::{aml_bytes, AcpiConfig, Error, OEM_ID, OEM_REVISION, OEM_TABLE_ID};

/// MADT revision 5 (ACPI 6.3 and later).
const MADT_REVISION: u8 = 5;
/// Standard header (36) + local interrupt controller address (4) + flags (4).
const MADT_HEADER_LEN: u32 = 44;
/// Offset of the local interrupt controller address.
const LAPIC_ADDR_OFFSET: usize = 36;
/// Offset of the MADT flags.
const FLAGS_OFFSET: usize = 40;
/// MADT flag: the system also has dual 8259 PICs (which the OS must mask to use APIC mode).
pub(crate) const PCAT_COMPAT: u32 = 1;

/// Interrupt Source Override structure type.
const TYPE_INTERRUPT_SOURCE_OVERRIDE: u8 = 2;
/// Local APIC NMI structure type.
const TYPE_LOCAL_APIC_NMI: u8 = 4;

/// MPS INTI flags: polarity and trigger mode "conform to the bus" (for ISA: high, edge).
const MPS_INTI_CONFORMS: u16 = 0;
/// MPS INTI flags: active high (bits 1:0 = 01), edge triggered (bits 3:2 = 01).
const MPS_INTI_ACTIVE_HIGH_EDGE: u16 = 0b0101;

/// ACPI processor UID meaning "all processors" in a Local APIC NMI structure.
const ALL_PROCESSORS: u8 = 0xff;

/// Interrupt Source Override: ISA `source` IRQ is delivered on `gsi`.
fn interrupt_source_override(source: u8, gsi: u32, flags: u16) -> Vec<u8> {
    let mut entry = vec![
        TYPE_INTERRUPT_SOURCE_OVERRIDE,
        10,
        0, /* ISA bus */
        source,
    ];
    entry.extend_from_slice(&gsi.to_le_bytes());
    entry.extend_from_slice(&flags.to_le_bytes());
    entry
}

/// Local APIC NMI: the NMI arrives on local APIC input `lint` of processor `uid`.
fn local_apic_nmi(uid: u8, flags: u16, lint: u8) -> Vec<u8> {
    let mut entry = vec![TYPE_LOCAL_APIC_NMI, 6, uid];
    entry.extend_from_slice(&flags.to_le_bytes());
    entry.push(lint);
    entry
}

/// Builds the MADT for `cfg`.
pub(crate) fn build(cfg: &AcpiConfig) -> Result<Vec<u8>, Error> {
    // xAPIC entries carry 8-bit UIDs and APIC IDs, and 0xFF means "all processors" (or
    // broadcast), so IDs run up to 254: at most 255 vCPUs.
    let num_vcpus = match u8::try_from(cfg.num_vcpus) {
        Ok(n) if n > 0 => n,
        _ => {
            return Err(Error::InvalidVcpuCount {
                count: cfg.num_vcpus,
            })
        }
    };

    let mut madt = Sdt::new(
        *b"APIC",
        MADT_HEADER_LEN,
        MADT_REVISION,
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    madt.write_u32(LAPIC_ADDR_OFFSET, cfg.lapic_addr);
    madt.write_u32(FLAGS_OFFSET, PCAT_COMPAT);

    for id in 0..num_vcpus {
        // ACPI processor UID and local APIC ID are both the vCPU index.
        let lapic = ProcessorLocalApic::new(id, id, EnabledStatus::Enabled);
        madt.append_slice(&aml_bytes(&lapic));
    }
    let ioapic = IoApic::new(cfg.ioapic_id, cfg.ioapic_addr, cfg.ioapic_gsi_base);
    madt.append_slice(&aml_bytes(&ioapic));
    // The PIT (ISA IRQ 0) is wired to I/O APIC input 2; every other ISA IRQ is identity-mapped.
    madt.append_slice(&interrupt_source_override(0, 2, MPS_INTI_CONFORMS));
    madt.append_slice(&local_apic_nmi(
        ALL_PROCESSORS,
        MPS_INTI_ACTIVE_HIGH_EDGE,
        1,
    ));

    Ok(madt.as_slice().to_vec())
}
