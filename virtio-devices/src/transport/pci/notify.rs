//! Queue notifications: one eventfd per queue, registered with the hypervisor as an
//! ioeventfd at the queue's notification address in BAR 0, so that a driver's notify write
//! signals the device thread without leaving the kernel. Registered with no data match and
//! any access length: whatever the driver writes there is a notification.
//!
//! The registrations follow BAR 0 when the guest moves it. A notify write that reaches the
//! VMM anyway (before registration, or through the PCI configuration access capability) is
//! turned into the same eventfd write by [`QueueNotifiers::notify`].

use std::sync::Arc;

use hypervisor::{IoEventAddress, Vm};
use vmm_sys_util::eventfd::EventFd;

use super::error::VirtioPciError;
use super::layout::BarLayout;

/// The notification eventfds of a device's queues and where they are registered.
pub struct QueueNotifiers {
    vm: Arc<dyn Vm>,
    layout: BarLayout,
    events: Vec<EventFd>,
    /// BAR 0's address while the eventfds are registered.
    registered_at: Option<u64>,
}

impl QueueNotifiers {
    /// One non-blocking eventfd per queue of `layout`, not registered yet.
    pub fn new(vm: Arc<dyn Vm>, layout: BarLayout) -> Result<Self, VirtioPciError> {
        let events = (0..layout.queues())
            .map(|queue| {
                EventFd::new(libc::EFD_NONBLOCK)
                    .map_err(|source| VirtioPciError::EventFd { queue, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(QueueNotifiers {
            vm,
            layout,
            events,
            registered_at: None,
        })
    }

    /// Queue `queue`'s eventfd.
    pub fn event(&self, queue: u16) -> Option<&EventFd> {
        self.events.get(usize::from(queue))
    }

    /// The guest-physical notification address of `queue` with BAR 0 at `bar`.
    fn address(&self, bar: u64, queue: u16) -> IoEventAddress {
        IoEventAddress::Mmio(bar.wrapping_add(self.layout.notify_offset(queue)))
    }

    /// Registers every eventfd for BAR 0 at `bar`, first dropping the registrations at the
    /// old address if any. All or nothing: on failure none is registered.
    pub fn register(&mut self, bar: u64) -> Result<(), VirtioPciError> {
        self.unregister();
        for (i, event) in self.events.iter().enumerate() {
            // `events` has one entry per queue, at most 1024.
            let queue = i as u16;
            let addr = self.address(bar, queue);
            if let Err(source) = self.vm.register_ioevent(event, addr, None) {
                self.unregister_first(bar, i);
                let (IoEventAddress::Mmio(addr) | IoEventAddress::Pio(addr)) = addr;
                return Err(VirtioPciError::IoEvent {
                    queue,
                    addr,
                    source,
                });
            }
        }
        self.registered_at = Some(bar);
        Ok(())
    }

    /// Drops every registration (nothing when not registered).
    pub fn unregister(&mut self) {
        if let Some(bar) = self.registered_at.take() {
            self.unregister_first(bar, self.events.len());
        }
    }

    /// Drops the registrations of the first `count` queues at BAR address `bar`.
    fn unregister_first(&self, bar: u64, count: usize) {
        for (i, event) in self.events.iter().take(count).enumerate() {
            let addr = self.address(bar, i as u16);
            if let Err(e) = self.vm.unregister_ioevent(event, addr, None) {
                log::warn!("virtio-pci: cannot unregister the ioeventfd at {addr:?}: {e}");
            }
        }
    }

    /// A notify write at `offset` inside the notification area reached the VMM: signal the
    /// queue it names. Writes outside any queue's slot are ignored.
    pub fn notify(&self, offset: u64) {
        let slot = offset / u64::from(super::layout::NOTIFY_OFF_MULTIPLIER);
        let Some(event) = u16::try_from(slot).ok().and_then(|q| self.event(q)) else {
            log::debug!("virtio-pci: notify write at {offset:#x} names no queue");
            return;
        };
        if let Err(e) = event.write(1) {
            log::warn!("virtio-pci: cannot signal queue {slot}: {e}");
        }
    }
}

impl Drop for QueueNotifiers {
    fn drop(&mut self) {
        self.unregister();
    }
}
