//! What the VMM and the device thread share: the published status (what `vm.info` and the
//! configuration space read), a pending resize, and the eventfd that wakes the device
//! thread for it.
//!
//! The lock is held only to copy a few fields in or out, never while a request is handled,
//! so neither a status query nor a resize waits for the device thread.
//!
//! A resize is published at once: `requested_size` and `usable_region_size` change in the
//! status and the configuration space as [`VirtioMemState::set_requested_size`] would change
//! them. The device thread then applies it to the state (under the same lock as each
//! publication, so the two never disagree for long) and sends the configuration-change
//! interrupt.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use vmm_sys_util::eventfd::EventFd;

use super::config::VirtioMemConfig;
use super::latency::{LatencyRecorder, LatencySummary};
use super::state::{Counters, MemGeometry, ResizeError, VirtioMemState};

/// A snapshot of one virtio-mem device, for `vm.info` and `vm.counters`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirtioMemStatus {
    /// Guest-physical start of the region.
    pub addr: u64,
    /// Size of the region.
    pub region_size: u64,
    /// Block size.
    pub block_size: u64,
    /// The ACPI proximity domain, when the device belongs to a NUMA node.
    pub node_id: Option<u16>,
    /// The size the host asked for.
    pub requested_size: u64,
    /// The size the guest has plugged.
    pub plugged_size: u64,
    /// The part of the region the guest may plug.
    pub usable_region_size: u64,
    /// Requests and responses by type.
    pub counters: Counters,
    /// Request handling time in the device thread: from taking a request off the queue to
    /// its answer in the used ring.
    pub latency: LatencySummary,
    /// Time the device thread spent giving unplugged memory back after answering, per
    /// discarded range.
    pub discard: LatencySummary,
    /// Whether the driver has started the device (DRIVER_OK) and it is running.
    pub active: bool,
    /// Whether the device stopped on a malformed request and waits for a device reset.
    pub needs_reset: bool,
}

/// The plugged size of a device changed (the VMM turns it into an event).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PluggedSizeChange {
    /// The plugged size before.
    pub previous: u64,
    /// The plugged size now.
    pub plugged: u64,
    /// The requested size at the time.
    pub requested: u64,
}

/// Called on the device thread each time the plugged size changes; must not block.
pub type PluggedSizeListener = Arc<dyn Fn(PluggedSizeChange) + Send + Sync>;

/// What one publication changed, for the caller to act on outside the lock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Published {
    /// A pending resize changed `requested_size` or `usable_region_size`: send the
    /// configuration-change interrupt.
    pub config_changed: bool,
    /// The plugged size changed.
    pub plugged: Option<PluggedSizeChange>,
}

struct Inner {
    config: VirtioMemConfig,
    counters: Counters,
    latency: LatencyRecorder,
    discard: LatencyRecorder,
    generation: u32,
    pending_resize: Option<u64>,
    active: bool,
    needs_reset: bool,
}

/// See the module doc.
pub struct MemShared {
    geometry: MemGeometry,
    node_id: Option<u16>,
    inner: Mutex<Inner>,
    wake: EventFd,
    listener: Mutex<Option<PluggedSizeListener>>,
}

impl MemShared {
    /// Shared state publishing `state` as it is now.
    pub fn new(state: &VirtioMemState) -> io::Result<Self> {
        Ok(MemShared {
            geometry: state.geometry(),
            node_id: state.node_id(),
            inner: Mutex::new(Inner {
                config: state.config(),
                counters: state.counters(),
                latency: LatencyRecorder::new(),
                discard: LatencyRecorder::new(),
                generation: 0,
                pending_resize: None,
                active: false,
                needs_reset: false,
            }),
            wake: EventFd::new(libc::EFD_NONBLOCK)?,
            listener: Mutex::new(None),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The region's shape.
    pub fn geometry(&self) -> MemGeometry {
        self.geometry
    }

    /// The node's proximity domain.
    pub fn node_id(&self) -> Option<u16> {
        self.node_id
    }

    /// The eventfd a resize signals; the device thread polls it.
    pub fn wake_event(&self) -> &EventFd {
        &self.wake
    }

    /// Validates `size`, publishes it, leaves it for the device to apply, and wakes the
    /// device thread. Never waits for the device thread.
    pub fn request_resize(&self, size: u64) -> Result<(), ResizeError> {
        self.geometry.check_requested_size(size)?;
        {
            let mut inner = self.lock();
            inner.pending_resize = Some(size);
            let mut config = inner.config;
            config.requested_size = size;
            config.usable_region_size = config
                .usable_region_size
                .max(self.geometry.usable_region_for(size));
            set_config(&mut inner, config);
        }
        if let Err(e) = self.wake.write(1) {
            log::warn!("virtio-mem: cannot wake the device thread for a resize: {e}");
        }
        Ok(())
    }

    /// Applies a pending resize to `state`, then publishes `state` (and `latency_ns`, the
    /// time of the request just handled, if any).
    pub fn publish(&self, state: &mut VirtioMemState, latency_ns: Option<u64>) -> Published {
        let mut inner = self.lock();
        let mut config_changed = false;
        if let Some(size) = inner.pending_resize.take() {
            match state.set_requested_size(size) {
                Ok(changed) => config_changed = changed,
                // request_resize validated it against the same geometry.
                Err(e) => log::error!("virtio-mem: pending resize refused: {e}"),
            }
        }
        let previous = inner.config.plugged_size;
        set_config(&mut inner, state.config());
        inner.counters = state.counters();
        if let Some(ns) = latency_ns {
            inner.latency.record(ns);
        }
        let plugged = (inner.config.plugged_size != previous).then_some(PluggedSizeChange {
            previous,
            plugged: inner.config.plugged_size,
            requested: inner.config.requested_size,
        });
        Published {
            config_changed,
            plugged,
        }
    }

    /// Records the time of one discard done after its answer.
    pub fn record_discard(&self, ns: u64) {
        self.lock().discard.record(ns);
    }

    /// Records whether the device runs, and whether it waits for a reset.
    pub fn set_running(&self, active: bool, needs_reset: bool) {
        let mut inner = self.lock();
        inner.active = active;
        inner.needs_reset = needs_reset;
    }

    /// The device stopped on a malformed request.
    pub fn set_needs_reset(&self) {
        self.lock().needs_reset = true;
    }

    /// A driver read of the configuration space.
    pub fn read_config(&self, offset: u64, data: &mut [u8]) {
        let config = self.lock().config;
        config.read(offset, data);
    }

    /// Changes each time the configuration space does.
    pub fn config_generation(&self) -> u32 {
        self.lock().generation
    }

    /// The status now.
    pub fn status(&self) -> VirtioMemStatus {
        let (config, counters, latency, discard, active, needs_reset) = {
            let inner = self.lock();
            (
                inner.config,
                inner.counters,
                inner.latency.clone(),
                inner.discard.clone(),
                inner.active,
                inner.needs_reset,
            )
        };
        VirtioMemStatus {
            addr: config.addr,
            region_size: config.region_size,
            block_size: config.block_size,
            node_id: self.node_id,
            requested_size: config.requested_size,
            plugged_size: config.plugged_size,
            usable_region_size: config.usable_region_size,
            counters,
            latency: latency.summary(),
            discard: discard.summary(),
            active,
            needs_reset,
        }
    }

    /// Replaces the plugged-size listener.
    pub fn set_listener(&self, listener: Option<PluggedSizeListener>) {
        *self.listener.lock().unwrap_or_else(|e| e.into_inner()) = listener;
    }

    /// Tells the listener, if any.
    pub fn plugged_size_changed(&self, change: PluggedSizeChange) {
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(listener) = listener {
            listener(change);
        }
    }
}

/// Publishes `config`, bumping the generation when it differs from what was published.
fn set_config(inner: &mut Inner, config: VirtioMemConfig) {
    if inner.config != config {
        inner.config = config;
        inner.generation = inner.generation.wrapping_add(1);
    }
}
