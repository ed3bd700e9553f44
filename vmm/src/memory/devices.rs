//! The virtio-mem devices: one per memory zone with a device region, each a virtio-pci
//! function on bus 0 with its own MSI-X vectors, and a handle the VMM keeps for resizing and
//! for status that never waits on the device thread.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use pci::{GsiRoutingTable, KvmMsiGroup};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use virtio_devices::mem::{
    HostMemoryBackend, MemDeviceState, PluggedSizeChange, VirtioMem, VirtioMemHandle,
    VirtioMemState,
};
use virtio_devices::transport::pci::msix_vector_count;
use virtio_devices::VirtioPciDevice;

use super::access::AccessibleMemory;
use super::host_ops::HostRegionOps;
use super::manager::{Backing, DeviceRegion};
use super::protected::{ProtectedRegion, SlotStatus};
use super::slots::SlotLayout;
use super::unplugged::{UnpluggedAccess, UnpluggedCounters};
use crate::bus::Bus;
use crate::pci_host::PciHost;
use crate::seccomp::ThreadFilter;
use crate::snapshot::memory_file::HostRange;
use virtio_devices::transport::pci::VirtioPciState;

#[derive(Debug, thiserror::Error)]
pub enum MemoryDeviceError {
    #[error("virtio-mem {id}: the region: {source}")]
    Geometry {
        id: String,
        #[source]
        source: virtio_devices::mem::SetupError,
    },
    #[error("virtio-mem {id}: NUMA node {node} does not fit the 16-bit proximity domain")]
    Node { id: String, node: u32 },
    #[error("virtio-mem {id}: the host mapping: {source}")]
    Mapping {
        id: String,
        #[source]
        source: virtio_devices::mem::DiscardError,
    },
    #[error("virtio-mem {id}: setting up its memslots: {source}")]
    Slots {
        id: String,
        #[source]
        source: std::io::Error,
    },
    #[error("virtio-mem {id}: {source}")]
    Device {
        id: String,
        #[source]
        source: virtio_devices::mem::VirtioMemError,
    },
    #[error("virtio-mem {id}: catching accesses to unplugged memory: {source}")]
    UnpluggedCatcher {
        id: String,
        #[source]
        source: crate::bus::BusError,
    },
    #[error("virtio-mem {id}: MSI-X vectors: {source}")]
    Msi {
        id: String,
        #[source]
        source: pci::MsiError,
    },
    #[error("virtio-mem {id}: the PCI function: {source}")]
    Pci {
        id: String,
        #[source]
        source: virtio_devices::VirtioPciError,
    },
    #[error("virtio-mem {id}: its INTx line on GSI {gsi}: {source}")]
    Intx {
        id: String,
        gsi: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("virtio-mem {id}: the saved state: {source}")]
    Saved {
        id: String,
        #[source]
        source: virtio_devices::mem::SavedStateError,
    },
    #[error("virtio-mem {id}: making the saved plugged blocks ready: {source}")]
    Replug {
        id: String,
        #[source]
        source: std::io::Error,
    },
    #[error("virtio-mem {id}: on the PCI bus: {source}")]
    Bus {
        id: String,
        #[source]
        source: crate::pci_host::PciHostError,
    },
}

/// One virtio-mem device as the VMM sees it.
pub struct MemoryDevice {
    /// The zone's id (`default` for `--memory`).
    pub id: String,
    pub node: u32,
    pub backend: &'static str,
    pub handle: VirtioMemHandle,
    region: DeviceRegion,
    slots: Arc<SlotStatus>,
    unplugged: Arc<UnpluggedCounters>,
    /// Without progress this long, the resize is stalled.
    stall_timeout: Duration,
    /// The progress count of the last stall reported (one event per stall).
    stall_reported: AtomicU64,
    pci: Arc<Mutex<VirtioPciDevice<VirtioMem>>>,
    /// Its slot on bus 0.
    slot: u8,
}

fn backend_name(backing: &Backing, page_size: u64) -> &'static str {
    match (backing, page_size > 4096) {
        (Backing::PrivateAnonymous, _) => "anonymous",
        (Backing::SharedFile { .. }, false) => "memfd-shared",
        (Backing::SharedFile { .. }, true) => "hugetlb-shared",
        (Backing::PrivateFile { .. }, _) => "hugetlb-private",
    }
}

/// What [`create`] needs from the VM.
pub struct DeviceContext<'a> {
    pub vm: &'a Arc<dyn hypervisor::Vm>,
    pub routing: &'a Arc<GsiRoutingTable>,
    pub pci: &'a mut PciHost,
    /// Where unplugged memory's MMIO exits land.
    pub mmio: &'a Bus,
    pub with_numa: bool,
    pub seccomp: &'a ThreadFilter,
    /// Called when a device's activation or reset waits for the VMM thread.
    pub device_work: virtio_devices::transport::pci::DeferredWorkNotifier,
    /// `memory.stall_timeout_s`.
    pub stall_timeout: Duration,
}

/// The backend of `region` (device `index` of `access`). Nothing is plugged yet:
/// `hotplugged_size` is what the device asks the driver for once it runs.
fn backend(
    ctx: &DeviceContext<'_>,
    access: &Arc<AccessibleMemory>,
    id: &str,
    index: usize,
    region: &DeviceRegion,
) -> Result<ProtectedRegion<HostRegionOps>, MemoryDeviceError> {
    let backing = region.backing.clone();
    // SAFETY: [host_addr, host_addr + size) is the region's own mapping, made by the memory
    // manager for this device alone; `access`'s view owns it, and the backend holds `access`,
    // so the mapping outlives the backend.
    let host = unsafe {
        HostMemoryBackend::new(
            region.host_addr as *mut u8,
            region.size,
            backing,
            region.page_size,
            false,
        )
    }
    .map_err(|source| MemoryDeviceError::Mapping {
        id: id.to_string(),
        source,
    })?;
    let ops = HostRegionOps {
        host,
        host_addr: region.host_addr,
        guest_addr: region.addr,
        size: region.size,
        first_slot: region.first_slot,
        vm: ctx.vm.clone(),
        access: access.clone(),
        index,
    };
    let layout = SlotLayout::new(region.size, region.slot_size);
    ProtectedRegion::new(
        ops,
        layout,
        region.size,
        region.block_size,
        region.protect,
        // Huge pages are populated at plug too: a pool that cannot supply them answers the
        // plug BUSY, rather than fault the guest later.
        region.prefault || region.page_size > 4096,
    )
    .map_err(|source| MemoryDeviceError::Slots {
        id: id.to_string(),
        source,
    })
}

/// Creates the device of zone `id` on guest NUMA node `node` for `region` (device `index` of
/// `access`), and puts it on the PCI bus. With `saved` (a snapshot's state of this device)
/// the device starts in that state, its plugged blocks made ready in host memory; the PCI
/// function's state comes later ([`MemoryDevice::restore_function`]).
pub fn create(
    ctx: &mut DeviceContext<'_>,
    access: &Arc<AccessibleMemory>,
    index: usize,
    id: &str,
    node: u32,
    region: &DeviceRegion,
    saved: Option<&MemDeviceState>,
) -> Result<MemoryDevice, MemoryDeviceError> {
    let id = id.to_string();
    let zone_node = node;
    let geometry = region
        .geometry()
        .map_err(|source| MemoryDeviceError::Geometry {
            id: id.clone(),
            source,
        })?;
    let node = ctx
        .with_numa
        .then(|| u16::try_from(zone_node))
        .transpose()
        .map_err(|_| MemoryDeviceError::Node {
            id: id.clone(),
            node: zone_node,
        })?;
    let state = match saved {
        Some(saved) => VirtioMemState::from_saved(geometry, node, saved).map_err(|source| {
            MemoryDeviceError::Saved {
                id: id.clone(),
                source,
            }
        })?,
        None => VirtioMemState::new(geometry, node, region.hotplugged_size).map_err(|source| {
            MemoryDeviceError::Geometry {
                id: id.clone(),
                source: virtio_devices::mem::SetupError::Resize(source),
            }
        })?,
    };
    let mut backend = backend(ctx, access, &id, index, region)?;
    state
        .replug(&mut backend)
        .map_err(|source| MemoryDeviceError::Replug {
            id: id.clone(),
            source,
        })?;
    let slots = backend.status();
    let mut device =
        VirtioMem::new(id.clone(), state, backend).map_err(|source| MemoryDeviceError::Device {
            id: id.clone(),
            source,
        })?;
    device.set_unplugged_inaccessible(region.protect);
    let unplugged = UnpluggedAccess::new(id.clone(), region.addr);
    let unplugged_counters = unplugged.counters();
    ctx.mmio
        .insert(
            format!("virtio-mem-{id}-unplugged"),
            Arc::new(Mutex::new(unplugged)),
            region.addr,
            region.size,
        )
        .map_err(|source| MemoryDeviceError::UnpluggedCatcher {
            id: id.clone(),
            source,
        })?;
    // The device thread applies its filter before it serves the queue.
    let filter = ctx.seccomp.clone();
    device.set_thread_start_hook(Arc::new(move || {
        filter.apply_to_current().map_err(|e| e.to_string())
    }));
    let handle = device.handle();
    let event_id = id.clone();
    handle.set_plugged_size_listener(move |change: PluggedSizeChange| {
        let mut props = BTreeMap::new();
        props.insert("id".to_string(), event_id.clone());
        props.insert("plugged_size".to_string(), change.plugged.to_string());
        props.insert("previous_size".to_string(), change.previous.to_string());
        props.insert("requested_size".to_string(), change.requested.to_string());
        crate::event_monitor::event_with("virtio-mem", "plugged-size-changed", Some(props));
    });
    let msi = KvmMsiGroup::new(ctx.routing.clone(), msix_vector_count(1)).map_err(|source| {
        MemoryDeviceError::Msi {
            id: id.clone(),
            source,
        }
    })?;
    let pci_device = Arc::new(Mutex::new(
        VirtioPciDevice::new(
            format!("virtio-mem-{id}"),
            device,
            access.view().clone(),
            Arc::new(msi),
            ctx.vm.clone(),
        )
        .map_err(|source| MemoryDeviceError::Pci {
            id: id.clone(),
            source,
        })?,
    ));
    // DRIVER_OK and resets are written on vCPU threads; the device thread is started
    // and joined on the VMM thread.
    pci_device
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .set_deferred_work(ctx.device_work.clone());
    let slot = ctx
        .pci
        .add_device(&format!("virtio-mem-{id}"), pci_device.clone())
        .map_err(|source| MemoryDeviceError::Bus {
            id: id.clone(),
            source,
        })?;
    // INTx for drivers that keep MSI-X off (Linux with pci=nomsi), while GSIs last.
    let intx_gsi = ctx.pci.assign_intx(slot);
    if let Some(gsi) = intx_gsi {
        let line =
            pci::KvmIntx::new(ctx.vm.clone(), gsi).map_err(|source| MemoryDeviceError::Intx {
                id: id.clone(),
                gsi,
                source,
            })?;
        pci_device
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set_intx(Arc::new(line));
    } else {
        log::warn!("virtio-mem {id}: no INTx line left: it interrupts through MSI-X only");
    }
    pci_device
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .register_ioevents()
        .map_err(|source| MemoryDeviceError::Pci {
            id: id.clone(),
            source,
        })?;
    log::info!(
        "virtio-mem {id}: 00:{slot:02x}.0, region {:#x}+{:#x}, block {:#x}, {} slots of {:#x} from {}, unplugged memory {}, node {:?}, INTx GSI {:?}",
        region.addr,
        region.size,
        region.block_size,
        region.size.div_ceil(region.slot_size),
        region.slot_size,
        region.first_slot,
        if region.protect { "inaccessible" } else { "accessible" },
        node,
        intx_gsi
    );
    Ok(MemoryDevice {
        id,
        node: zone_node,
        backend: backend_name(&region.backing, region.page_size),
        handle,
        region: region.clone(),
        slots,
        unplugged: unplugged_counters,
        stall_timeout: ctx.stall_timeout,
        stall_reported: AtomicU64::new(u64::MAX),
        pci: pci_device,
        slot,
    })
}

/// Where a device is on its way to the requested size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResizeState {
    /// Plugged is what was requested.
    Settled,
    /// Not there yet, and moving (or not for long).
    Converging,
    /// Not there, and nothing moved for `stall_timeout_s`: the guest does not (or cannot)
    /// follow; the NACK, BUSY and ERROR counters say how it answers.
    Stalled,
}

impl ResizeState {
    pub fn name(self) -> &'static str {
        match self {
            ResizeState::Settled => "settled",
            ResizeState::Converging => "converging",
            ResizeState::Stalled => "stalled",
        }
    }
}

impl MemoryDevice {
    fn resize_state(&self, s: &virtio_devices::mem::VirtioMemStatus) -> ResizeState {
        if s.plugged_size == s.requested_size {
            ResizeState::Settled
        } else if s.since_progress >= self.stall_timeout {
            ResizeState::Stalled
        } else {
            ResizeState::Converging
        }
    }

    /// Sends `resize-stalled` once when the device has stalled; returns whether it is still
    /// on its way (converging or stalled), so that the caller keeps watching.
    pub fn watch_resize(&self) -> bool {
        let s = self.handle.status();
        let state = self.resize_state(&s);
        if state == ResizeState::Stalled
            && self.stall_reported.swap(s.progress, Ordering::Relaxed) != s.progress
        {
            let c = s.counters;
            log::warn!(
                "virtio-mem {}: the resize to {} bytes is stalled at {} plugged ({} s without progress; NACK {}, BUSY {}, ERROR {})",
                self.id,
                s.requested_size,
                s.plugged_size,
                s.since_progress.as_secs(),
                c.nack,
                c.busy,
                c.error
            );
            let props = BTreeMap::from([
                ("id".to_string(), self.id.clone()),
                ("requested_size".to_string(), s.requested_size.to_string()),
                ("plugged_size".to_string(), s.plugged_size.to_string()),
                (
                    "since_progress_ms".to_string(),
                    s.since_progress.as_millis().to_string(),
                ),
                ("nack_responses".to_string(), c.nack.to_string()),
                ("busy_responses".to_string(), c.busy.to_string()),
                ("error_responses".to_string(), c.error.to_string()),
            ]);
            crate::event_monitor::event_with("virtio-mem", "resize-stalled", Some(props));
        }
        state != ResizeState::Settled
    }

    /// What `vm.info` lists, as QEMU's `info memory-devices` does.
    pub fn info(&self) -> Value {
        let s = self.handle.status();
        json!({
            "id": self.id,
            "type": "virtio-mem",
            "node": self.node,
            "addr": s.addr,
            "region_size": s.region_size,
            "usable_region_size": s.usable_region_size,
            "requested_size": s.requested_size,
            "plugged_size": s.plugged_size,
            "block_size": s.block_size,
            "backend": self.backend,
            "active": s.active,
            "needs_reset": s.needs_reset,
            "slot_size": self.region.slot_size,
            "slots": self.region.size.div_ceil(self.region.slot_size),
            "slots_mapped": self.slots.mapped.load(Ordering::Relaxed),
            "unplugged_inaccessible": self.region.protect,
            "resize_state": self.resize_state(&s).name(),
            "since_progress_ms": u64::try_from(s.since_progress.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// What `vm.counters` lists for this device.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        let s = self.handle.status();
        let (c, l, d) = (s.counters, s.latency, s.discard);
        vec![
            ("plug_requests", c.plug),
            ("unplug_requests", c.unplug),
            ("unplug_all_requests", c.unplug_all),
            ("state_requests", c.state),
            ("malformed_requests", c.malformed),
            ("ack_responses", c.ack),
            ("nack_responses", c.nack),
            ("busy_responses", c.busy),
            ("error_responses", c.error),
            ("backend_errors", c.backend_errors),
            ("discard_errors", c.discard_errors),
            ("queue_notifications", c.notifications),
            ("latency_count", l.count),
            ("latency_total_ns", l.total_ns),
            ("latency_max_ns", l.max_ns),
            ("latency_median_ns", l.median_ns),
            ("discard_count", d.count),
            ("discard_total_ns", d.total_ns),
            ("discard_max_ns", d.max_ns),
            ("discard_median_ns", d.median_ns),
            ("slots_mapped", self.slots.mapped.load(Ordering::Relaxed)),
            (
                "unplugged_reads",
                self.unplugged.reads.load(Ordering::Relaxed),
            ),
            (
                "unplugged_writes",
                self.unplugged.writes.load(Ordering::Relaxed),
            ),
        ]
    }

    /// Starts or stops the device thread if the driver asked (on the VMM thread).
    pub fn service_deferred(&self) {
        self.pci
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .service_deferred();
    }

    /// Stops the device thread (it touches the region's mapping, so it must stop before
    /// guest memory is unmapped).
    pub fn stop(&self) {
        use virtio_devices::VirtioDevice;
        let mut pci = self.pci.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = pci.device_mut().reset() {
            log::error!("virtio-mem {}: stopping the device thread: {e}", self.id);
        }
    }

    pub fn plugged_size(&self) -> u64 {
        self.handle.status().plugged_size
    }

    fn function(&self) -> std::sync::MutexGuard<'_, VirtioPciDevice<VirtioMem>> {
        self.pci.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops the device thread for a snapshot, keeping everything as it is.
    pub fn pause(&self) -> Result<(), String> {
        self.function()
            .pause()
            .map_err(|e| format!("virtio-mem {}: {e}", self.id))
    }

    /// Starts again what [`pause`](Self::pause) stopped.
    pub fn resume(&self) {
        self.function().resume();
    }

    /// The PCI function's and the device's state (paused).
    pub fn saved(&self) -> Result<(VirtioPciState, MemDeviceState), String> {
        let function = self.function();
        let pci = function
            .state()
            .map_err(|e| format!("virtio-mem {}: {e}", self.id))?;
        let mem = function.device().saved_state().ok_or_else(|| {
            format!(
                "virtio-mem {}: the device is broken (its thread panicked): its state is lost",
                self.id
            )
        })?;
        Ok((pci, mem))
    }

    /// Freezes the plugged blocks for a live migration: from here on PLUG, UNPLUG and
    /// UNPLUG_ALL are answered BUSY, and the state returned (with its bitmap) stays true
    /// until [`thaw`](Self::thaw). The device thread is stopped and started again around
    /// it, under the function's lock, so no request is half-handled.
    pub fn freeze(&self) -> Result<(VirtioPciState, MemDeviceState), String> {
        let mut function = self.function();
        let failed = |e: &dyn std::fmt::Display| format!("virtio-mem {}: {e}", self.id);
        function.pause().map_err(|e| failed(&e))?;
        let frozen = if function.device_mut().set_busy(true) {
            let mem = function.device().saved_state();
            match (function.state(), mem) {
                (Ok(pci), Some(mem)) => Ok((pci, mem)),
                (Err(e), _) => Err(failed(&e)),
                (_, None) => Err(failed(&"its state is lost")),
            }
        } else {
            Err(failed(&"the device is broken (its thread panicked)"))
        };
        if frozen.is_err() {
            function.device_mut().set_busy(false);
        }
        function.resume();
        frozen
    }

    /// Ends [`freeze`](Self::freeze): requests are served again, and the driver hears a
    /// configuration-change interrupt (at the restart of the device thread), so that a
    /// request it got BUSY for is retried at once rather than after Linux's 50 s timer.
    pub fn thaw(&self) {
        let mut function = self.function();
        if let Err(e) = function.pause() {
            log::error!("virtio-mem {}: stopping for the end of BUSY: {e}", self.id);
        }
        function.device_mut().set_busy(false);
        function.resume();
    }

    /// The KVM memslots holding `mem`'s plugged blocks (every slot of the region when it
    /// is not protected), as mapped.
    pub fn mapped_slots(&self, mem: &MemDeviceState) -> Vec<hypervisor::MemoryRegion> {
        let r = &self.region;
        let layout = SlotLayout::new(r.size, r.slot_size);
        let mut slots: Vec<usize> = if r.protect {
            mem.plugged
                .iter()
                .filter(|run| run[1] > 0)
                .flat_map(|&[first, count]| {
                    layout.touching(first * r.block_size, count * r.block_size)
                })
                .collect()
        } else {
            (0..layout.count()).collect()
        };
        slots.sort_unstable();
        slots.dedup();
        slots
            .into_iter()
            .map(|index| {
                let (offset, len) = layout.range(index);
                hypervisor::MemoryRegion {
                    slot: r.first_slot + index as u32,
                    guest_addr: r.addr + offset,
                    size: len,
                    host_addr: r.host_addr + offset,
                    log_dirty: false,
                }
            })
            .collect()
    }

    /// Where the plugged blocks of `mem` (this device's state) are in host memory.
    pub fn plugged_host_ranges(&self, mem: &MemDeviceState) -> Vec<HostRange> {
        mem.plugged
            .iter()
            .map(|&[first, count]| HostRange {
                gpa: self.region.addr + first * self.region.block_size,
                host: self.region.host_addr + first * self.region.block_size,
                len: count * self.region.block_size,
            })
            .collect()
    }

    /// Brings back the PCI function's state after the device was created from its saved
    /// state, and moves its BARs where the guest had them.
    pub fn restore_function(&self, state: &VirtioPciState, pci: &PciHost) -> Result<(), String> {
        let mut function = self.function();
        let moves = function
            .restore(state)
            .map_err(|e| format!("virtio-mem {}: {e}", self.id))?;
        for change in moves {
            pci.follow_bar_move(self.slot, &mut *function, &change)
                .map_err(|e| format!("virtio-mem {}: {e}", self.id))?;
        }
        Ok(())
    }

    /// Starts the restored device if it ran (guest memory must hold its queues).
    pub fn start_restored(&self) -> Result<(), String> {
        self.function()
            .start_restored()
            .map_err(|e| format!("virtio-mem {}: {e}", self.id))
    }
}
