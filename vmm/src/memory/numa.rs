//! The guest's NUMA picture for the SRAT and SLIT: which vCPUs and which memory (boot RAM
//! and virtio-mem regions, the latter hot-pluggable) belong to which node.

use crate::config::VmConfig;
use crate::memory::manager::ZoneLayout;

/// Distance given when `--numa` names none.
const DEFAULT_REMOTE: u8 = acpi::DEFAULT_REMOTE_DISTANCE;

/// The nodes for `acpi::AcpiConfig::numa` and the distance matrix (empty: defaults).
pub fn acpi_numa<Z: AsRef<ZoneLayout>>(
    config: &VmConfig,
    zones: &[Z],
) -> (Vec<acpi::NumaNode>, Vec<Vec<u8>>) {
    let memory_of = |node: u32| -> Vec<acpi::MemoryAffinity> {
        let mut memory = Vec::new();
        for zone in zones.iter().map(AsRef::as_ref).filter(|z| z.node == node) {
            memory.extend(
                zone.boot_ranges
                    .iter()
                    .map(|&(base, size)| acpi::MemoryAffinity {
                        base,
                        size,
                        hotpluggable: false,
                    }),
            );
            if let Some(d) = &zone.region {
                memory.push(acpi::MemoryAffinity {
                    base: d.addr,
                    size: d.size,
                    hotpluggable: true,
                });
            }
        }
        memory
    };
    let Some(numa) = config.numa.as_ref().filter(|n| !n.is_empty()) else {
        return (
            vec![acpi::NumaNode {
                proximity_domain: 0,
                cpus: (0..config.cpus.boot_vcpus).collect(),
                memory: memory_of(0),
            }],
            Vec::new(),
        );
    };
    let nodes = numa
        .iter()
        .map(|n| acpi::NumaNode {
            proximity_domain: n.guest_numa_id,
            cpus: n.cpus.clone().unwrap_or_default(),
            memory: memory_of(n.guest_numa_id),
        })
        .collect();
    let count = numa.len();
    let mut distances = Vec::new();
    if numa.iter().any(|n| n.distances.is_some()) {
        distances = (0..count)
            .map(|a| {
                (0..count)
                    .map(|b| {
                        if a == b {
                            acpi::LOCAL_DISTANCE
                        } else {
                            DEFAULT_REMOTE
                        }
                    })
                    .collect::<Vec<u8>>()
            })
            .collect();
        for n in numa {
            for d in n.distances.iter().flatten() {
                if let Some(cell) = distances
                    .get_mut(n.guest_numa_id as usize)
                    .and_then(|row| row.get_mut(d.destination as usize))
                {
                    *cell = d.distance;
                }
            }
        }
    }
    (nodes, distances)
}
