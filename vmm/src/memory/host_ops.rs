//! [`HostRegionOps`]: what a [`super::protected::ProtectedRegion`] does for real: `mprotect`
//! on the region's host mapping, populate and discard through virtio-devices'
//! [`HostMemoryBackend`], KVM memslots through `hypervisor::Vm`, and the VMM's guest memory
//! view through [`AccessibleMemory`].

use std::io;
use std::sync::Arc;

use hypervisor::MemoryRegion;
use virtio_devices::mem::HostMemoryBackend;

use super::access::AccessibleMemory;
use super::protected::RegionOps;

/// See the module doc.
pub struct HostRegionOps {
    /// Populates and discards.
    pub host: HostMemoryBackend,
    /// The region's host mapping and guest-physical start.
    pub host_addr: u64,
    pub guest_addr: u64,
    pub size: u64,
    /// The KVM slot number of the region's slot 0; slot `i` is `first_slot + i`.
    pub first_slot: u32,
    pub vm: Arc<dyn hypervisor::Vm>,
    pub access: Arc<AccessibleMemory>,
    /// This device's index in `access`.
    pub index: usize,
}

impl HostRegionOps {
    fn slot(&self, index: usize, offset: u64, len: u64) -> io::Result<MemoryRegion> {
        let slot = u32::try_from(index)
            .ok()
            .and_then(|i| self.first_slot.checked_add(i))
            .ok_or_else(|| io::Error::other(format!("slot {index} has no KVM number")))?;
        Ok(MemoryRegion {
            slot,
            guest_addr: self.guest_addr + offset,
            size: len,
            host_addr: self.host_addr + offset,
            log_dirty: false,
        })
    }
}

fn kvm_error(e: hypervisor::HypervisorError) -> io::Error {
    io::Error::other(e.to_string())
}

impl RegionOps for HostRegionOps {
    fn protect(&mut self, offset: u64, len: u64, accessible: bool) -> io::Result<()> {
        let inside = offset.checked_add(len).is_some_and(|end| end <= self.size);
        let size = usize::try_from(len).ok().filter(|_| inside && len > 0);
        let Some(size) = size else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("[{offset:#x}, +{len:#x}) is outside the region"),
            ));
        };
        let prot = if accessible {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_NONE
        };
        let addr = (self.host_addr + offset) as *mut libc::c_void;
        // SAFETY: [addr, addr + len) lies inside the region's own mapping (checked above),
        // which the VM owns for as long as this backend exists. Only blocks the guest has not
        // plugged are made PROT_NONE, after the VMM's view stopped covering them, so nothing
        // in this process reaches them; no Rust reference points into guest memory.
        if unsafe { libc::mprotect(addr, size, prot) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn populate(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.host.populate(offset, len)
    }

    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.host.discard(offset, len)
    }

    fn map_slot(&mut self, index: usize, offset: u64, len: u64) -> io::Result<()> {
        let region = self.slot(index, offset, len)?;
        self.vm.set_memory_region(region).map_err(kvm_error)
    }

    fn unmap_slot(&mut self, index: usize, offset: u64, len: u64) -> io::Result<()> {
        let region = self.slot(index, offset, len)?;
        self.vm.remove_memory_region(region).map_err(kvm_error)
    }

    fn publish_view(&mut self, runs: Vec<(u64, u64)>) -> io::Result<()> {
        self.access
            .set_runs(self.index, runs)
            .map_err(|e| io::Error::other(e.to_string()))
    }
}
