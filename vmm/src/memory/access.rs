//! [`AccessibleMemory`]: builds the [`GuestMemoryView`] the VMM's own threads read guest
//! memory through: boot RAM, and of each virtio-mem region only its plugged runs. Unplugged
//! device memory is `PROT_NONE` on the host (docs/design.md, "Slots and protection"), so an
//! address a guest hands a device there must fail as "not in guest memory" rather than fault.

use std::sync::{Arc, Mutex, MutexGuard};

use virtio_devices::view::GuestMemoryView;
use vm_memory::mmap::MmapRegion;
use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap};

use super::manager::MemoryError;

/// Where one device region is mapped on the host.
#[derive(Clone, Copy, Debug)]
pub struct RegionMapping {
    /// Guest-physical start.
    pub guest_addr: u64,
    /// Host virtual start.
    pub host_addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// The `mmap` flags it was made with (for views of it).
    pub mmap_flags: i32,
}

/// See the module doc. One per VM, shared by the devices' backends.
pub struct AccessibleMemory {
    boot: Vec<Arc<GuestRegionMmap>>,
    devices: Vec<RegionMapping>,
    /// Per device, the accessible runs as (offset in the region, length). Held while a new
    /// view is built and put in place, so that two devices never build from each other's
    /// stale runs.
    runs: Mutex<Vec<Vec<(u64, u64)>>>,
    view: Arc<GuestMemoryView>,
}

impl AccessibleMemory {
    /// Boot RAM `boot` (whose regions own their mappings) and the device regions, nothing
    /// of them accessible yet. `owners` are kept alive as long as any view: the device
    /// regions' own mappings.
    pub fn new(
        boot: Vec<Arc<GuestRegionMmap>>,
        devices: Vec<RegionMapping>,
        owners: Vec<Arc<dyn std::any::Any + Send + Sync>>,
    ) -> Result<Self, MemoryError> {
        let mem = GuestMemoryMmap::from_arc_regions(boot.clone()).map_err(view_error)?;
        let runs = vec![Vec::new(); devices.len()];
        Ok(AccessibleMemory {
            boot,
            devices,
            runs: Mutex::new(runs),
            view: Arc::new(GuestMemoryView::with_owners(mem, owners)),
        })
    }

    /// The view devices and vCPUs read guest memory through.
    pub fn view(&self) -> &Arc<GuestMemoryView> {
        &self.view
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Vec<(u64, u64)>>> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Device `index` is accessible at exactly `runs` from now on: puts a view with them in
    /// place and returns once no thread holds an older view (so memory left out of `runs`
    /// may be protected). The caller must not hold a view.
    pub fn set_runs(&self, index: usize, runs: Vec<(u64, u64)>) -> Result<(), MemoryError> {
        let mut all = self.lock();
        let mut regions = self.boot.clone();
        for (i, device) in self.devices.iter().enumerate() {
            let device_runs = if i == index { &runs } else { &all[i] };
            for &(offset, len) in device_runs {
                regions.push(Arc::new(view_region(device, offset, len)?));
            }
        }
        let mem = GuestMemoryMmap::from_arc_regions(regions).map_err(view_error)?;
        self.view.replace(mem);
        if let Some(slot) = all.get_mut(index) {
            *slot = runs;
        }
        Ok(())
    }
}

fn view_error(e: vm_memory::GuestRegionCollectionError) -> MemoryError {
    MemoryError::View(e.to_string())
}

/// A region of guest memory over `[offset, offset + len)` of `device`'s mapping, not owning
/// it.
fn view_region(
    device: &RegionMapping,
    offset: u64,
    len: u64,
) -> Result<GuestRegionMmap, MemoryError> {
    let fail = || MemoryError::View(format!("run {offset:#x}+{len:#x} outside its region"));
    if offset.checked_add(len).is_none_or(|end| end > device.size) || len == 0 {
        return Err(fail());
    }
    let host = (device.host_addr + offset) as *mut u8;
    let size = usize::try_from(len).map_err(|_| fail())?;
    // SAFETY: [host, host + len) lies inside the device region's mapping (checked above),
    // which `AccessibleMemory`'s view keeps alive (its owners) for as long as any view
    // exists; the run is read-write because the backend made it so before asking for it.
    let mapping = unsafe {
        MmapRegion::build_raw(
            host,
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            device.mmap_flags,
        )
    }
    .map_err(|e| MemoryError::View(e.to_string()))?;
    GuestRegionMmap::new(mapping, GuestAddress(device.guest_addr + offset)).ok_or_else(fail)
}
