//! The common configuration structure (`struct virtio_pci_common_cfg`, virtio 1.x §4.1.4.3):
//! feature negotiation, MSI-X vector assignment, the status byte, and queue setup.
//!
//! ```text
//! 0x00 le32 device_feature_select   0x14 u8   device_status       0x1e le16 queue_notify_off
//! 0x04 le32 device_feature (RO)     0x15 u8   config_generation   0x20 le64 queue_desc
//! 0x08 le32 driver_feature_select   0x16 le16 queue_select        0x28 le64 queue_driver
//! 0x0c le32 driver_feature          0x18 le16 queue_size          0x30 le64 queue_device
//! 0x10 le16 config_msix_vector      0x1a le16 queue_msix_vector
//! 0x12 le16 num_queues (RO)         0x1c le16 queue_enable
//! ```
//!
//! Reads of any offset and size are served from an image of the structure (bytes past it
//! read as zero). Writes must hit a field with its own width (or a 32-bit half of a 64-bit
//! field, or the whole of it); anything else is ignored. Feature writes are ignored once
//! FEATURES_OK is set, queue setup writes once DRIVER_OK is set.

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddress;

use super::interrupt::{InterruptState, VIRTIO_MSI_NO_VECTOR};
use super::layout::COMMON_CFG_LEN;
use super::state::{QueueState, StateError, VirtioPciState};
use super::status::{DRIVER_OK, FEATURES_OK};

/// What a write to the common configuration asks of the transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommonWrite {
    /// Nothing beyond the register itself.
    Done,
    /// The driver wrote this value to `device_status`: run the status state machine.
    Status(u8),
}

/// Which of the three ring addresses of a queue.
#[derive(Clone, Copy, Debug)]
enum Ring {
    Desc,
    Driver,
    Device,
}

/// The registers of the common configuration that the transport keeps itself, and the
/// queues the driver sets up through it.
pub struct CommonConfig {
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    queue_select: u16,
    queues: Vec<Queue>,
}

/// What the common configuration reads from elsewhere.
pub struct CommonView<'a> {
    /// Status, vectors.
    pub shared: &'a InterruptState,
    /// The features the device offers.
    pub device_features: u64,
    /// The low byte of the device's configuration generation.
    pub config_generation: u8,
}

impl CommonConfig {
    /// Registers at their reset values, over `queues`.
    pub fn new(queues: Vec<Queue>) -> Self {
        CommonConfig {
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            queue_select: 0,
            queues,
        }
    }

    /// The features the driver wrote.
    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    /// The queues as the driver set them up.
    pub fn queues(&self) -> &[Queue] {
        &self.queues
    }

    /// The registers and queues, to save: `(device_feature_select, driver_feature_select,
    /// driver_features, queue_select, queues)`.
    pub fn saved(&self) -> (u32, u32, u64, u16, Vec<QueueState>) {
        let queues = self
            .queues
            .iter()
            .map(|q| QueueState {
                size: q.size(),
                ready: q.ready(),
                desc_table: q.desc_table(),
                avail_ring: q.avail_ring(),
                used_ring: q.used_ring(),
                next_avail: q.next_avail(),
                next_used: q.next_used(),
            })
            .collect();
        (
            self.device_feature_select,
            self.driver_feature_select,
            self.driver_features,
            self.queue_select,
            queues,
        )
    }

    /// Brings back what [`saved`](Self::saved) gave, checking each queue as a driver's
    /// writes would be checked. On error nothing changed.
    pub fn restore(&mut self, s: &VirtioPciState) -> Result<(), StateError> {
        if s.queues.len() != self.queues.len() {
            return Err(StateError::QueueCount {
                saved: s.queues.len(),
                here: self.queues.len(),
            });
        }
        let mut queues = Vec::with_capacity(self.queues.len());
        for (i, (old, saved)) in self.queues.iter().zip(&s.queues).enumerate() {
            let bad = |reason: String| StateError::Queue { queue: i, reason };
            let mut q = Queue::new(old.max_size()).map_err(|e| bad(e.to_string()))?;
            q.try_set_size(saved.size)
                .map_err(|e| bad(format!("size {}: {e}", saved.size)))?;
            q.try_set_desc_table_address(GuestAddress(saved.desc_table))
                .map_err(|e| bad(format!("descriptor table {:#x}: {e}", saved.desc_table)))?;
            q.try_set_avail_ring_address(GuestAddress(saved.avail_ring))
                .map_err(|e| bad(format!("driver ring {:#x}: {e}", saved.avail_ring)))?;
            q.try_set_used_ring_address(GuestAddress(saved.used_ring))
                .map_err(|e| bad(format!("device ring {:#x}: {e}", saved.used_ring)))?;
            q.set_ready(saved.ready);
            q.set_next_avail(saved.next_avail);
            q.set_next_used(saved.next_used);
            queues.push(q);
        }
        self.queues = queues;
        self.device_feature_select = s.device_feature_select;
        self.driver_feature_select = s.driver_feature_select;
        self.driver_features = s.driver_features;
        self.queue_select = s.queue_select;
        Ok(())
    }

    /// Records where the device stood in queue `index` (it ran the queue itself).
    pub fn set_position(&mut self, index: u16, next_avail: u16, next_used: u16) {
        if let Some(q) = self.queues.get_mut(usize::from(index)) {
            q.set_next_avail(next_avail);
            q.set_next_used(next_used);
        }
    }

    /// Device reset: selectors and driver features 0, every queue back to its reset state.
    pub fn reset(&mut self) {
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.driver_features = 0;
        self.queue_select = 0;
        for q in &mut self.queues {
            q.reset();
        }
    }

    /// The selected queue, if it exists.
    fn selected(&self) -> Option<&Queue> {
        self.queues.get(usize::from(self.queue_select))
    }

    /// The whole structure as the driver would read it now.
    fn image(&self, view: &CommonView<'_>) -> [u8; COMMON_CFG_LEN as usize] {
        let mut b = [0u8; COMMON_CFG_LEN as usize];
        let page = |features: u64, select: u32| match select {
            0 => features as u32,
            1 => (features >> 32) as u32,
            _ => 0,
        };
        let dev = page(view.device_features, self.device_feature_select);
        let drv = page(self.driver_features, self.driver_feature_select);
        b[0x00..0x04].copy_from_slice(&self.device_feature_select.to_le_bytes());
        b[0x04..0x08].copy_from_slice(&dev.to_le_bytes());
        b[0x08..0x0c].copy_from_slice(&self.driver_feature_select.to_le_bytes());
        b[0x0c..0x10].copy_from_slice(&drv.to_le_bytes());
        b[0x10..0x12].copy_from_slice(&view.shared.config_vector().to_le_bytes());
        // At most 1024 queues (BarLayout).
        b[0x12..0x14].copy_from_slice(&(self.queues.len() as u16).to_le_bytes());
        b[0x14] = view.shared.status();
        b[0x15] = view.config_generation;
        b[0x16..0x18].copy_from_slice(&self.queue_select.to_le_bytes());
        let (size, vector, enable, notify_off, desc, driver, device) = match self.selected() {
            Some(q) => (
                q.size(),
                view.shared.queue_vector(self.queue_select),
                u16::from(q.ready()),
                self.queue_select,
                q.desc_table(),
                q.avail_ring(),
                q.used_ring(),
            ),
            // queue_size 0: the queue is not available.
            None => (0, VIRTIO_MSI_NO_VECTOR, 0, 0, 0, 0, 0),
        };
        b[0x18..0x1a].copy_from_slice(&size.to_le_bytes());
        b[0x1a..0x1c].copy_from_slice(&vector.to_le_bytes());
        b[0x1c..0x1e].copy_from_slice(&enable.to_le_bytes());
        b[0x1e..0x20].copy_from_slice(&notify_off.to_le_bytes());
        b[0x20..0x28].copy_from_slice(&desc.to_le_bytes());
        b[0x28..0x30].copy_from_slice(&driver.to_le_bytes());
        b[0x30..0x38].copy_from_slice(&device.to_le_bytes());
        b
    }

    /// A driver read at `offset`, any size: bytes past the structure read as zero.
    pub fn read(&self, offset: u64, data: &mut [u8], view: &CommonView<'_>) {
        data.fill(0);
        let image = self.image(view);
        let Some(start) = usize::try_from(offset).ok().filter(|&s| s < image.len()) else {
            return;
        };
        let n = data.len().min(image.len() - start);
        data[..n].copy_from_slice(&image[start..start + n]);
    }

    /// A driver write at `offset`. See the module doc for what is accepted.
    pub fn write(&mut self, offset: u64, data: &[u8], view: &CommonView<'_>) -> CommonWrite {
        let status = view.shared.status();
        let value = match *data {
            [a] => u64::from(a),
            [a, b] => u64::from(u16::from_le_bytes([a, b])),
            [a, b, c, d] => u64::from(u32::from_le_bytes([a, b, c, d])),
            [a, b, c, d, e, f, g, h] => u64::from_le_bytes([a, b, c, d, e, f, g, h]),
            _ => {
                log::debug!(
                    "virtio-pci: ignoring a {}-byte common config write",
                    data.len()
                );
                return CommonWrite::Done;
            }
        };
        let features_open = status & FEATURES_OK == 0;
        let queues_open = status & DRIVER_OK == 0;
        // Truncations below are to the width just matched.
        match (offset, data.len()) {
            (0x00, 4) => self.device_feature_select = value as u32,
            (0x08, 4) => self.driver_feature_select = value as u32,
            (0x0c, 4) if features_open => self.write_driver_features(value as u32),
            (0x10, 2) => view.shared.set_config_vector(value as u16),
            (0x14, 1) => return CommonWrite::Status(value as u8),
            (0x16, 2) => self.queue_select = value as u16,
            (0x18, 2) if queues_open => self.write_queue_size(value as u16),
            (0x1a, 2) => view
                .shared
                .set_queue_vector(self.queue_select, value as u16),
            (0x1c, 2) if queues_open => self.write_queue_enable(value as u16),
            (0x20 | 0x24 | 0x28 | 0x2c | 0x30 | 0x34, 4) | (0x20 | 0x28 | 0x30, 8)
                if queues_open =>
            {
                self.write_ring_address(offset, data.len(), value)
            }
            _ => log::debug!(
                "virtio-pci: ignoring a {}-byte common config write at {offset:#x} (status {status:#x})",
                data.len()
            ),
        }
        CommonWrite::Done
    }

    fn write_driver_features(&mut self, value: u32) {
        let value = u64::from(value);
        match self.driver_feature_select {
            0 => self.driver_features = (self.driver_features & !0xffff_ffff) | value,
            1 => self.driver_features = (self.driver_features & 0xffff_ffff) | value << 32,
            page => log::debug!("virtio-pci: ignoring driver features of page {page}"),
        }
    }

    fn selected_mut(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(usize::from(self.queue_select))
    }

    fn write_queue_size(&mut self, size: u16) {
        if let Some(q) = self.selected_mut() {
            if q.try_set_size(size).is_err() {
                log::debug!("virtio-pci: ignoring queue size {size}");
            }
        }
    }

    fn write_queue_enable(&mut self, value: u16) {
        match (self.selected_mut(), value) {
            (Some(q), 1) => q.set_ready(true),
            // Only a reset disables a queue (no VIRTIO_F_RING_RESET).
            _ => log::debug!("virtio-pci: ignoring queue_enable {value}"),
        }
    }

    /// A 32-bit half (`len` 4) or the whole (`len` 8) of a ring address.
    fn write_ring_address(&mut self, offset: u64, len: usize, value: u64) {
        let ring = match offset & !0x7 {
            0x20 => Ring::Desc,
            0x28 => Ring::Driver,
            _ => Ring::Device,
        };
        let Some(q) = self.selected_mut() else {
            return;
        };
        let old = match ring {
            Ring::Desc => q.desc_table(),
            Ring::Driver => q.avail_ring(),
            Ring::Device => q.used_ring(),
        };
        let new = match (len, offset & 0x4) {
            (8, _) => value,
            (_, 0) => (old & !0xffff_ffff) | value,
            _ => (old & 0xffff_ffff) | value << 32,
        };
        let addr = GuestAddress(new);
        let result = match ring {
            Ring::Desc => q.try_set_desc_table_address(addr),
            Ring::Driver => q.try_set_avail_ring_address(addr),
            Ring::Device => q.try_set_used_ring_address(addr),
        };
        if let Err(e) = result {
            log::debug!("virtio-pci: ignoring {ring:?} ring address {new:#x}: {e}");
        }
    }
}
