//! [`VirtioMemHandle`]: how the VMM resizes a virtio-mem device and reads its status without
//! ever waiting for the device thread.

use std::sync::Arc;

use super::shared::{MemShared, PluggedSizeChange, VirtioMemStatus};
use super::state::{MemGeometry, ResizeError};

/// The VMM's side of one virtio-mem device. Cheap to clone; usable from any thread.
#[derive(Clone)]
pub struct VirtioMemHandle {
    shared: Arc<MemShared>,
}

impl VirtioMemHandle {
    pub(super) fn new(shared: Arc<MemShared>) -> Self {
        VirtioMemHandle { shared }
    }

    /// Asks the guest for `requested_size` bytes of this device's region (docs/virtio-mem.md §1.3,
    /// design "Resize, end to end"). Validates it (a multiple of the block size, at most the
    /// region size) and returns at once: the new `requested_size` (and a grown
    /// `usable_region_size`) shows in [`status`](Self::status) and in the configuration space
    /// immediately; the device thread applies it and sends the configuration-change
    /// interrupt. Before the driver starts the device, it is applied at activation.
    ///
    /// Whether the total guest RAM stays above boot RAM, and which device a `vm.resize`
    /// concerns, is the VMM's business.
    pub fn resize(&self, requested_size: u64) -> Result<(), ResizeError> {
        self.shared.request_resize(requested_size)
    }

    /// Requested, plugged and usable sizes, the region, counters and latency, as last
    /// published.
    pub fn status(&self) -> VirtioMemStatus {
        self.shared.status()
    }

    /// The region's fixed shape, to validate a resize before asking.
    pub fn geometry(&self) -> MemGeometry {
        self.shared.geometry()
    }

    /// Calls `listener` each time the plugged size changes: on the device thread after PLUG,
    /// UNPLUG and UNPLUG_ALL requests, and on the thread doing it at a system reset (which
    /// holds the PCI device's lock). It must be quick and must not block or lock the device
    /// (sending on a channel is fine). Replaces any earlier listener.
    pub fn set_plugged_size_listener(
        &self,
        listener: impl Fn(PluggedSizeChange) + Send + Sync + 'static,
    ) {
        self.shared.set_listener(Some(Arc::new(listener)));
    }

    /// The guest memory the device thread writes, recorded while a migration asks.
    pub fn write_log(&self) -> &super::WriteLog {
        self.shared.write_log()
    }

    /// Removes the listener.
    pub fn clear_plugged_size_listener(&self) {
        self.shared.set_listener(None);
    }
}
