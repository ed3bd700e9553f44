//! [`VirtioPciDevice`]: any [`VirtioDevice`] as a modern (virtio 1.x only) PCI function.
//!
//! Identity: vendor 0x1af4, device 0x1040 + device type, revision 1, subsystem vendor 0x1af4
//! and subsystem id equal to the device id, a class per device type. One 64-bit memory BAR
//! (BAR 0) holds the areas described in [`super::layout`], announced by the vendor
//! capabilities of [`super::capabilities`], and an MSI-X capability with one vector for
//! configuration changes and one per queue. With a line from the VMM
//! ([`VirtioPciDevice::set_intx`]) it also offers INTx for drivers that keep MSI-X off.

use std::sync::Arc;

use hypervisor::Vm;
use pci::{
    BarKind, BarRegion, BarReprogram, BarRequest, ConfigError, DeviceError, IntxLine,
    MsiInterruptGroup, MsixCapability, MsixConfig, PciConfiguration, PciDevice, PciHeader,
    COMMAND_INTX_DISABLE, COMMAND_STATUS_REGISTER, INTERRUPT_PIN_INTA,
};
use virtio_queue::{Queue, QueueT};

use super::capabilities::add_virtio_capabilities;
use super::common_cfg::{CommonConfig, CommonView, CommonWrite};
use super::error::VirtioPciError;
use super::interrupt::InterruptState;
use super::layout::{BarArea, BarLayout, MSIX_TABLE_OFFSET};
use super::notify::QueueNotifiers;
use super::pci_cfg::PciCfgWindow;
use super::state::{StateError, VirtioPciState};
use super::status::{next_status, StatusChange, FEATURES_OK};
use crate::device::{ActivateContext, VirtioDevice, VirtioInterrupt};
use crate::mem::VIRTIO_F_VERSION_1;
use crate::view::GuestMemoryView;

/// PCI vendor id of virtio devices.
pub const VIRTIO_PCI_VENDOR_ID: u16 = 0x1af4;
/// Modern virtio-pci device ids are this plus the virtio device type.
pub const VIRTIO_PCI_DEVICE_ID_BASE: u16 = 0x1040;
/// Revision id of modern-only devices.
pub const VIRTIO_PCI_REVISION: u8 = 1;
/// The virtio ring feature bit of event-index notification suppression.
const VIRTIO_RING_F_EVENT_IDX: u32 = virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;

/// The BAR holding everything.
const BAR_INDEX: u8 = 0;

/// The PCI class and subclass of a virtio device type: "other memory controller" for
/// virtio-mem, "unclassified" for the rest.
pub fn pci_class(device_type: u32) -> (u8, u8) {
    match device_type {
        crate::mem::VIRTIO_ID_MEM => (0x05, 0x80),
        _ => (0xff, 0x00),
    }
}

/// The number of MSI-X vectors a device of `queues` queues gets: one for configuration
/// changes, one per queue. The VMM sizes the device's [`MsiInterruptGroup`] with it.
pub fn msix_vector_count(queues: usize) -> u16 {
    queues.saturating_add(1).min(usize::from(u16::MAX)) as u16
}

/// A virtio device behind the modern virtio-pci transport; see the module doc.
pub struct VirtioPciDevice<D: VirtioDevice> {
    id: String,
    device: D,
    mem: Arc<GuestMemoryView>,
    config: PciConfiguration,
    layout: BarLayout,
    msix_cap_offset: usize,
    window: PciCfgWindow,
    common: CommonConfig,
    shared: Arc<InterruptState>,
    notifiers: QueueNotifiers,
    bar: Option<BarRegion>,
    /// Whether the VMM asked for ioeventfds: they then follow every BAR move, even after a
    /// registration at an intermediate address failed.
    ioevents_wanted: bool,
    active: bool,
    /// Where activation and reset go when they must not run on the thread that writes the
    /// status (a vCPU): see [`Self::set_deferred_work`].
    deferred: Option<DeferredWorkNotifier>,
    /// Deferred work waiting for [`Self::service_deferred`].
    pending: Option<DeferredWork>,
    /// The device's work is stopped for a snapshot ([`Self::pause`]).
    paused: bool,
}

/// Tells the thread that serves deferred work that a device has some.
pub type DeferredWorkNotifier = Arc<dyn Fn() + Send + Sync>;

/// Work the status register asked for and another thread does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DeferredWork {
    /// DRIVER_OK: start the device.
    Activate,
    /// A status write of 0 to a running device: stop it. The status reads as it was until
    /// it is done (the driver waits for it to read 0).
    Reset,
}

impl<D: VirtioDevice> VirtioPciDevice<D> {
    /// Wraps `device`, named `id` in logs. `mem` is guest memory as the device sees it
    /// (queues and buffers must lie in it); `msi` delivers the MSI-X vectors and must have
    /// [`msix_vector_count`]`(queues)` of them; `vm` registers the queue ioeventfds (see
    /// [`register_ioevents`](Self::register_ioevents)).
    pub fn new(
        id: impl Into<String>,
        device: D,
        mem: Arc<GuestMemoryView>,
        msi: Arc<dyn MsiInterruptGroup>,
        vm: Arc<dyn Vm>,
    ) -> Result<Self, VirtioPciError> {
        let max_sizes = device.queue_max_sizes().to_vec();
        let layout = BarLayout::new(max_sizes.len(), device.config_size())?;
        let queues = max_sizes
            .iter()
            .enumerate()
            .map(|(queue, &size)| {
                Queue::new(size).map_err(|_| VirtioPciError::QueueMaxSize { queue, size })
            })
            .collect::<Result<Vec<_>, _>>()?;

        let device_type = device.device_type();
        // Device types are small numbers (24 for virtio-mem); a larger one cannot be
        // expressed as a modern device id, and wraps like any other misconfiguration would.
        let device_id = VIRTIO_PCI_DEVICE_ID_BASE.wrapping_add(device_type as u16);
        let (class_code, subclass) = pci_class(device_type);
        let mut config = PciConfiguration::new(&PciHeader {
            vendor_id: VIRTIO_PCI_VENDOR_ID,
            device_id,
            revision_id: VIRTIO_PCI_REVISION,
            prog_if: 0,
            subclass,
            class_code,
            subsystem_vendor_id: VIRTIO_PCI_VENDOR_ID,
            subsystem_id: device_id,
        });
        let vectors = layout.msix_vectors();
        // Both offsets are below 64 KiB (BarLayout).
        let msix_cap = MsixCapability::new(
            vectors,
            BAR_INDEX,
            MSIX_TABLE_OFFSET as u32,
            BAR_INDEX,
            layout.pba_offset() as u32,
        )?;
        let msix_cap_offset = msix_cap.add_to(&mut config)?;
        let pci_cfg = add_virtio_capabilities(&mut config, &layout)?;
        let msix = MsixConfig::new(vectors, msi)?;

        Ok(VirtioPciDevice {
            id: id.into(),
            device,
            mem,
            config,
            layout,
            msix_cap_offset,
            window: PciCfgWindow::new(pci_cfg),
            common: CommonConfig::new(queues),
            shared: Arc::new(InterruptState::new(layout.queues(), msix)),
            notifiers: QueueNotifiers::new(vm, layout)?,
            bar: None,
            ioevents_wanted: false,
            active: false,
            deferred: None,
            pending: None,
            paused: false,
        })
    }

    /// The wrapped device.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The wrapped device, to change.
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    /// The device status byte as the driver reads it.
    pub fn device_status(&self) -> u8 {
        self.shared.status()
    }

    /// Where BAR 0 is, once the bus placed it.
    pub fn bar(&self) -> Option<BarRegion> {
        self.bar
    }

    /// The BAR layout.
    pub fn layout(&self) -> &BarLayout {
        &self.layout
    }

    /// Whether the device is running: DRIVER_OK was set and activation succeeded, and no
    /// reset came since.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// From now on, starting the device at DRIVER_OK and stopping a running device at a
    /// reset are left for [`Self::service_deferred`], and `notify` is called to ask for it:
    /// the thread that writes the status (a vCPU) then never starts or joins a device
    /// thread. Until the work is done the device looks as it would in the middle of it:
    /// DRIVER_OK set and requests queued, or the old status read back after a reset.
    pub fn set_deferred_work(&mut self, notify: DeferredWorkNotifier) {
        self.deferred = Some(notify);
    }

    /// Does the work the status register left (see [`Self::set_deferred_work`]).
    pub fn service_deferred(&mut self) {
        match self.pending.take() {
            Some(DeferredWork::Activate) => self.activate(),
            Some(DeferredWork::Reset) => self.reset_device(),
            None => {}
        }
    }

    /// Leaves `work` for the serving thread.
    fn defer(&mut self, work: DeferredWork) {
        self.pending = Some(work);
        if let Some(notify) = &self.deferred {
            notify();
        }
    }

    /// Stops the device's work for a snapshot (deferred work is done first) and records
    /// where it stands in each queue. The guest must not run meanwhile: its vCPUs are paused.
    pub fn pause(&mut self) -> Result<(), StateError> {
        self.service_deferred();
        if !self.active || self.paused {
            return Ok(());
        }
        for p in self.device.pause().map_err(StateError::Pause)? {
            self.common.set_position(p.index, p.next_avail, p.next_used);
        }
        self.paused = true;
        Ok(())
    }

    /// Starts again what [`Self::pause`] stopped. A device that cannot start is marked
    /// DEVICE_NEEDS_RESET, as at a failed activation.
    pub fn resume(&mut self) {
        if !std::mem::take(&mut self.paused) {
            return;
        }
        if let Err(e) = self.device.resume() {
            log::error!("{}: cannot start again after a pause: {e}", self.id);
            if let Err(e) = self.shared.set_needs_reset() {
                log::error!("{}: {e}", self.id);
            }
        }
    }

    /// The function's state, to save; the device's own is the device's to give. An active
    /// device must be paused.
    pub fn state(&self) -> Result<VirtioPciState, StateError> {
        if self.active && !self.paused {
            return Err(StateError::NotPaused);
        }
        let (device_feature_select, driver_feature_select, driver_features, queue_select, queues) =
            self.common.saved();
        let (status, isr, config_vector, queue_vectors) = self.shared.saved();
        Ok(VirtioPciState {
            config: self.config.state(),
            msix: self.shared.msix().state(),
            device_feature_select,
            driver_feature_select,
            driver_features,
            queue_select,
            queues,
            status,
            isr,
            config_vector,
            queue_vectors,
            active: self.active,
        })
    }

    /// Brings `state` back into this function, which the driver must not have touched,
    /// over a device already holding its own saved state. Returns the BAR moves the saved
    /// configuration space makes, which the bus must follow (`pci::PciBus::follow_bar_move`)
    /// before [`Self::start_restored`]. Another device's or an impossible state is refused;
    /// the function may then be half restored and must be thrown away (the VMM drops the
    /// whole VM being restored).
    pub fn restore(&mut self, state: &VirtioPciState) -> Result<Vec<BarReprogram>, StateError> {
        if self.active || self.shared.status() != 0 {
            return Err(StateError::NotFresh);
        }
        let offered = self.device.features();
        if state.driver_features & !offered != 0 {
            return Err(StateError::Features {
                driver: state.driver_features,
                offered,
            });
        }
        self.common.restore(state)?;
        self.shared.restore(
            state.status,
            state.isr,
            state.config_vector,
            &state.queue_vectors,
        )?;
        let moves = self.config.restore(&state.config)?;
        self.shared.msix().restore(&state.msix)?;
        self.shared
            .set_intx_disabled(self.config.command() & COMMAND_INTX_DISABLE != 0);
        self.paused = state.active;
        Ok(moves)
    }

    /// After [`Self::restore`], and once guest memory holds what it held: starts the
    /// device when it was running, and has it look at its queues at once (a request the
    /// guest had made before the snapshot gets its answer without another notification).
    pub fn start_restored(&mut self) -> Result<(), StateError> {
        if !std::mem::take(&mut self.paused) {
            return Ok(());
        }
        let context = self.activate_context().ok_or_else(|| {
            StateError::Activate("a ready queue does not lie in guest memory".into())
        })?;
        let ready: Vec<u16> = context.queues.iter().map(|q| q.0).collect();
        self.device
            .activate(context)
            .map_err(|e| StateError::Activate(e.to_string()))?;
        self.active = true;
        for index in ready {
            if let Some(Err(e)) = self.notifiers.event(index).map(|e| e.write(1)) {
                log::warn!("{}: waking queue {index}: {e}", self.id);
            }
        }
        Ok(())
    }

    /// Gives the function INTx: its interrupt pin reads INTA#, and while the driver keeps
    /// MSI-X disabled every interrupt sets the ISR and pulses `line`. The VMM routes the pin
    /// in the DSDT.
    pub fn set_intx(&mut self, line: Arc<dyn IntxLine>) {
        self.config.set_interrupt_pin(INTERRUPT_PIN_INTA);
        self.shared.set_intx(line);
    }

    /// Registers one ioeventfd per queue at its notification address in BAR 0. Call it once
    /// the bus has placed the BAR; afterwards the registrations follow BAR moves. Without it
    /// the device still works, each notification then costing an exit to the VMM.
    pub fn register_ioevents(&mut self) -> Result<(), VirtioPciError> {
        let bar = self.bar.ok_or(VirtioPciError::BarNotPlaced)?;
        self.ioevents_wanted = true;
        self.notifiers.register(bar.addr)
    }

    /// System reset (guest reboot): a device reset, MSI-X back to disabled with every vector
    /// masked, then the device's own [`VirtioDevice::system_reset`] (virtio-mem unplugs
    /// everything). BARs and ioeventfds stay where they are.
    pub fn system_reset(&mut self) {
        self.pending = None;
        self.reset_device();
        let reg = self.msix_cap_offset / 4;
        let control = self.config.read_register(reg) & 0xffff;
        // Clearing the enable and function-mask bits of message control (the high half).
        let _ = self.config.write_register(reg, 0, &control.to_le_bytes());
        {
            let mut msix = self.shared.msix();
            msix.set_message_control(0);
            msix.reset();
        }
        self.device.system_reset();
    }

    fn view(&self) -> CommonView<'_> {
        CommonView {
            shared: &self.shared,
            device_features: self.device.features(),
            config_generation: self.device.config_generation() as u8,
        }
    }

    /// Device reset: stop the device, reset queues, status, ISR and vector assignments.
    fn reset_device(&mut self) {
        if self.active {
            if let Err(e) = self.device.reset() {
                log::error!("{}: device reset: {e}", self.id);
            }
            self.active = false;
        }
        self.common.reset();
        self.shared.reset();
    }

    /// Whether the driver's features can be accepted: offered, modern, and fine with the
    /// device.
    fn features_acceptable(&self) -> bool {
        let acked = self.common.driver_features();
        let offered = self.device.features();
        acked & !offered == 0
            && acked & (1 << VIRTIO_F_VERSION_1) != 0
            && self.device.features_acceptable(acked)
    }

    /// The driver wrote `written` to `device_status`.
    fn write_status(&mut self, written: u8) {
        if self.pending == Some(DeferredWork::Reset) {
            // A driver waits for the reset to read 0 before it writes again.
            log::debug!(
                "{}: status write {written:#x} during a reset, ignored",
                self.id
            );
            return;
        }
        let activate = loop {
            let old = self.shared.status();
            match next_status(old, written, || self.features_acceptable()) {
                StatusChange::Reset => {
                    if self.deferred.is_some() && self.active {
                        self.defer(DeferredWork::Reset);
                    } else {
                        // Nothing runs (an activation not yet done is dropped): no thread
                        // to stop, so it is done here.
                        self.pending = None;
                        self.reset_device();
                    }
                    return;
                }
                StatusChange::Set { status, activate } => {
                    if self.shared.replace_status(old, status) {
                        if written & FEATURES_OK != 0 && status & FEATURES_OK == 0 {
                            log::warn!(
                                "{}: refusing the driver's features {:#x}",
                                self.id,
                                self.common.driver_features()
                            );
                        }
                        break activate;
                    }
                }
            }
        };
        if activate {
            if self.deferred.is_some() {
                self.defer(DeferredWork::Activate);
            } else {
                self.activate();
            }
        }
    }

    /// DRIVER_OK was just set: hand the enabled queues to the device and start it. On
    /// failure the device is marked DEVICE_NEEDS_RESET.
    fn activate(&mut self) {
        match self.activate_context() {
            Some(context) => match self.device.activate(context) {
                Ok(()) => {
                    self.active = true;
                    return;
                }
                Err(e) => log::error!("{}: cannot activate: {e}", self.id),
            },
            None => log::warn!("{}: the driver set DRIVER_OK with a broken queue", self.id),
        }
        if let Err(e) = self.shared.set_needs_reset() {
            log::error!("{}: {e}", self.id);
        }
    }

    /// The context for [`VirtioDevice::activate`], or `None` when an enabled queue does not
    /// lie in guest memory or an eventfd cannot be duplicated.
    fn activate_context(&self) -> Option<ActivateContext> {
        let acked = self.common.driver_features();
        let event_idx = acked & (1 << VIRTIO_RING_F_EVENT_IDX) != 0;
        let mut queues = Vec::new();
        for (i, q) in self.common.queues().iter().enumerate() {
            if !q.ready() {
                continue;
            }
            if !q.is_valid(&*self.mem.load()) {
                return None;
            }
            // At most 1024 queues (BarLayout).
            let index = i as u16;
            let event = match self.notifiers.event(index).map(|e| e.try_clone()) {
                Some(Ok(e)) => e,
                Some(Err(e)) => {
                    log::error!("{}: cannot duplicate queue {i}'s eventfd: {e}", self.id);
                    return None;
                }
                None => return None,
            };
            // Cannot fail: the state comes from a queue that was valid.
            let mut queue = Queue::try_from(q.state()).ok()?;
            queue.set_event_idx(event_idx);
            queues.push((index, queue, event));
        }
        Some(ActivateContext {
            mem: self.mem.clone(),
            acked_features: acked,
            queues,
            interrupt: self.shared.clone(),
        })
    }

    fn read_bar0(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        match self.layout.area(offset) {
            Some(BarArea::Common(o)) => self.common.read(o, data, &self.view()),
            Some(BarArea::Isr(0)) => {
                if let Some(first) = data.first_mut() {
                    *first = self.shared.take_isr();
                }
            }
            Some(BarArea::Device(o)) => self.device.read_config(o, data),
            Some(BarArea::MsixTable(o)) => self.shared.msix().read_table(o, data),
            Some(BarArea::MsixPba(o)) => self.shared.msix().read_pba(o, data),
            Some(BarArea::Isr(_) | BarArea::Notify(_)) | None => {}
        }
    }

    fn write_bar0(&mut self, offset: u64, data: &[u8]) {
        match self.layout.area(offset) {
            Some(BarArea::Common(o)) => {
                let view = CommonView {
                    shared: &self.shared,
                    device_features: self.device.features(),
                    config_generation: self.device.config_generation() as u8,
                };
                if let CommonWrite::Status(v) = self.common.write(o, data, &view) {
                    self.write_status(v);
                }
            }
            Some(BarArea::Device(o)) => self.device.write_config(o, data),
            Some(BarArea::Notify(o)) => self.notifiers.notify(o),
            Some(BarArea::MsixTable(o)) => self.shared.msix().write_table(o, data),
            Some(BarArea::MsixPba(_) | BarArea::Isr(_)) | None => {
                log::debug!("{}: ignoring a write at BAR 0 offset {offset:#x}", self.id)
            }
        }
    }

    /// A read of `pci_cfg_data`: performs the BAR read the window describes.
    fn window_read(&mut self) {
        if let Some(access) = self.window.access(&self.config) {
            let mut data = vec![0u8; access.len];
            self.read_bar0(access.offset, &mut data);
            self.window.set_data(&mut self.config, &data);
        }
    }

    /// A write of `pci_cfg_data`: performs the BAR write the window describes.
    fn window_write(&mut self) {
        if let Some(access) = self.window.access(&self.config) {
            let data = self.window.data(&self.config, access.len);
            self.write_bar0(access.offset, &data);
        }
    }
}

impl<D: VirtioDevice> PciDevice for VirtioPciDevice<D> {
    fn config(&self) -> &PciConfiguration {
        &self.config
    }

    fn config_mut(&mut self) -> &mut PciConfiguration {
        &mut self.config
    }

    fn bar_requests(&self) -> Vec<BarRequest> {
        vec![BarRequest {
            index: BAR_INDEX,
            size: self.layout.bar_size(),
            kind: BarKind::Memory64,
            prefetchable: false,
        }]
    }

    fn assign_bar(&mut self, bar: &BarRegion) -> Result<(), ConfigError> {
        self.config.add_bar(bar)?;
        if bar.index == BAR_INDEX {
            self.bar = Some(*bar);
        }
        Ok(())
    }

    fn read_config_register(&mut self, reg: usize) -> u32 {
        if self.window.is_data_register(reg) {
            self.window_read();
        }
        self.config.read_register(reg)
    }

    fn write_config_register(
        &mut self,
        reg: usize,
        offset: u64,
        data: &[u8],
    ) -> Option<BarReprogram> {
        let moved = self.config.write_register(reg, offset, data);
        self.shared
            .msix()
            .config_written(&self.config, self.msix_cap_offset, reg);
        if reg == COMMAND_STATUS_REGISTER {
            self.shared
                .set_intx_disabled(self.config.command() & COMMAND_INTX_DISABLE != 0);
        }
        if self.window.is_data_register(reg) {
            self.window_write();
        }
        moved
    }

    fn read_bar(&mut self, index: u8, offset: u64, data: &mut [u8]) {
        if index == BAR_INDEX {
            self.read_bar0(offset, data);
        } else {
            data.fill(0);
        }
    }

    fn write_bar(&mut self, index: u8, offset: u64, data: &[u8]) {
        if index == BAR_INDEX {
            self.write_bar0(offset, data);
        }
    }

    fn move_bar(&mut self, change: &BarReprogram) -> Result<(), DeviceError> {
        if change.index != BAR_INDEX {
            return Ok(());
        }
        if let Some(bar) = self.bar.as_mut() {
            bar.addr = change.new_addr;
        }
        if self.ioevents_wanted {
            self.notifiers.register(change.new_addr)?;
        }
        Ok(())
    }
}

impl<D: VirtioDevice> Drop for VirtioPciDevice<D> {
    fn drop(&mut self) {
        if self.active {
            if let Err(e) = self.device.reset() {
                log::error!("{}: stopping the device: {e}", self.id);
            }
        }
    }
}
