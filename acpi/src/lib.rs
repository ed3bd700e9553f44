// SPDX-License-Identifier: Apache-2.0

//! ACPI tables for Accordion guests.
//!
//! Accordion boots Linux directly, without firmware, so the VMM itself has to hand the guest
//! the ACPI tables a BIOS would normally build. The platform is "hardware-reduced" ACPI: there
//! is no PM1 block, no GPE block, no SCI and no FACS; power-off and reset go through the FADT's
//! SLEEP_CONTROL_REG and RESET_REG, which the VMM backs with small I/O port devices.
//!
//! [`create_acpi_tables`] writes this set into guest memory:
//!
//! | table | file | what the guest learns from it |
//! |---|---|---|
//! | RSDP | this file | where the XSDT is (found by scanning 0xE0000..0xFFFFF) |
//! | XSDT | this file | where every other table is, except the DSDT |
//! | FADT (`FACP`) | `fadt.rs` | hardware-reduced platform, reset and sleep registers, where the DSDT is |
//! | DSDT | `dsdt.rs` | AML namespace: COM1, the PCI host bridge, the GED and power button, the `\_S5_` power-off value |
//! | MADT (`APIC`) | `madt.rs` | local APICs (one per vCPU), the I/O APIC, ISA IRQ overrides, LINT1 NMI |
//! | MCFG | `mcfg.rs` | where the PCI Express ECAM config space is (only with a PCI host bridge) |
//! | SRAT | `srat.rs` | which NUMA node (proximity domain) each vCPU and each RAM range belongs to, and where memory can be hotplugged (always present) |
//! | SLIT | `slit.rs` | the distance between every two NUMA nodes (only with more than one node) |
//!
//! Tables are built into byte vectors first, placed one after another behind the RSDP, and only
//! written to guest memory once all of them are known to fit, so a failed call leaves guest
//! memory untouched. To add a table, write a `build` function returning its bytes in a new
//! module and add one `listed.push(area.add(..))` line to [`create_acpi_tables`].

mod dsdt;
mod fadt;
mod madt;
mod mcfg;
mod slit;
mod srat;

#[cfg(test)]
mod tests;

use acpi_tables::rsdp::Rsdp;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryError, Permissions};

/// OEM ID written in every table header and in the RSDP.
pub(crate) const OEM_ID: [u8; 6] = *b"ACCORD";
/// OEM table ID written in every table header. The FADT's must match the XSDT's, so all tables
/// share one.
pub(crate) const OEM_TABLE_ID: [u8; 8] = *b"ACCORDIO";
/// OEM revision written in every table header.
pub(crate) const OEM_REVISION: u32 = 1;

/// Tables start on this boundary in guest memory (the RSDP's 16-byte alignment is checked
/// separately).
const TABLE_ALIGNMENT: u64 = 8;

/// The `SLP_TYP` value of the DSDT's `\_S5_` (soft-off) package.
///
/// On a hardware-reduced platform the guest powers off by writing
/// `(S5_SLEEP_TYPE << 2) | (1 << 5)` (SLP_TYP in bits 4:2, SLP_EN in bit 5) to the FADT's
/// SLEEP_CONTROL_REG, i.e. [`S5_SLEEP_CONTROL_VALUE`] to [`AcpiConfig::sleep_control_port`].
/// SLP_TYP is a 3-bit field, so this must stay below 8.
pub const S5_SLEEP_TYPE: u8 = 5;

/// The byte Linux writes to the sleep control port to power off: SLP_TYP = [`S5_SLEEP_TYPE`]
/// in bits 4:2 and SLP_EN (bit 5). Equal to `(S5_SLEEP_TYPE << 2) | (1 << 5)` = 0x34.
pub const S5_SLEEP_CONTROL_VALUE: u8 = (S5_SLEEP_TYPE << 2) | (1 << 5);

const _: () = assert!(S5_SLEEP_TYPE < 8, "SLP_TYP is a 3-bit field");

/// Event bit "the power button was pressed" in the Generic Event Device's register.
///
/// The DSDT's `\_SB_.GED_` has a one-byte event register at [`AcpiConfig::ged_port`]. The VMM's
/// device behind it sets this bit and signals [`AcpiConfig::ged_irq`] (edge, active high); the
/// guest's `_EVT` method then reads the register, which returns every pending event bit and
/// clears them all, and for this bit notifies `\_SB_.PWRB` (PNP0C0C) with 0x80, which Linux
/// reports as a KEY_POWER press. Writes to the register are ignored.
pub const GED_EVENT_POWER_BUTTON: u8 = 1;

/// Number of I/O ports the Generic Event Device's register takes, from [`AcpiConfig::ged_port`].
pub const GED_PORT_COUNT: u64 = 1;

/// One PCI host bridge (PCI segment 0) as the guest should see it.
///
/// It becomes the DSDT device `\_SB_.PCI0` (PNP0A08, compatible with PNP0A03), an MCFG entry
/// for its ECAM window, and a PNP0C02 "motherboard resources" device reserving that window
/// (Linux only trusts an MCFG region that firmware also reserves).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciHostBridge {
    /// Guest physical address of the ECAM window, i.e. of the config space of bus `bus_start`.
    /// (The MCFG table wants the address bus 0 would have; that is derived from this.)
    pub ecam_base: u64,
    /// Size in bytes of the ECAM window; at least `(bus_end - bus_start + 1) * 1 MiB`.
    pub ecam_size: u64,
    /// First bus number decoded by the host bridge (also the DSDT's `_BBN`); normally 0.
    pub bus_start: u8,
    /// Last bus number decoded by the host bridge.
    pub bus_end: u8,
    /// Start of the 32-bit MMIO window for BARs (below 4 GiB).
    pub mmio32_base: u32,
    /// Size of the 32-bit MMIO window; 0 leaves the window out.
    pub mmio32_size: u32,
    /// Start of the 64-bit MMIO window for BARs.
    pub mmio64_base: u64,
    /// Size of the 64-bit MMIO window; 0 leaves the window out.
    pub mmio64_size: u64,
    /// The INTA# line of each function that offers INTx (`_PRT`); functions not listed
    /// interrupt through MSI-X only.
    pub intx_routes: Vec<PciIntxRoute>,
}

/// Where one PCI function's INTA# goes: an interrupt link device (`\_SB_.LNKn`, `n` its
/// index in [`PciHostBridge::intx_routes`]) whose one GSI is edge-triggered and active high.
/// Edge, not PCI's level: the VMM pulses the line once per event (an irqfd), which KVM's
/// IOAPIC latches even while the previous interrupt is in service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciIntxRoute {
    /// The function's device number on bus `bus_start` (function 0).
    pub device: u8,
    /// The GSI (an IOAPIC pin) the line is wired to.
    pub gsi: u32,
}

/// At most this many INTx routes (`LNK0`..`LNK7`): the IOAPIC has eight pins above the ISA
/// interrupts.
pub const MAX_INTX_ROUTES: usize = 8;

/// The SLIT distance from a NUMA node to itself. ACPI normalizes it to 10, and Linux ignores a
/// SLIT whose diagonal holds anything else.
pub const LOCAL_DISTANCE: u8 = 10;

/// The SLIT distance between two different NUMA nodes when [`AcpiConfig::numa_distances`] is
/// empty (the value Linux assumes without a SLIT, and QEMU's default).
pub const DEFAULT_REMOTE_DISTANCE: u8 = 20;

/// The smallest distance allowed between two different NUMA nodes. ACPI only reserves 0..=9,
/// but Linux throws away a SLIT with an off-diagonal entry of 10 or less (`slit_valid()` in
/// `drivers/acpi/numa/srat.c`), so 10 is refused here.
pub const MIN_REMOTE_DISTANCE: u8 = LOCAL_DISTANCE + 1;

/// The largest distance allowed between two different NUMA nodes; 255 means "unreachable".
pub const MAX_REMOTE_DISTANCE: u8 = 254;

/// One guest physical memory range of a NUMA node: an SRAT Memory Affinity structure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryAffinity {
    /// Guest physical address of the first byte.
    pub base: u64,
    /// Size in bytes; not 0.
    pub size: u64,
    /// `false` for boot RAM (listed in the e820 map too). `true` for a virtio-mem device region:
    /// the entry is then flagged ENABLED | HOT_PLUGGABLE, which is how Linux learns, at boot,
    /// that memory may appear there later (it sizes `max_possible_pfn` from it). Such a region
    /// must stay out of the e820 map.
    pub hotpluggable: bool,
}

/// One NUMA node (ACPI proximity domain): its vCPUs and its memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NumaNode {
    /// The proximity domain number, as the guest sees it in the SRAT, the SLIT and in a
    /// virtio-mem device's `node_id` (with `VIRTIO_MEM_F_ACPI_PXM`). The nodes of an
    /// [`AcpiConfig`] must number 0..n, each once (the SLIT indexes its matrix by them).
    pub proximity_domain: u32,
    /// Local APIC IDs of the node's vCPUs (the vCPU index: the MADT gives vCPU `i` APIC ID
    /// `i`). Each of `0..num_vcpus` must be in exactly one node. May be empty (a node with
    /// memory only).
    pub cpus: Vec<u32>,
    /// The node's memory: boot RAM ranges and hotpluggable device regions. May be empty (a node
    /// with vCPUs only). No two ranges of the whole configuration may overlap.
    pub memory: Vec<MemoryAffinity>,
}

/// What the ACPI tables describe. The VMM decides all of it; this crate only encodes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcpiConfig {
    /// Number of vCPUs; their local APIC IDs and ACPI processor UIDs are `0..num_vcpus`.
    /// Must be 1..=255 (the MADT uses xAPIC entries with 8-bit IDs, and 0xFF is reserved).
    pub num_vcpus: u32,
    /// I/O APIC ID (MADT).
    pub ioapic_id: u8,
    /// I/O APIC MMIO base address (MADT), usually 0xFEC0_0000.
    pub ioapic_addr: u32,
    /// First GSI routed through the I/O APIC (MADT), usually 0.
    pub ioapic_gsi_base: u32,
    /// Local APIC MMIO base address (MADT), usually 0xFEE0_0000.
    pub lapic_addr: u32,
    /// I/O port base of the COM1 16550 UART (DSDT), usually 0x3F8; it decodes 8 ports.
    pub com1_port: u16,
    /// COM1's interrupt (DSDT), as a GSI = ISA IRQ (identity-mapped except IRQ0), usually 4.
    pub com1_irq: u8,
    /// I/O port of the 8-bit hardware-reduced SLEEP_CONTROL_REG (FADT). Must not be 0.
    pub sleep_control_port: u16,
    /// I/O port of the 8-bit hardware-reduced SLEEP_STATUS_REG (FADT). Must not be 0.
    pub sleep_status_port: u16,
    /// I/O port of the 8-bit FADT RESET_REG. Must not be 0.
    pub reset_port: u16,
    /// Value the guest writes to `reset_port` to reset the machine (FADT RESET_VALUE).
    pub reset_value: u8,
    /// I/O port of the Generic Event Device's one-byte event register (DSDT `\_SB_.GED_`);
    /// reading it returns and clears the pending events (see [`GED_EVENT_POWER_BUTTON`]).
    pub ged_port: u16,
    /// GSI the VMM signals (edge-triggered, active high) when it sets an event bit in the
    /// Generic Event Device's register; the guest then runs `\_SB_.GED_._EVT`.
    pub ged_irq: u32,
    /// The PCI host bridge, or `None` for a machine without PCI (no PCI0, no MCFG).
    pub pci: Option<PciHostBridge>,
    /// The NUMA nodes (SRAT). Never empty: the SRAT is always present, because it is where the
    /// guest learns about hotpluggable memory. A VM configured without NUMA passes one node 0
    /// with every vCPU, the boot RAM ranges and every virtio-mem region.
    pub numa: Vec<NumaNode>,
    /// The SLIT distance matrix, indexed by proximity domain: `numa_distances[a][b]` is the
    /// distance from domain `a` to domain `b` (it need not be symmetric). Empty means
    /// [`LOCAL_DISTANCE`] on the diagonal and [`DEFAULT_REMOTE_DISTANCE`] everywhere else.
    /// Otherwise it must be square with one row per node, [`LOCAL_DISTANCE`] on the diagonal,
    /// and [`MIN_REMOTE_DISTANCE`]..=[`MAX_REMOTE_DISTANCE`] elsewhere. Checked even for one
    /// node, but the SLIT is only written when there are two or more.
    pub numa_distances: Vec<Vec<u8>>,
}

/// Why the ACPI tables could not be created.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The RSDP must sit on a 16-byte boundary for the guest's scan of 0xE0000..0xFFFFF to find it.
    #[error("RSDP address {addr:#x} is not 16-byte aligned")]
    MisalignedRsdp {
        /// The requested RSDP address.
        addr: u64,
    },
    /// A table does not fit between its place and the end of the ACPI area.
    #[error(
        "out of room for the {table} table: it needs {len} bytes at {addr:#x}, \
         but the ACPI area ends at {end:#x}"
    )]
    OutOfRoom {
        /// Signature of the table that did not fit.
        table: &'static str,
        /// Where it would have been placed.
        addr: u64,
        /// Its length in bytes.
        len: usize,
        /// The end of the ACPI area (exclusive).
        end: u64,
    },
    /// Part of a table's range is not guest memory (checked before anything is written).
    #[error("the {table} table ({len} bytes at {addr:#x}) does not lie in guest memory")]
    NotGuestMemory {
        /// Signature of the table.
        table: &'static str,
        /// Where it would have been written.
        addr: u64,
        /// Its length in bytes.
        len: usize,
    },
    /// Guest memory refused the write of a table.
    #[error("failed to write the {table} table ({len} bytes) to guest memory at {addr:#x}")]
    GuestMemoryWrite {
        /// Signature of the table being written.
        table: &'static str,
        /// Where it was being written.
        addr: u64,
        /// Its length in bytes.
        len: usize,
        /// The guest memory error.
        #[source]
        source: GuestMemoryError,
    },
    /// The vCPU count cannot be described in the MADT.
    #[error("MADT: cannot describe {count} vCPUs with xAPIC entries (supported: 1..=255)")]
    InvalidVcpuCount {
        /// The requested vCPU count.
        count: u32,
    },
    /// A FADT register was given I/O port 0, which the guest would read as "not implemented".
    #[error("FADT: the {register} port is 0, which the guest reads as 'register not present'")]
    ZeroPort {
        /// Name of the FADT register.
        register: &'static str,
    },
    /// The PCI host bridge description is inconsistent.
    #[error("PCI host bridge (DSDT PCI0 / MCFG): {reason}")]
    InvalidPciHostBridge {
        /// What is wrong with it.
        reason: String,
    },
    /// The NUMA nodes cannot be described in the SRAT as they are.
    #[error("NUMA nodes (SRAT): {reason}")]
    InvalidNuma {
        /// What is wrong with them.
        reason: String,
    },
    /// The NUMA distance matrix cannot be written to the SLIT as it is.
    #[error("NUMA distances (SLIT): {reason}")]
    InvalidNumaDistances {
        /// What is wrong with it.
        reason: String,
    },
}

/// Writes the RSDP at `rsdp_addr` and the other tables after it, all below `end`, into `mem`;
/// returns the RSDP address (for `boot_params.acpi_rsdp_addr` or the PVH start info).
///
/// `rsdp_addr` must be 16-byte aligned. Nothing is written unless every table fits below `end`
/// and lies in guest memory. The VMM
/// normally passes 0xE0000 and 0x100000; that range must be guest RAM but not "usable" in the
/// e820 map.
pub fn create_acpi_tables<M: GuestMemory>(
    mem: &M,
    rsdp_addr: GuestAddress,
    end: GuestAddress,
    cfg: &AcpiConfig,
) -> Result<GuestAddress, Error> {
    if !rsdp_addr.0.is_multiple_of(16) {
        return Err(Error::MisalignedRsdp { addr: rsdp_addr.0 });
    }
    if let Some(pci) = &cfg.pci {
        check_pci_host_bridge(pci)?;
    }

    let mut area = TableArea::new(rsdp_addr, end);
    // The RSDP goes first, at the fixed address; its content depends on where the XSDT lands.
    let rsdp_at = area.reserve("RSDP", Rsdp::len())?;

    // The DSDT is not listed in the XSDT; the FADT points at it.
    let dsdt_at = area.add("DSDT", dsdt::build(cfg))?;

    // Every table below is listed in the XSDT, in this order.
    let mut listed = Vec::new();
    listed.push(area.add("FACP", fadt::build(cfg, dsdt_at)?)?);
    listed.push(area.add("APIC", madt::build(cfg)?)?);
    listed.push(area.add("SRAT", srat::build(cfg)?)?);
    if let Some(slit) = slit::build(cfg)? {
        listed.push(area.add("SLIT", slit)?);
    }
    if let Some(pci) = &cfg.pci {
        listed.push(area.add("MCFG", mcfg::build(pci))?);
    }

    let xsdt_at = area.add("XSDT", build_xsdt(&listed))?;
    area.fill(rsdp_at, "RSDP", aml_bytes(&Rsdp::new(OEM_ID, xsdt_at.0)));

    area.write_to(mem)?;
    Ok(rsdp_at)
}

/// The XSDT ("extended system description table"): the 64-bit list of the addresses of every
/// table but the DSDT and FACS. The guest finds it through the RSDP.
fn build_xsdt(tables: &[GuestAddress]) -> Vec<u8> {
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    for table in tables {
        xsdt.add_entry(table.0);
    }
    aml_bytes(&xsdt)
}

/// Serializes anything `acpi_tables` can serialize.
pub(crate) fn aml_bytes(aml: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    aml.to_aml_bytes(&mut bytes);
    bytes
}

/// Checks a PCI host bridge description for what would make the DSDT or MCFG wrong (and would
/// make `acpi_tables` panic on an overflowing range).
fn check_pci_host_bridge(pci: &PciHostBridge) -> Result<(), Error> {
    let invalid = |reason: String| Err(Error::InvalidPciHostBridge { reason });

    if pci.bus_start > pci.bus_end {
        return invalid(format!(
            "bus range {}..={} is empty",
            pci.bus_start, pci.bus_end
        ));
    }
    let buses = u64::from(pci.bus_end - pci.bus_start) + 1;
    if pci.ecam_size < buses << 20 {
        return invalid(format!(
            "ECAM size {:#x} is too small for {buses} buses ({:#x} needed)",
            pci.ecam_size,
            buses << 20
        ));
    }
    if !pci.ecam_base.is_multiple_of(1 << 20) {
        return invalid(format!(
            "ECAM base {:#x} is not 1 MiB aligned",
            pci.ecam_base
        ));
    }
    if pci.ecam_base < u64::from(pci.bus_start) << 20 {
        return invalid(format!(
            "ECAM base {:#x} is below where bus 0 would start for bus_start {}",
            pci.ecam_base, pci.bus_start
        ));
    }

    if pci.intx_routes.len() > MAX_INTX_ROUTES {
        return invalid(format!(
            "{} INTx routes, at most {MAX_INTX_ROUTES}",
            pci.intx_routes.len()
        ));
    }
    for (i, route) in pci.intx_routes.iter().enumerate() {
        if route.device >= 32 {
            return invalid(format!(
                "INTx route {i}: device {} is not 0..32",
                route.device
            ));
        }
        if pci.intx_routes[..i]
            .iter()
            .any(|r| r.device == route.device || r.gsi == route.gsi)
        {
            return invalid(format!(
                "INTx route {i}: device {} or GSI {} is routed twice",
                route.device, route.gsi
            ));
        }
    }

    let mut ranges = vec![("ECAM", pci.ecam_base, pci.ecam_size)];
    if pci.mmio32_size > 0 {
        ranges.push((
            "32-bit MMIO window",
            pci.mmio32_base.into(),
            pci.mmio32_size.into(),
        ));
        if u64::from(pci.mmio32_base) + u64::from(pci.mmio32_size) > 1 << 32 {
            return invalid(format!(
                "32-bit MMIO window {:#x}+{:#x} crosses 4 GiB",
                pci.mmio32_base, pci.mmio32_size
            ));
        }
    }
    if pci.mmio64_size > 0 {
        ranges.push(("64-bit MMIO window", pci.mmio64_base, pci.mmio64_size));
    }
    for (name, base, size) in &ranges {
        if base.checked_add(*size).is_none() {
            return invalid(format!("{name} {base:#x}+{size:#x} wraps around"));
        }
    }
    for (i, (name_a, base_a, size_a)) in ranges.iter().enumerate() {
        for (name_b, base_b, size_b) in &ranges[i + 1..] {
            if base_a < &(base_b + size_b) && base_b < &(base_a + size_a) {
                return invalid(format!(
                    "{name_a} {base_a:#x}+{size_a:#x} overlaps {name_b} {base_b:#x}+{size_b:#x}"
                ));
            }
        }
    }
    Ok(())
}

/// One table waiting to be written.
struct PlacedTable {
    name: &'static str,
    addr: GuestAddress,
    bytes: Vec<u8>,
}

/// The guest memory range that receives the tables: hands out addresses one table after the
/// other and writes everything at the end, once it is known to fit.
struct TableArea {
    next: u64,
    end: u64,
    tables: Vec<PlacedTable>,
}

impl TableArea {
    fn new(start: GuestAddress, end: GuestAddress) -> Self {
        TableArea {
            next: start.0,
            end: end.0,
            tables: Vec::new(),
        }
    }

    /// Reserves `len` bytes for table `name` and returns their address.
    fn reserve(&mut self, name: &'static str, len: usize) -> Result<GuestAddress, Error> {
        let out_of_room = Error::OutOfRoom {
            table: name,
            addr: self.next,
            len,
            end: self.end,
        };
        let Some(table_end) = self.next.checked_add(len as u64) else {
            return Err(out_of_room);
        };
        if table_end > self.end {
            return Err(out_of_room);
        }
        let addr = GuestAddress(self.next);
        // Aligning may run past `end`; the next reservation then reports it.
        self.next = table_end
            .checked_next_multiple_of(TABLE_ALIGNMENT)
            .unwrap_or(u64::MAX);
        Ok(addr)
    }

    /// Places table `name` with content `bytes` after the previous one; returns its address.
    fn add(&mut self, name: &'static str, bytes: Vec<u8>) -> Result<GuestAddress, Error> {
        let addr = self.reserve(name, bytes.len())?;
        self.fill(addr, name, bytes);
        Ok(addr)
    }

    /// Supplies the content of a table reserved earlier with [`TableArea::reserve`].
    fn fill(&mut self, addr: GuestAddress, name: &'static str, bytes: Vec<u8>) {
        self.tables.push(PlacedTable { name, addr, bytes });
    }

    /// Writes every placed table to guest memory, after checking that all of them land in it.
    fn write_to<M: GuestMemory>(mut self, mem: &M) -> Result<(), Error> {
        // In address order, so that an error names the first table outside guest memory.
        self.tables.sort_by_key(|table| table.addr);
        for table in &self.tables {
            if !mem.check_range(table.addr, table.bytes.len(), Permissions::Write) {
                return Err(Error::NotGuestMemory {
                    table: table.name,
                    addr: table.addr.0,
                    len: table.bytes.len(),
                });
            }
        }
        for table in &self.tables {
            mem.write_slice(&table.bytes, table.addr)
                .map_err(|source| Error::GuestMemoryWrite {
                    table: table.name,
                    addr: table.addr.0,
                    len: table.bytes.len(),
                    source,
                })?;
        }
        Ok(())
    }
}
