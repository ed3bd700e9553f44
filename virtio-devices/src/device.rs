//! What a virtio device is to a transport: the [`VirtioDevice`] trait, what it gets when the
//! driver starts it ([`ActivateContext`]), and how it interrupts the driver
//! ([`VirtioInterrupt`]).
//!
//! A device is passive until the driver sets DRIVER_OK: the transport then calls
//! [`VirtioDevice::activate`] with guest memory, the enabled queues and their notification
//! eventfds, and an interrupt object; the device starts its own thread. A device reset (the
//! driver writes 0 to the status) calls [`VirtioDevice::reset`], which stops that thread and
//! takes back whatever the thread owned, so that the device can be activated again.

use std::sync::Arc;

use crate::view::GuestMemoryView;

use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

/// Which interrupt a device raises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VirtioInterruptType {
    /// The device configuration changed (or the device needs a reset).
    Config,
    /// The device used buffers of queue `n`.
    Queue(u16),
}

/// An interrupt that could not be delivered. The device logs it; there is nothing else to do.
#[derive(Debug, thiserror::Error)]
pub enum InterruptError {
    /// The queue does not exist.
    #[error("virtio queue {0} does not exist")]
    NoSuchQueue(u16),
    /// The MSI-X vector could not be raised.
    #[error("cannot raise MSI-X vector {vector}: {source}")]
    Msi {
        /// The vector.
        vector: u16,
        /// What the MSI-X layer said.
        #[source]
        source: pci::MsiError,
    },
}

/// How a running device reaches the driver: interrupts and the DEVICE_NEEDS_RESET status bit.
/// Implemented by the transport; called from the device's thread.
pub trait VirtioInterrupt: Send + Sync {
    /// Raises the configuration-change interrupt or the interrupt of a queue. An interrupt the
    /// driver did not ask for (no MSI-X vector assigned) is not an error: nothing is sent.
    fn trigger(&self, interrupt: VirtioInterruptType) -> Result<(), InterruptError>;

    /// The device hit an error it cannot recover from (a protocol violation by the driver):
    /// sets DEVICE_NEEDS_RESET in the device status and raises the configuration-change
    /// interrupt, as the virtio specification requires once DRIVER_OK is set. The device
    /// stops using its queues until the driver resets it.
    fn set_needs_reset(&self) -> Result<(), InterruptError>;
}

/// Where a running queue stands: the next available entry the device will read, and the
/// next used entry it will write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueuePosition {
    /// The queue's index.
    pub index: u16,
    /// The device's next available ring index.
    pub next_avail: u16,
    /// The device's next used ring index.
    pub next_used: u16,
}

/// What a device gets when the driver sets DRIVER_OK.
pub struct ActivateContext {
    /// Guest memory: queues and buffers live here. Load it around each piece of work and
    /// put it down in between (see [`GuestMemoryView`]).
    pub mem: Arc<GuestMemoryView>,
    /// The feature bits the driver acknowledged (a subset of [`VirtioDevice::features`]).
    pub acked_features: u64,
    /// The queues the driver enabled, as `(index, queue, notification eventfd)`, in index
    /// order. The eventfd is signalled each time the driver notifies the queue. The queue's
    /// event-index mode is already set from `acked_features`.
    pub queues: Vec<(u16, Queue, EventFd)>,
    /// Interrupts to the driver.
    pub interrupt: Arc<dyn VirtioInterrupt>,
}

/// Why a device could not start. The transport logs it and sets DEVICE_NEEDS_RESET.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The device is already running.
    #[error("the device is already active")]
    AlreadyActive,
    /// A queue the device needs was not enabled by the driver.
    #[error("the driver did not enable queue {0}")]
    QueueNotEnabled(u16),
    /// The device lost its state earlier (its thread panicked) and cannot run again.
    #[error("the device is broken: its thread panicked earlier")]
    Broken,
    /// An eventfd or epoll instance could not be created.
    #[error("cannot create the device thread's {what}: {source}")]
    Io {
        /// What was being created.
        what: &'static str,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// The thread could not be started.
    #[error("cannot start the device thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// Why a device reset did not go cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    /// The device's thread panicked; what it owned is lost.
    #[error("the device thread panicked")]
    ThreadPanicked,
    /// The device's thread could not be told to stop.
    #[error("cannot signal the device thread to stop: {0}")]
    Kill(#[source] std::io::Error),
}

/// A virtio device, independent of the transport that exposes it.
pub trait VirtioDevice: Send {
    /// The virtio device ID (24 for virtio-mem).
    fn device_type(&self) -> u32;

    /// The maximum size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];

    /// The feature bits the device offers (including `VIRTIO_F_VERSION_1`).
    fn features(&self) -> u64;

    /// Whether the device can work with the feature bits the driver acknowledged (already
    /// known to be a subset of [`features`](Self::features)). When this says no, the
    /// transport refuses FEATURES_OK.
    fn features_acceptable(&self, acked: u64) -> bool {
        let _ = acked;
        true
    }

    /// Size in bytes of the device configuration space.
    fn config_size(&self) -> usize;

    /// A driver read of the device configuration space. Must accept any offset and length:
    /// bytes outside the space read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);

    /// A driver write to the device configuration space. Must accept any offset and length.
    fn write_config(&mut self, offset: u64, data: &[u8]);

    /// A counter that changes whenever the configuration space changes, so that the driver
    /// can tell a torn multi-access read (the virtio `config_generation`). The transport
    /// exposes its low 8 bits.
    fn config_generation(&self) -> u32 {
        0
    }

    /// The driver set DRIVER_OK: start the device (its own thread).
    fn activate(&mut self, context: ActivateContext) -> Result<(), ActivateError>;

    /// Device reset (the driver wrote 0 to the status): stop the device thread and take back
    /// what it owned, so that a later [`activate`](Self::activate) works. Device-specific
    /// state survives (virtio-mem keeps its plugged blocks). A device that is not active
    /// returns `Ok` at once.
    fn reset(&mut self) -> Result<(), ResetError>;

    /// System reset (the guest reboots): back to the state of a fresh device. Called by the
    /// transport after a device [`reset`](Self::reset). The default does nothing.
    fn system_reset(&mut self) {}

    /// Stops an active device's work without resetting it, for a snapshot: its thread
    /// finishes what it is doing and stops, and its state stays as it was. Returns where
    /// each queue it runs stands, which the transport saves. A device that is not active
    /// returns no queues. The default (a device without a thread) does nothing.
    fn pause(&mut self) -> Result<Vec<QueuePosition>, ResetError> {
        Ok(Vec::new())
    }

    /// Starts again what [`pause`](Self::pause) stopped; nothing when nothing was paused.
    fn resume(&mut self) -> Result<(), ActivateError> {
        Ok(())
    }
}
