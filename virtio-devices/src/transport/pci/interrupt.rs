//! The transport state a running device touches from its own thread: the device status (for
//! DEVICE_NEEDS_RESET), the ISR byte, the MSI-X vector of configuration changes and of each
//! queue, the MSI-X table, and the INTx line. [`InterruptState`] implements
//! [`VirtioInterrupt`] on them: through MSI-X when the driver enabled it, otherwise by
//! setting the ISR bit and pulsing INTx (virtio 1.x §4.1.4.5; docs/virtio-mem.md,
//! "Interrupts").
//!
//! It lives outside the PCI device's lock on purpose: a device reset holds that lock while it
//! waits for the device thread to stop, so the thread must be able to raise interrupts
//! without it.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use super::state::StateError;
use pci::{IntxLine, MsixConfig};

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
    /// The INTx line, if the VMM gave the function one.
    intx: OnceLock<Arc<dyn IntxLine>>,
    /// The PCI command register's Interrupt Disable bit.
    intx_disabled: AtomicBool,
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
            intx: OnceLock::new(),
            intx_disabled: AtomicBool::new(false),
        }
    }

    /// Gives the function its INTx line (once; later calls are ignored).
    pub fn set_intx(&self, line: Arc<dyn IntxLine>) {
        let _ = self.intx.set(line);
    }

    /// Follows the PCI command register's Interrupt Disable bit. Enabling INTx with an
    /// event pending in the ISR raises the line, as a level-triggered line would be.
    pub fn set_intx_disabled(&self, disabled: bool) {
        // SeqCst here and in `trigger`: the ISR write there and the bit write here must not
        // both read each other's old value, or an event would go unraised.
        let was = self.intx_disabled.swap(disabled, Ordering::SeqCst);
        if was && !disabled && self.isr.load(Ordering::SeqCst) != 0 && !self.msix().enabled() {
            self.pulse_intx();
        }
    }

    /// One edge on the INTx line, unless the driver disabled INTx or there is no line.
    /// Every event pulses (not only the first since the ISR was read): an edge is never
    /// lost that way, and a spare one only makes the driver read an ISR of 0.
    fn pulse_intx(&self) {
        if self.intx_disabled.load(Ordering::SeqCst) {
            return;
        }
        if let Some(line) = self.intx.get() {
            if let Err(e) = line.pulse() {
                log::warn!("virtio-pci: raising INTx: {e}");
            }
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

    /// Status, ISR and vectors, to save: `(status, isr, config_vector, queue_vectors)`.
    pub fn saved(&self) -> (u8, u8, u16, Vec<u16>) {
        (
            self.status(),
            self.isr.load(Ordering::Acquire),
            self.config_vector(),
            self.queue_vectors
                .iter()
                .map(|v| v.load(Ordering::Acquire))
                .collect(),
        )
    }

    /// Brings back what [`saved`](Self::saved) gave. Vectors must be in the table (or
    /// none); on error nothing changed.
    pub fn restore(
        &self,
        status: u8,
        isr: u8,
        config_vector: u16,
        queue_vectors: &[u16],
    ) -> Result<(), StateError> {
        if queue_vectors.len() != self.queue_vectors.len() {
            return Err(StateError::QueueCount {
                saved: queue_vectors.len(),
                here: self.queue_vectors.len(),
            });
        }
        let vectors = self.msix().vectors();
        if let Some(&vector) = std::iter::once(&config_vector)
            .chain(queue_vectors)
            .find(|&&v| v != VIRTIO_MSI_NO_VECTOR && v >= vectors)
        {
            return Err(StateError::Vector { vector, vectors });
        }
        self.status.store(status, Ordering::Release);
        self.isr.store(isr, Ordering::Release);
        self.config_vector.store(config_vector, Ordering::Release);
        for (slot, &v) in self.queue_vectors.iter().zip(queue_vectors) {
            slot.store(v, Ordering::Release);
        }
        Ok(())
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
        let (isr_bit, vector) = match interrupt {
            VirtioInterruptType::Config => (ISR_CONFIG, self.config_vector()),
            VirtioInterruptType::Queue(queue) => (
                ISR_QUEUE,
                self.queue_vectors
                    .get(usize::from(queue))
                    .ok_or(InterruptError::NoSuchQueue(queue))?
                    .load(Ordering::Acquire),
            ),
        };
        // One lock per interrupt (this runs for every answered batch).
        let mut msix = self.msix();
        if msix.enabled() {
            // The configuration bit is set with MSI-X too (a driver may read it); the queue
            // bit only without (virtio 1.x §4.1.4.5.1).
            if isr_bit == ISR_CONFIG {
                self.isr.fetch_or(ISR_CONFIG, Ordering::AcqRel);
            }
            return Self::raise(&mut msix, vector);
        }
        drop(msix);
        self.isr.fetch_or(isr_bit, Ordering::SeqCst);
        self.pulse_intx();
        Ok(())
    }

    fn set_needs_reset(&self) -> Result<(), InterruptError> {
        let old = self.status.fetch_or(DEVICE_NEEDS_RESET, Ordering::AcqRel);
        if old & DRIVER_OK != 0 {
            self.trigger(VirtioInterruptType::Config)?;
        }
        Ok(())
    }
}
