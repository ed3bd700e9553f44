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
//! interrupt. Several resizes before the thread runs are applied as one, largest first, so
//! the usable region the driver may already have read never shrinks, and any change that
//! was published on the way earns the interrupt.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

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
    /// Time since the last progress towards `requested_size`: a change of the plugged size,
    /// or a new requested size.
    pub since_progress: Duration,
    /// Counts those changes: a stall is one value of it.
    pub progress: u64,
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

#[derive(Clone, Copy, Debug)]
struct PendingResize {
    last: u64,
    largest: u64,
    /// The published configuration changed on the way (a driver may have read it): the
    /// device owes the driver a configuration-change interrupt.
    published_change: bool,
}

struct Inner {
    config: VirtioMemConfig,
    counters: Counters,
    latency: LatencyRecorder,
    discard: LatencyRecorder,
    generation: u32,
    /// The last size asked for since the device thread last applied one, and the largest:
    /// the usable region already published was grown for the largest, and must not shrink.
    pending_resize: Option<PendingResize>,
    /// When the plugged or requested size last changed, and how many times it has.
    progress_at: Instant,
    progress: u64,
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
    /// The device thread's writes to guest memory, while a migration records them.
    write_log: super::write_log::WriteLog,
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
                progress_at: Instant::now(),
                progress: 0,
                active: false,
                needs_reset: false,
            }),
            wake: EventFd::new(libc::EFD_NONBLOCK)?,
            listener: Mutex::new(None),
            write_log: super::write_log::WriteLog::default(),
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

    /// The device thread's writes to guest memory (see [`super::WriteLog`]).
    pub fn write_log(&self) -> &super::write_log::WriteLog {
        &self.write_log
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
            let mut config = inner.config;
            config.requested_size = size;
            config.usable_region_size = config
                .usable_region_size
                .max(self.geometry.usable_region_for(size));
            let changed = config != inner.config;
            set_config(&mut inner, config);
            if changed {
                inner.progress_at = Instant::now();
                inner.progress += 1;
            }
            let earlier = inner.pending_resize;
            inner.pending_resize = Some(PendingResize {
                last: size,
                largest: earlier.map_or(size, |p| p.largest.max(size)),
                published_change: changed || earlier.is_some_and(|p| p.published_change),
            });
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
        if let Some(pending) = inner.pending_resize.take() {
            // The largest first, so that the state's usable region is the one already
            // published (the driver may have read it): usable_region_size never shrinks
            // outside UNPLUG_ALL and reset, and every change comes with an interrupt.
            let before = state.config();
            let applied = state
                .set_requested_size(pending.largest)
                .and_then(|_| state.set_requested_size(pending.last));
            match applied {
                // An interrupt when the state changed, or when what was published in between
                // changed (the driver may have read it).
                Ok(_) => config_changed = pending.published_change || state.config() != before,
                // request_resize validated both against the same geometry.
                Err(e) => log::error!("virtio-mem: pending resize refused: {e}"),
            }
        }
        let previous = inner.config.plugged_size;
        set_config(&mut inner, state.config());
        inner.counters = state.counters();
        if let Some(ns) = latency_ns {
            inner.latency.record(ns);
        }
        if inner.config.plugged_size != previous {
            inner.progress_at = Instant::now();
            inner.progress += 1;
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
        let (config, counters, latency, discard, active, needs_reset, progress_at, progress) = {
            let inner = self.lock();
            (
                inner.config,
                inner.counters,
                inner.latency.clone(),
                inner.discard.clone(),
                inner.active,
                inner.needs_reset,
                inner.progress_at,
                inner.progress,
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
            since_progress: progress_at.elapsed(),
            progress,
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

#[cfg(test)]
mod tests {
    use super::*;

    const BS: u64 = 2 << 20;
    const GIB: u64 = 1 << 30;

    /// A 64 GiB region with 1 GiB plugged and requested, published and applied.
    fn settled() -> (MemShared, VirtioMemState) {
        let geometry = MemGeometry::new(1 << 40, 64 * GIB, BS).unwrap();
        let mut state = VirtioMemState::new(geometry, None, GIB).unwrap();
        let shared = MemShared::new(&state).unwrap();
        shared.publish(&mut state, None);
        (shared, state)
    }

    #[test]
    fn there_and_back_before_the_thread_applies_keeps_the_usable_region_and_interrupts() {
        let (shared, mut state) = settled();
        let usable_before = shared.status().usable_region_size;
        shared.request_resize(32 * GIB).unwrap();
        let published = shared.status().usable_region_size;
        assert!(
            published > usable_before,
            "a grow publishes a larger usable region"
        );
        // Back to where the state already is, before the device thread ran.
        shared.request_resize(GIB).unwrap();
        let applied = shared.publish(&mut state, None);
        assert_eq!(state.requested_size(), GIB);
        assert_eq!(
            state.usable_region_size(),
            published,
            "the usable region a driver may have read never shrinks"
        );
        assert_eq!(shared.status().usable_region_size, published);
        assert!(applied.config_changed, "the driver must be told");
    }

    #[test]
    fn requested_size_that_flickered_is_followed_by_an_interrupt() {
        // The usable region already covers both sizes: only requested_size flickered.
        let (shared, mut state) = settled();
        shared.request_resize(2 * GIB).unwrap();
        shared.publish(&mut state, None);
        let usable = state.usable_region_size();
        shared.request_resize(GIB).unwrap();
        shared.request_resize(2 * GIB).unwrap();
        let applied = shared.publish(&mut state, None);
        assert_eq!(state.usable_region_size(), usable);
        assert!(
            applied.config_changed,
            "requested_size read as 1 GiB in between: the driver must re-read it"
        );
        // Nothing pending and nothing changed: no interrupt.
        assert!(!shared.publish(&mut state, None).config_changed);
    }
}
