//! [`VirtioMem`]: the virtio-mem device as a [`VirtioDevice`]: one guest-request queue of
//! 128 entries, the feature bits and configuration space of [`VirtioMemState`], and a device
//! thread (the private `worker` module) while the driver runs it.
//!
//! The configuration space is read from the published status ([`super::VirtioMemStatus`]), so a
//! configuration read never waits for a request being handled. A device reset stops the
//! thread and keeps the plugged blocks (docs/virtio-mem.md §1.7); [`VirtioDevice::system_reset`]
//! unplugs everything. No `VIRTIO_RING_F_EVENT_IDX` or indirect descriptors are offered: the
//! Linux driver keeps one request in flight, so neither would save anything.

use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use virtio_queue::QueueT;
use vmm_sys_util::eventfd::EventFd;

use super::config::{features_acceptable, CONFIG_SPACE_SIZE, VIRTIO_ID_MEM};
use super::handle::VirtioMemHandle;
use super::shared::MemShared;
use super::state::{BlockBackend, VirtioMemState};
use super::worker::{worker_epoll, MemCore, Worker};
use crate::device::{
    ActivateContext, ActivateError, QueuePosition, ResetError, VirtioDevice, VirtioInterruptType,
};

/// Size of the guest-request queue (docs/virtio-mem.md §1.1: what QEMU, Cloud Hypervisor and
/// Firecracker use).
pub const QUEUE_SIZE: u16 = 128;

/// A virtio-mem device that cannot be created.
#[derive(Debug, thiserror::Error)]
pub enum VirtioMemError {
    /// The resize eventfd could not be created.
    #[error("cannot create the virtio-mem resize eventfd: {0}")]
    EventFd(#[source] std::io::Error),
}

/// Run first thing in the device thread, before it handles any guest request (the VMM
/// installs the thread's seccomp filter with it). An error stops the thread before it serves
/// the queue.
pub type ThreadStartHook = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// A running device thread. It gives its worker back when it ends, `None` after a panic.
struct Running {
    kill: EventFd,
    thread: JoinHandle<Option<Worker>>,
}

/// The virtio-mem device; see the module doc.
pub struct VirtioMem {
    id: String,
    shared: Arc<MemShared>,
    /// The state while no thread runs; `None` while one does, or after it panicked.
    core: Option<MemCore>,
    running: Option<Running>,
    /// The thread's worker (state, queue, interrupt) while a pause stopped it.
    paused: Option<Worker>,
    /// Run at the start of each device thread.
    thread_start: Option<ThreadStartHook>,
    /// Refuse a driver that does not accept `VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE`.
    unplugged_inaccessible: bool,
}

impl VirtioMem {
    /// A device named `id` (its thread is `virtio-mem-<id>`) over `state`, populating and
    /// discarding host memory through `backend` (the VMM's `HostMemoryBackend` for the
    /// region's mapping).
    pub fn new(
        id: impl Into<String>,
        state: VirtioMemState,
        backend: impl BlockBackend + Send + 'static,
    ) -> Result<Self, VirtioMemError> {
        let shared = MemShared::new(&state).map_err(VirtioMemError::EventFd)?;
        Ok(VirtioMem {
            id: id.into(),
            shared: Arc::new(shared),
            core: Some(MemCore {
                state,
                backend: Box::new(backend),
            }),
            running: None,
            paused: None,
            thread_start: None,
            unplugged_inaccessible: true,
        })
    }

    /// Whether unplugged memory is inaccessible (the default): the driver must then accept
    /// `VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE`, or FEATURES_OK is refused.
    pub fn set_unplugged_inaccessible(&mut self, inaccessible: bool) {
        self.unplugged_inaccessible = inaccessible;
    }

    /// Sets what each device thread runs first (see [`ThreadStartHook`]).
    pub fn set_thread_start_hook(&mut self, hook: ThreadStartHook) {
        self.thread_start = Some(hook);
    }

    /// The device id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The VMM's handle: resize, status, plugged-size events.
    pub fn handle(&self) -> VirtioMemHandle {
        VirtioMemHandle::new(self.shared.clone())
    }

    /// Whether the device thread runs.
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Starts the thread over `core`. On failure `core` goes back to `self.core`.
    fn start(&mut self, context: ActivateContext, core: MemCore) -> Result<(), ActivateError> {
        let Some((index, queue, queue_event)) = context.queues.into_iter().find(|q| q.0 == 0)
        else {
            return self.give_back(core, ActivateError::QueueNotEnabled(0));
        };
        let kill = match EventFd::new(libc::EFD_NONBLOCK) {
            Ok(k) => k,
            Err(source) => {
                let what = "kill eventfd";
                return self.give_back(core, ActivateError::Io { what, source });
            }
        };
        self.spawn(Worker {
            id: self.id.clone(),
            core,
            mem: context.mem,
            queue,
            queue_index: index,
            queue_event,
            kill,
            shared: self.shared.clone(),
            interrupt: context.interrupt,
            held_change: None,
            queue_broken: false,
        })
    }

    /// Starts the device thread over `worker` (a new one, or one a pause stopped). On
    /// failure the state goes back to `self.core`.
    fn spawn(&mut self, worker: Worker) -> Result<(), ActivateError> {
        let kill = match worker.kill.try_clone() {
            Ok(k) => k,
            Err(source) => {
                let what = "kill eventfd";
                return self.give_back(worker.core, ActivateError::Io { what, source });
            }
        };
        let epoll = match worker_epoll(&worker) {
            Ok(e) => e,
            Err(source) => {
                let what = "epoll instance";
                return self.give_back(worker.core, ActivateError::Io { what, source });
            }
        };
        // The worker goes over a channel once the thread exists, so that a failed spawn
        // leaves it (and the device state) here.
        let (send, receive) = mpsc::channel::<(Worker, vmm_sys_util::epoll::Epoll)>();
        let hook = self.thread_start.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("virtio-mem-{}", self.id))
            .spawn(move || {
                let (worker, epoll) = receive.recv().ok()?;
                if let Some(Err(e)) = hook.as_deref().map(|hook| hook()) {
                    log::error!("{}: the device thread cannot start: {e}", worker.id);
                    // Not silently dead: the driver learns it must reset the device.
                    worker.broken();
                    return Some(worker);
                }
                // A panic ends the thread, not the VMM; the driver is told, as for a thread
                // that cannot start, and the device stays broken (its state went with the
                // thread) until the VM is reset.
                let alarm = worker.alarm();
                let id = worker.id.clone();
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker.run(epoll))) {
                    Ok(worker) => Some(worker),
                    Err(_) => {
                        log::error!("{id}: the device thread panicked; the device needs a reset");
                        alarm.raise();
                        None
                    }
                }
            });
        let thread = match spawned {
            Ok(t) => t,
            Err(e) => return self.give_back(worker.core, ActivateError::Spawn(e)),
        };
        if let Err(mpsc::SendError((worker, _))) = send.send((worker, epoll)) {
            // The thread is gone already; it cannot have panicked before receiving.
            let _ = thread.join();
            let e = std::io::Error::other("the device thread exited at once");
            return self.give_back(worker.core, ActivateError::Spawn(e));
        }
        self.running = Some(Running { kill, thread });
        Ok(())
    }

    /// Stops the running thread and takes its worker back.
    fn stop_thread(&mut self) -> Result<Option<Worker>, ResetError> {
        let Some(running) = self.running.take() else {
            return Ok(None);
        };
        if let Err(e) = running.kill.write(1) {
            self.running = Some(running);
            return Err(ResetError::Kill(e));
        }
        match running.thread.join() {
            Ok(Some(worker)) => Ok(Some(worker)),
            Ok(None) | Err(_) => {
                log::error!(
                    "{}: the device thread panicked; the device is broken",
                    self.id
                );
                Err(ResetError::ThreadPanicked)
            }
        }
    }

    /// The memory state to save: the device must not be running (not activated, or
    /// paused). `None` while its thread runs, or once a panic took the state.
    pub fn saved_state(&self) -> Option<super::MemDeviceState> {
        let core = match &self.paused {
            Some(worker) => Some(&worker.core),
            None if self.running.is_none() => self.core.as_ref(),
            None => None,
        };
        core.map(|c| c.state.saved())
    }

    /// Answers PLUG, UNPLUG and UNPLUG_ALL with BUSY (STATE is still served) while `busy`:
    /// a live migration keeps the plugged blocks as they were sent. The device must not be
    /// running (not activated, or paused); false when it is, or is broken.
    pub fn set_busy(&mut self, busy: bool) -> bool {
        let core = match self.paused.as_mut() {
            Some(worker) => Some(&mut worker.core),
            None if self.running.is_none() => self.core.as_mut(),
            None => None,
        };
        match core {
            Some(core) => {
                core.state.set_busy(busy);
                true
            }
            None => false,
        }
    }

    /// A failed start: keeps `core` for the next activation.
    fn give_back(&mut self, core: MemCore, error: ActivateError) -> Result<(), ActivateError> {
        self.core = Some(core);
        Err(error)
    }
}

impl VirtioDevice for VirtioMem {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_MEM
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        super::config::device_features(self.shared.node_id().is_some())
    }

    fn features_acceptable(&self, acked: u64) -> bool {
        let ok = features_acceptable(acked, self.unplugged_inaccessible);
        if !ok {
            log::warn!(
                "{}: refusing the driver's features {acked:#x}: it must accept VERSION_1{} \
                 (Linux 5.16 or later; or start the zone with unplugged_inaccessible=off)",
                self.id,
                if self.unplugged_inaccessible {
                    " and UNPLUGGED_INACCESSIBLE"
                } else {
                    ""
                }
            );
        }
        ok
    }

    fn config_size(&self) -> usize {
        CONFIG_SPACE_SIZE
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        self.shared.read_config(offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        log::debug!(
            "{}: ignoring a {}-byte write to the read-only configuration space at {offset:#x}",
            self.id,
            data.len()
        );
    }

    fn config_generation(&self) -> u32 {
        self.shared.config_generation()
    }

    fn activate(&mut self, context: ActivateContext) -> Result<(), ActivateError> {
        if self.running.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        let mut core = self.core.take().ok_or(ActivateError::Broken)?;
        // A resize asked for before the driver started is applied now.
        let published = self.shared.publish(&mut core.state, None);
        let interrupt = context.interrupt.clone();
        // Before the thread starts: a thread that fails at once marks the device broken, and
        // that must not be overwritten.
        self.shared.set_running(true, false);
        if let Err(e) = self.start(context, core) {
            self.shared.set_running(false, false);
            return Err(e);
        }
        if published.config_changed {
            if let Err(e) = interrupt.trigger(VirtioInterruptType::Config) {
                log::warn!("{}: configuration-change interrupt: {e}", self.id);
            }
        }
        if let Some(change) = published.plugged {
            self.shared.plugged_size_changed(change);
        }
        Ok(())
    }

    fn reset(&mut self) -> Result<(), ResetError> {
        let worker = match self.paused.take() {
            Some(worker) => worker,
            None => match self.stop_thread()? {
                Some(worker) => worker,
                None => return Ok(()),
            },
        };
        self.shared.set_running(false, false);
        self.core = Some(worker.core);
        Ok(())
    }

    fn pause(&mut self) -> Result<Vec<QueuePosition>, ResetError> {
        if self.paused.is_none() {
            self.paused = self.stop_thread()?;
        }
        let Some(worker) = self.paused.as_mut() else {
            return Ok(Vec::new());
        };
        // A resize asked for since the thread last looked goes into the state now, so that
        // a snapshot holds it; the driver hears of it at resume.
        self.shared.publish(&mut worker.core.state, None);
        Ok(vec![QueuePosition {
            index: worker.queue_index,
            next_avail: worker.queue.next_avail(),
            next_used: worker.queue.next_used(),
        }])
    }

    fn resume(&mut self) -> Result<(), ActivateError> {
        let Some(worker) = self.paused.take() else {
            return Ok(());
        };
        let interrupt = worker.interrupt.clone();
        self.spawn(worker)?;
        // What changed while paused (a resize) is announced; a spare interrupt only makes
        // the driver read the configuration again.
        if let Err(e) = interrupt.trigger(VirtioInterruptType::Config) {
            log::warn!("{}: configuration-change interrupt: {e}", self.id);
        }
        Ok(())
    }

    fn system_reset(&mut self) {
        if let Err(e) = self.reset() {
            log::error!("{}: stopping the device for a system reset: {e}", self.id);
        }
        let Some(core) = self.core.as_mut() else {
            return;
        };
        // A pending resize first, so that the usable region is recomputed from it.
        self.shared.publish(&mut core.state, None);
        if let Err(e) = core.state.system_reset(&mut *core.backend) {
            log::error!("{}: discarding the region at system reset: {e}", self.id);
        }
        for (offset, len, e) in core.backend.settle().failures {
            log::error!(
                "{}: giving back [{offset:#x}, +{len:#x}) of the region at system reset: {e}",
                self.id
            );
        }
        let published = self.shared.publish(&mut core.state, None);
        if let Some(change) = published.plugged {
            self.shared.plugged_size_changed(change);
        }
    }
}

impl Drop for VirtioMem {
    fn drop(&mut self) {
        if let Err(e) = self.reset() {
            log::error!("{}: stopping the device thread: {e}", self.id);
        }
    }
}

#[cfg(test)]
#[path = "device_tests.rs"]
mod tests;
