// SPDX-License-Identifier: Apache-2.0

//! SRAT ("system resource affinity table").
//!
//! The SRAT assigns vCPUs and memory ranges to NUMA nodes (ACPI proximity domains). Accordion
//! always writes one, even for a VM without NUMA (one node 0 then holds everything), because
//! the SRAT is also where the guest learns where memory may be hotplugged: every virtio-mem
//! region gets a Memory Affinity structure flagged ENABLED | HOT_PLUGGABLE. Linux reads those
//! at boot to size `max_possible_pfn` (and with it swiotlb and other boot-time structures) and
//! to know which node plugged memory belongs to.
//!
//! Layout (ACPI 6.5, section 5.2.16), revision 3:
//!
//! | offset | bytes | field |
//! |---|---|---|
//! | 0 | 36 | standard table header, revision 3 |
//! | 36 | 4 | reserved, must be 1 (for backward compatibility) |
//! | 40 | 8 | reserved, 0 |
//! | 48 | | static resource allocation structures |
//!
//! One Processor Local APIC Affinity structure (type 0, 16 bytes) per vCPU in APIC ID order,
//! then one Memory Affinity structure (type 1, 40 bytes) per memory range in address order.
//!
//! `acpi_tables` 0.2 has an `SRAT` type, but it writes revision 1 (where Linux reads only the
//! low 8 bits of a memory range's proximity domain) and cannot hold Processor Local APIC
//! Affinity structures, so the table is assembled on the generic `Sdt` builder. Its
//! `MemoryAffinity` structure is used as is; type 0 is encoded here.

use acpi_tables::sdt::Sdt;
use acpi_tables::srat::MemoryAffinity as MemoryAffinityStructure;

use crate::{aml_bytes, AcpiConfig, Error, MemoryAffinity, OEM_ID, OEM_REVISION, OEM_TABLE_ID};

/// SRAT revision 3 (ACPI 5.1 and later, still current in 6.5).
const SRAT_REVISION: u8 = 3;
/// Standard header (36) + reserved dword (4) + reserved qword (8).
const SRAT_HEADER_LEN: u32 = 48;
/// Offset of the first reserved field, which must hold 1.
const RESERVED_ONE_OFFSET: usize = 36;

/// Processor Local APIC/SAPIC Affinity structure type.
const TYPE_PROCESSOR_LOCAL_APIC_AFFINITY: u8 = 0;
/// Length of a Processor Local APIC/SAPIC Affinity structure.
const PROCESSOR_LOCAL_APIC_AFFINITY_LEN: u8 = 16;
/// Processor Local APIC Affinity flag: the entry is in use.
const PROCESSOR_ENABLED: u32 = 1;

/// Processor Local APIC Affinity: the vCPU with local APIC ID `apic_id` is in `domain`.
fn processor_local_apic_affinity(domain: u32, apic_id: u8) -> Vec<u8> {
    let domain = domain.to_le_bytes();
    let mut entry = vec![
        TYPE_PROCESSOR_LOCAL_APIC_AFFINITY,
        PROCESSOR_LOCAL_APIC_AFFINITY_LEN,
        domain[0], // proximity domain bits 7:0
        apic_id,
    ];
    entry.extend_from_slice(&PROCESSOR_ENABLED.to_le_bytes());
    entry.push(0); // local SAPIC EID (Itanium only)
    entry.extend_from_slice(&domain[1..4]); // proximity domain bits 31:8
    entry.extend_from_slice(&0u32.to_le_bytes()); // clock domain
    entry
}

/// Memory Affinity: `range` is in `domain`, flagged ENABLED, and HOT_PLUGGABLE if it is.
fn memory_affinity(domain: u32, range: &MemoryAffinity) -> Vec<u8> {
    let mut entry = MemoryAffinityStructure::new(domain, range.base, range.size).enabled();
    if range.hotpluggable {
        entry = entry.hotpluggable();
    }
    aml_bytes(&entry)
}

/// Checks that `cfg.numa` describes every vCPU once, in nodes numbered 0..n, with memory
/// ranges that are not empty and overlap nothing.
fn check_numa(cfg: &AcpiConfig) -> Result<(), Error> {
    let invalid = |reason: String| Err(Error::InvalidNuma { reason });

    if cfg.numa.is_empty() {
        return invalid(
            "no node; the SRAT is always written, so pass at least node 0 with every vCPU \
             and the boot RAM"
                .into(),
        );
    }

    let mut domains: Vec<u32> = cfg.numa.iter().map(|n| n.proximity_domain).collect();
    domains.sort_unstable();
    for (expected, domain) in (0u32..).zip(&domains) {
        if *domain != expected {
            return invalid(format!(
                "the proximity domains must be 0..{} with each once, but they are {domains:?}",
                cfg.numa.len()
            ));
        }
    }

    // The MADT gives the vCPUs APIC IDs 0..num_vcpus; each must be in exactly one node.
    // (Sized by what the nodes list, not by `num_vcpus`, which the MADT has yet to bound.)
    let mut cpus: Vec<(u32, u32)> = Vec::new();
    for node in &cfg.numa {
        for &cpu in &node.cpus {
            if cpu >= cfg.num_vcpus {
                return invalid(format!(
                    "node {} lists APIC ID {cpu}, but the vCPUs' APIC IDs are 0..{}",
                    node.proximity_domain, cfg.num_vcpus
                ));
            }
            cpus.push((cpu, node.proximity_domain));
        }
    }
    cpus.sort_unstable();
    for pair in cpus.windows(2) {
        let ((cpu, node_a), (other, node_b)) = (pair[0], pair[1]);
        if cpu == other {
            return invalid(format!(
                "APIC ID {cpu} is listed twice (in nodes {node_a} and {node_b})"
            ));
        }
    }
    // Sorted, distinct and below `num_vcpus`: if some are missing, the first is where the
    // list first differs from 0, 1, 2, ...
    if cpus.len() != cfg.num_vcpus as usize {
        let missing = (0u32..)
            .zip(&cpus)
            .find(|(expected, (cpu, _))| cpu != expected)
            .map_or(cpus.len() as u32, |(expected, _)| expected);
        return invalid(format!(
            "the vCPU with APIC ID {missing} is in no node (every vCPU needs one)"
        ));
    }

    let mut ranges: Vec<(u64, u64, u32)> = Vec::new();
    for node in &cfg.numa {
        for range in &node.memory {
            let Some(end) = range.base.checked_add(range.size) else {
                return invalid(format!(
                    "node {}: range {:#x}+{:#x} wraps around",
                    node.proximity_domain, range.base, range.size
                ));
            };
            if range.size == 0 {
                return invalid(format!(
                    "node {}: range at {:#x} is empty",
                    node.proximity_domain, range.base
                ));
            }
            ranges.push((range.base, end, node.proximity_domain));
        }
    }
    ranges.sort_unstable();
    for pair in ranges.windows(2) {
        let ((base_a, end_a, node_a), (base_b, end_b, node_b)) = (pair[0], pair[1]);
        if base_b < end_a {
            return invalid(format!(
                "range {base_a:#x}..{end_a:#x} (node {node_a}) overlaps \
                 {base_b:#x}..{end_b:#x} (node {node_b})"
            ));
        }
    }
    Ok(())
}

/// Builds the SRAT for `cfg`, after checking its NUMA nodes.
pub(crate) fn build(cfg: &AcpiConfig) -> Result<Vec<u8>, Error> {
    check_numa(cfg)?;

    let mut srat = Sdt::new(
        *b"SRAT",
        SRAT_HEADER_LEN,
        SRAT_REVISION,
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    // The qword after it stays 0.
    srat.write_u32(RESERVED_ONE_OFFSET, 1);

    // In APIC ID order, like the MADT's Processor Local APIC structures.
    let mut cpus: Vec<(u32, u32)> = cfg
        .numa
        .iter()
        .flat_map(|node| node.cpus.iter().map(|&cpu| (cpu, node.proximity_domain)))
        .collect();
    cpus.sort_unstable();
    for (cpu, domain) in cpus {
        // `check_numa` keeps APIC IDs below `num_vcpus`; the MADT keeps that at most 255.
        let apic_id = u8::try_from(cpu).map_err(|_| Error::InvalidNuma {
            reason: format!("APIC ID {cpu} does not fit the 8-bit SRAT processor entry"),
        })?;
        srat.append_slice(&processor_local_apic_affinity(domain, apic_id));
    }

    let mut memory: Vec<(u32, &MemoryAffinity)> = cfg
        .numa
        .iter()
        .flat_map(|node| node.memory.iter().map(|m| (node.proximity_domain, m)))
        .collect();
    memory.sort_unstable_by_key(|(_, range)| range.base);
    for (domain, range) in memory {
        srat.append_slice(&memory_affinity(domain, range));
    }

    Ok(srat.as_slice().to_vec())
}
