//! The transport state a running device touches from its own thread: the device status (for
//! DEVICE_NEEDS_RESET), the ISR byte, the MSI-X vector of configuration changes and of each
//! queue, and the MSI-X table. [`InterruptState`] implements [`VirtioInterrupt`] on them.
//!
//! It lives outside the PCI device's lock on purpose: a device reset holds that lock while it
//! waits for the device thread to stop, so the thread must be able to raise interrupts
//! without it.

use std::sync::atomic::{AtomicU16, AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard};

use pci::MsixConfig;

use super::status::{DEVICE_NEEDS_RESET, DRIVER_OK};
use crate::device::{InterruptError, VirtioInterrupt, VirtioInterruptType};

/// The vector value meaning "no MSI-X vector": no interrupt is sent.
pub const VIRTIO_MSI_NO_VECTOR: u16 = 0xffff;

/// ISR bit: a queue was used (only meaningful without MSI-X).
pub const ISR_QUEUE: u8 = 1 << 0;
/// ISR bit: the device configuration changed.
pub const ISR_CONFIG: u8 = 1 << 1;

/// Shared between the transport (vCPU threads) and the running device's thread.
pub struct InterruptState {
    status: AtomicU8,
    isr: AtomicU8,
    config_vector: AtomicU16,
    queue_vectors: Vec<AtomicU16>,
    msix: Mutex<MsixConfig>,
}

impl InterruptState {
    /// Status 0, ISR 0, every vector unassigned, for `queues` queues.
    pub fn new(queues: u16, msix: MsixConfig) -> Self {
        InterruptState {
            status: AtomicU8::new(0),
            isr: AtomicU8::new(0),
            config_vector: AtomicU16::new(VIRTIO_MSI_NO_VECTOR),
            queue_vectors: (0..queues)
                .map(|_| AtomicU16::new(VIRTIO_MSI_NO_VECTOR))
                .collect(),
            msix: Mutex::new(msix),
        }
    }

    /// The MSI-X table, pending bits and enable state.
    pub fn msix(&self) -> MutexGuard<'_, MsixConfig> {
        self.msix.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The device status byte.
    pub fn status(&self) -> u8 {
        self.status.load(Ordering::Acquire)
    }

    /// Replaces the status byte with `new` if it is still `old` (the device thread may set
    /// DEVICE_NEEDS_RESET at any time). Returns whether it did.
    pub fn replace_status(&self, old: u8, new: u8) -> bool {
        self.status
            .compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Reads the ISR byte and clears it (reading ISR acknowledges the interrupt).
    pub fn take_isr(&self) -> u8 {
        self.isr.swap(0, Ordering::AcqRel)
    }

    /// The vector of configuration-change interrupts.
    pub fn config_vector(&self) -> u16 {
        self.config_vector.load(Ordering::Acquire)
    }

    /// The vector of queue `queue`'s interrupts; [`VIRTIO_MSI_NO_VECTOR`] for no queue.
    pub fn queue_vector(&self, queue: u16) -> u16 {
        self.queue_vectors
            .get(usize::from(queue))
            .map_or(VIRTIO_MSI_NO_VECTOR, |v| v.load(Ordering::Acquire))
    }

    /// What a driver write of `vector` to a vector register stores: the vector if the
    /// table has it, otherwise [`VIRTIO_MSI_NO_VECTOR`], which tells the driver the mapping
    /// failed when it reads the register back.
    fn checked_vector(&self, vector: u16) -> u16 {
        if vector < self.msix().vectors() {
            vector
        } else {
            VIRTIO_MSI_NO_VECTOR
        }
    }

    /// The driver assigns the configuration-change vector.
    pub fn set_config_vector(&self, vector: u16) {
        let v = self.checked_vector(vector);
        self.config_vector.store(v, Ordering::Release);
    }

    /// The driver assigns the vector of queue `queue` (ignored for a queue that does not
    /// exist).
    pub fn set_queue_vector(&self, queue: u16, vector: u16) {
        let v = self.checked_vector(vector);
        if let Some(slot) = self.queue_vectors.get(usize::from(queue)) {
            slot.store(v, Ordering::Release);
        }
    }

    /// Device reset: status and ISR 0, every vector unassigned. The MSI-X table is PCI
    /// state and is left alone.
    pub fn reset(&self) {
        self.status.store(0, Ordering::Release);
        self.isr.store(0, Ordering::Release);
        self.config_vector
            .store(VIRTIO_MSI_NO_VECTOR, Ordering::Release);
        for v in &self.queue_vectors {
            v.store(VIRTIO_MSI_NO_VECTOR, Ordering::Release);
        }
    }

    /// Raises `vector` through the (locked) MSI-X state; nothing for
    /// [`VIRTIO_MSI_NO_VECTOR`].
    fn raise(msix: &mut MsixConfig, vector: u16) -> Result<(), InterruptError> {
        if vector == VIRTIO_MSI_NO_VECTOR {
            return Ok(());
        }
        msix.trigger(vector)
            .map_err(|source| InterruptError::Msi { vector, source })
    }
}

impl VirtioInterrupt for InterruptState {
    fn trigger(&self, interrupt: VirtioInterruptType) -> Result<(), InterruptError> {
        match interrupt {
            VirtioInterruptType::Config => {
                self.isr.fetch_or(ISR_CONFIG, Ordering::AcqRel);
                Self::raise(&mut self.msix(), self.config_vector())
            }
            VirtioInterruptType::Queue(queue) => {
                let slot = self
                    .queue_vectors
                    .get(usize::from(queue))
                    .ok_or(InterruptError::NoSuchQueue(queue))?;
                // One lock per queue interrupt (this runs for every answered batch).
                let mut msix = self.msix();
                // The queue bit is for drivers without MSI-X (virtio 1.x §4.1.4.5.1).
                if !msix.enabled() {
                    self.isr.fetch_or(ISR_QUEUE, Ordering::AcqRel);
                }
                Self::raise(&mut msix, slot.load(Ordering::Acquire))
            }
        }
    }

    fn set_needs_reset(&self) -> Result<(), InterruptError> {
        let old = self.status.fetch_or(DEVICE_NEEDS_RESET, Ordering::AcqRel);
        if old & DRIVER_OK != 0 {
            self.trigger(VirtioInterruptType::Config)?;
        }
        Ok(())
    }
}
