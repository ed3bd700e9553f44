// SPDX-License-Identifier: Apache-2.0

//! MCFG ("PCI Express memory mapped configuration space base address description table").
//!
//! The MCFG tells the guest where the ECAM window of each PCI segment is, so it can reach the
//! 4 KiB extended config space of every function by plain memory accesses instead of the
//! 0xCF8/0xCFC port pair. We have one segment (0) with one host bridge.

use acpi_tables::mcfg::MCFG;

use crate::{aml_bytes, PciHostBridge, OEM_ID, OEM_REVISION, OEM_TABLE_ID};

/// The address an MCFG entry wants: where bus 0's config space would be, even when the
/// bridge's first bus is not 0 (the guest adds `bus << 20` to it).
pub(crate) fn ecam_bus0_base(pci: &PciHostBridge) -> u64 {
    // `check_pci_host_bridge` rejects bridges where this would underflow.
    pci.ecam_base.saturating_sub(u64::from(pci.bus_start) << 20)
}

/// Builds the MCFG for the (already checked) host bridge `pci` on segment 0.
pub(crate) fn build(pci: &PciHostBridge) -> Vec<u8> {
    let mut mcfg = MCFG::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    mcfg.add_ecam(ecam_bus0_base(pci), 0, pci.bus_start, pci.bus_end);
    aml_bytes(&mcfg)
}
