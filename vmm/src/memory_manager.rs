//! Guest RAM: the boot RAM ranges of the layout, mapped into the VM as memslots.

use std::sync::Arc;

use hypervisor::MemoryRegion;
use vm_memory::{
    GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, MemoryRegionAddress,
};

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("cannot allocate {size} bytes of guest RAM: {reason}")]
    Allocate { size: u64, reason: String },
    #[error("cannot map guest RAM at {addr:#x} into the VM: {source}")]
    Map {
        addr: u64,
        #[source]
        source: hypervisor::HypervisorError,
    },
}

/// Owns guest RAM and the memslots that expose it.
pub struct MemoryManager {
    guest_memory: GuestMemoryMmap,
    ram_size: u64,
    slots: Vec<MemoryRegion>,
}

impl MemoryManager {
    /// Allocates `ram_size` bytes of boot RAM (private anonymous memory, populated on first
    /// touch) and maps it into `vm`.
    pub fn new(vm: &Arc<dyn hypervisor::Vm>, ram_size: u64) -> Result<Self, MemoryError> {
        let ranges: Vec<(GuestAddress, usize)> = arch::layout::ram_ranges(ram_size)
            .into_iter()
            .map(|(start, size)| (GuestAddress(start), size as usize))
            .collect();
        let guest_memory =
            GuestMemoryMmap::from_ranges(&ranges).map_err(|e| MemoryError::Allocate {
                size: ram_size,
                reason: e.to_string(),
            })?;
        let mut slots = Vec::new();
        for (slot, region) in guest_memory.iter().enumerate() {
            let host = region
                .get_host_address(MemoryRegionAddress(0))
                .map_err(|e| MemoryError::Allocate {
                    size: ram_size,
                    reason: e.to_string(),
                })?;
            let r = MemoryRegion {
                slot: slot as u32,
                guest_addr: region.start_addr().0,
                size: region.len(),
                host_addr: host as u64,
                log_dirty: false,
            };
            vm.set_memory_region(r).map_err(|source| MemoryError::Map {
                addr: r.guest_addr,
                source,
            })?;
            slots.push(r);
        }
        Ok(MemoryManager {
            guest_memory,
            ram_size,
            slots,
        })
    }

    pub fn guest_memory(&self) -> &GuestMemoryMmap {
        &self.guest_memory
    }

    pub fn ram_size(&self) -> u64 {
        self.ram_size
    }

    pub fn slots(&self) -> &[MemoryRegion] {
        &self.slots
    }
}
