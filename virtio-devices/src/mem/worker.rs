//! The device thread of a running virtio-mem device (`virtio-mem-<id>`): an epoll loop over
//! the guest-request queue's notification eventfd, the resize eventfd and a kill eventfd.
//!
//! For each descriptor chain: [`handle_chain`], add it to the used ring, time it, publish the
//! status. After a batch, one queue interrupt (event-index suppression is honoured when the
//! driver negotiated it), then the discards of the batch's unplugs, which were held until the
//! guest had its answers ([`DeferredDiscard`]). A malformed chain (docs/virtio-mem.md §1.5, §3) is logged, the device is
//! marked DEVICE_NEEDS_RESET with a configuration-change interrupt, and the queue is left
//! alone until the driver resets the device; resizes are still served. On a kill the thread
//! hands the state and backend back.

use std::sync::Arc;
use std::time::Instant;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::chain::handle_chain;
use super::deferred::DeferredDiscard;
use super::shared::{MemShared, PluggedSizeChange};
use super::state::{BlockBackend, Discarded, NoopBackend, VirtioMemState};
use crate::device::{VirtioInterrupt, VirtioInterruptType};
use crate::view::GuestMemoryView;

/// What the device owns between activations: the memory state and the backend.
pub struct MemCore {
    /// Bitmap, sizes, counters.
    pub state: VirtioMemState,
    /// Populates and discards host memory.
    pub backend: Box<dyn BlockBackend + Send>,
}

/// epoll tokens.
const QUEUE: u64 = 0;
const RESIZE: u64 = 1;
const KILL: u64 = 2;

/// Everything the device thread runs with.
pub struct Worker {
    /// The device id, for logs.
    pub id: String,
    /// State and backend.
    pub core: MemCore,
    /// Guest memory, loaded around each batch.
    pub mem: Arc<GuestMemoryView>,
    /// The guest-request queue.
    pub queue: Queue,
    /// Its index, for the queue interrupt.
    pub queue_index: u16,
    /// Signalled when the driver notifies the queue.
    pub queue_event: EventFd,
    /// Signalled to stop the thread.
    pub kill: EventFd,
    /// Status publication and resizes.
    pub shared: Arc<MemShared>,
    /// Interrupts to the driver.
    pub interrupt: Arc<dyn VirtioInterrupt>,
    /// A plugged-size change of the batch being handled, told once the batch has settled
    /// (the host has the unplugged memory back).
    pub held_change: Option<PluggedSizeChange>,
    /// The driver broke the protocol: the queue is left alone until a device reset.
    pub queue_broken: bool,
}

/// The epoll instance of a worker, set up before the thread starts so that failures are
/// reported by `activate`.
pub fn worker_epoll(worker: &Worker) -> std::io::Result<Epoll> {
    use std::os::fd::AsRawFd;
    let epoll = Epoll::new()?;
    for (fd, token) in [
        (worker.queue_event.as_raw_fd(), QUEUE),
        (worker.shared.wake_event().as_raw_fd(), RESIZE),
        (worker.kill.as_raw_fd(), KILL),
    ] {
        epoll.ctl(
            ControlOperation::Add,
            fd,
            EpollEvent::new(EventSet::IN, token),
        )?;
    }
    Ok(epoll)
}

impl Worker {
    /// Runs until killed; returns itself, to be run again (after a pause) or to give back
    /// the state and backend.
    pub fn run(mut self, epoll: Epoll) -> Worker {
        let mut events = [EpollEvent::default(); 3];
        loop {
            let n = match epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::error!("{}: epoll failed, the device stops: {e}", self.id);
                    self.broken();
                    return self;
                }
            };
            let mut tokens = [false; 3];
            for event in &events[..n] {
                if let Some(seen) = usize::try_from(event.data())
                    .ok()
                    .and_then(|t| tokens.get_mut(t))
                {
                    *seen = true;
                }
            }
            if tokens[KILL as usize] {
                drain(&self.kill);
                return self;
            }
            if tokens[RESIZE as usize] {
                drain(self.shared.wake_event());
                self.publish(None);
            }
            if tokens[QUEUE as usize] {
                drain(&self.queue_event);
                if !self.queue_broken {
                    self.queue_broken = !self.process_queue();
                }
                self.core.state.count_notification();
                self.publish(None);
            }
        }
    }

    /// Handles every available chain. Returns false when the driver broke the protocol.
    fn process_queue(&mut self) -> bool {
        // The backend is the batch's for as long as it holds discards.
        let mut backend = std::mem::replace(&mut self.core.backend, Box::new(NoopBackend));
        let mut deferred = DeferredDiscard::new(&mut *backend);
        let mut used = false;
        let view = self.mem.clone();
        let mem = view.load();
        let healthy = loop {
            let chain = match self.queue.iter(&*mem) {
                Ok(mut available) => available.next(),
                Err(e) => break self.fail(&format!("the available ring is invalid: {e}")),
            };
            let Some(chain) = chain else {
                break true;
            };
            let start = Instant::now();
            let head = chain.head_index();
            let log = self.shared.write_log();
            if log.is_recording() {
                // What the device may write: the chain's device-writable buffers.
                for desc in chain.clone().filter(|d| d.is_write_only()) {
                    log.record(desc.addr().0, u64::from(desc.len()));
                }
            }
            match handle_chain(&mut self.core.state, &*mem, chain, &mut deferred) {
                Ok(len) => {
                    if let Err(e) = self.queue.add_used(&*mem, head, len) {
                        break self.fail(&format!("the used ring is invalid: {e}"));
                    }
                    // The used ring: flags, index, the ring and the avail event.
                    let ring = 6 + 8 * u64::from(self.queue.size());
                    log.record(self.queue.used_ring(), ring);
                    used = true;
                    let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    self.publish(Some(ns));
                }
                Err(e) => {
                    self.publish(None);
                    break self.fail(&e.to_string());
                }
            }
        };
        if used {
            self.signal_used(&mem);
        }
        let mut discarded = deferred.finish();
        // Guest memory is put down before the backend settles: settling may protect memory,
        // and waits until no thread holds a view that still contains it.
        drop(mem);
        discarded.extend(backend.settle());
        self.core.backend = backend;
        self.account(discarded);
        if let Some(change) = self.held_change.take() {
            self.shared.plugged_size_changed(change);
        }
        healthy
    }

    /// Records the batch's discards; a failed one is logged and counted (the guest was
    /// already told the blocks are unplugged, which they are; only their host memory stays).
    fn account(&mut self, discarded: Discarded) {
        for ns in discarded.times_ns {
            self.shared.record_discard(ns);
        }
        if discarded.failures.is_empty() {
            return;
        }
        let addr = self.core.state.addr();
        for (offset, len, e) in &discarded.failures {
            self.core.state.count_discard_error();
            let start = addr.saturating_add(*offset);
            log::warn!(
                "{}: giving back the host memory of unplugged [{start:#x}, {:#x}) failed: {e}",
                self.id,
                start.saturating_add(*len)
            );
        }
        self.publish(None);
    }

    /// Interrupts the driver for used buffers, unless it asked not to be (event index).
    fn signal_used(&mut self, mem: &vm_memory::GuestMemoryMmap) {
        let needed = self.queue.needs_notification(mem).unwrap_or(true);
        if needed {
            let queue = VirtioInterruptType::Queue(self.queue_index);
            if let Err(e) = self.interrupt.trigger(queue) {
                log::warn!("{}: queue interrupt: {e}", self.id);
            }
        }
    }

    /// Publishes the status; sends the configuration-change interrupt after a resize and
    /// tells the listener about a plugged-size change.
    fn publish(&mut self, latency_ns: Option<u64>) {
        let published = self.shared.publish(&mut self.core.state, latency_ns);
        if published.config_changed {
            if let Err(e) = self.interrupt.trigger(VirtioInterruptType::Config) {
                log::warn!("{}: configuration-change interrupt: {e}", self.id);
            }
        }
        if let Some(change) = published.plugged {
            // Told after the batch settles (process_queue), merged with the batch's others.
            self.held_change = Some(match self.held_change {
                Some(held) => PluggedSizeChange {
                    previous: held.previous,
                    ..change
                },
                None => change,
            });
        }
    }

    /// The driver broke the protocol: DEVICE_NEEDS_RESET. Returns false.
    fn fail(&mut self, reason: &str) -> bool {
        log::warn!(
            "{}: malformed guest request, the device needs a reset: {reason}",
            self.id
        );
        self.broken();
        false
    }

    /// The device cannot serve its queue (a malformed request, or a thread that could not
    /// start or lost its epoll): DEVICE_NEEDS_RESET and the configuration interrupt, so the
    /// driver resets it rather than wait forever.
    pub fn broken(&self) {
        self.alarm().raise();
    }

    /// What tells the driver the device is broken, kept apart from the worker so that it
    /// outlives a panic of the thread.
    pub fn alarm(&self) -> BrokenAlarm {
        BrokenAlarm {
            id: self.id.clone(),
            shared: self.shared.clone(),
            interrupt: self.interrupt.clone(),
        }
    }
}

/// DEVICE_NEEDS_RESET and the configuration interrupt, for a device whose thread cannot go on.
pub struct BrokenAlarm {
    id: String,
    shared: Arc<MemShared>,
    interrupt: Arc<dyn VirtioInterrupt>,
}

impl BrokenAlarm {
    /// Sets DEVICE_NEEDS_RESET and interrupts.
    pub fn raise(&self) {
        self.shared.set_needs_reset();
        if let Err(e) = self.interrupt.set_needs_reset() {
            log::warn!("{}: {e}", self.id);
        }
    }
}

/// Resets a non-blocking eventfd's counter.
fn drain(event: &EventFd) {
    // EAGAIN when it was already 0: nothing to do.
    let _ = event.read();
}
