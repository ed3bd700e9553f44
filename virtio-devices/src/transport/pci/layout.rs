//! Where everything sits in BAR 0 of a virtio-pci device, and which area an access hits.
//!
//! ```text
//! 0x0000  common configuration (struct virtio_pci_common_cfg, 0x38 bytes)
//! 0x1000  ISR status (1 byte)
//! 0x2000  device configuration (the device's config_size, at most 4 KiB)
//! 0x3000  notifications: queue n at 0x3000 + 4 * n (notify_off_multiplier 4)
//! 0x4000  MSI-X table (16 bytes per vector)
//! next 4 KiB boundary after the table: MSI-X PBA
//! ```
//!
//! Each area decodes up to the next area (or 4 KiB for the PBA); bytes there that belong to
//! no register read as zero. The BAR size is the end of the PBA page rounded up to a power of
//! two.

use super::error::VirtioPciError;

/// Offset of the common configuration structure.
pub const COMMON_CFG_OFFSET: u64 = 0x0000;
/// Length of `struct virtio_pci_common_cfg` (virtio 1.0 fields, up to `queue_device`).
pub const COMMON_CFG_LEN: u64 = 0x38;
/// Offset of the ISR status byte.
pub const ISR_OFFSET: u64 = 0x1000;
/// Length of the ISR status area.
pub const ISR_LEN: u64 = 1;
/// Offset of the device configuration space.
pub const DEVICE_CFG_OFFSET: u64 = 0x2000;
/// Offset of the notification area.
pub const NOTIFY_OFFSET: u64 = 0x3000;
/// Bytes between the notification addresses of consecutive queues.
pub const NOTIFY_OFF_MULTIPLIER: u32 = 4;
/// Offset of the MSI-X table.
pub const MSIX_TABLE_OFFSET: u64 = 0x4000;

/// Size of each area's slot: areas start on 4 KiB boundaries.
const AREA: u64 = 0x1000;
/// Most queues the notification area has room for.
pub const MAX_QUEUES: usize = (AREA / NOTIFY_OFF_MULTIPLIER as u64) as usize;

/// An access inside BAR 0, resolved to an area and the offset inside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarArea {
    /// The common configuration.
    Common(u64),
    /// The ISR status.
    Isr(u64),
    /// The device configuration.
    Device(u64),
    /// The notification area.
    Notify(u64),
    /// The MSI-X table.
    MsixTable(u64),
    /// The MSI-X pending bit array.
    MsixPba(u64),
}

/// BAR 0 of one device: sizes that depend on its queue count and configuration size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarLayout {
    queues: u16,
    device_cfg_len: u64,
    msix_vectors: u16,
    pba_offset: u64,
    bar_size: u64,
}

impl BarLayout {
    /// The layout for `queues` queues and a device configuration of `device_cfg_len` bytes,
    /// with one MSI-X vector for configuration changes and one per queue.
    pub fn new(queues: usize, device_cfg_len: usize) -> Result<Self, VirtioPciError> {
        if queues == 0 || queues > MAX_QUEUES {
            return Err(VirtioPciError::QueueCount(queues));
        }
        let device_cfg_len = device_cfg_len as u64;
        if device_cfg_len > AREA {
            return Err(VirtioPciError::ConfigSize(device_cfg_len));
        }
        // queues <= 1024, so both fit.
        let msix_vectors = queues as u16 + 1;
        let table_len = u64::from(msix_vectors) * pci::MSIX_TABLE_ENTRY_SIZE;
        let pba_offset = (MSIX_TABLE_OFFSET + table_len).next_multiple_of(AREA);
        let bar_size = (pba_offset + AREA).next_power_of_two();
        Ok(BarLayout {
            queues: queues as u16,
            device_cfg_len,
            msix_vectors,
            pba_offset,
            bar_size,
        })
    }

    /// Number of queues.
    pub fn queues(&self) -> u16 {
        self.queues
    }

    /// MSI-X vectors: one for configuration changes, one per queue.
    pub fn msix_vectors(&self) -> u16 {
        self.msix_vectors
    }

    /// Bytes of device configuration.
    pub fn device_cfg_len(&self) -> u64 {
        self.device_cfg_len
    }

    /// Bytes of the notification area: one 4-byte slot per queue.
    pub fn notify_len(&self) -> u64 {
        u64::from(self.queues) * u64::from(NOTIFY_OFF_MULTIPLIER)
    }

    /// Offset of the MSI-X pending bit array.
    pub fn pba_offset(&self) -> u64 {
        self.pba_offset
    }

    /// Size of BAR 0: a power of two.
    pub fn bar_size(&self) -> u64 {
        self.bar_size
    }

    /// Offset in BAR 0 where the driver notifies queue `queue`.
    pub fn notify_offset(&self, queue: u16) -> u64 {
        NOTIFY_OFFSET + u64::from(queue) * u64::from(NOTIFY_OFF_MULTIPLIER)
    }

    /// The area an access at `offset` in BAR 0 starts in, or `None` past the last one.
    pub fn area(&self, offset: u64) -> Option<BarArea> {
        let area = match offset {
            o if o < ISR_OFFSET => BarArea::Common(o - COMMON_CFG_OFFSET),
            o if o < DEVICE_CFG_OFFSET => BarArea::Isr(o - ISR_OFFSET),
            o if o < NOTIFY_OFFSET => BarArea::Device(o - DEVICE_CFG_OFFSET),
            o if o < MSIX_TABLE_OFFSET => BarArea::Notify(o - NOTIFY_OFFSET),
            o if o < self.pba_offset => BarArea::MsixTable(o - MSIX_TABLE_OFFSET),
            o if o < self.pba_offset + AREA => BarArea::MsixPba(o - self.pba_offset),
            _ => return None,
        };
        Some(area)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_queue_fits_in_32_kib() {
        let l = BarLayout::new(1, 56).unwrap();
        assert_eq!(l.msix_vectors(), 2);
        assert_eq!(l.pba_offset(), 0x5000);
        assert_eq!(l.bar_size(), 0x8000);
        assert_eq!(l.notify_offset(0), 0x3000);
        assert_eq!(l.notify_len(), 4);
    }

    #[test]
    fn many_queues_push_the_pba_out() {
        let l = BarLayout::new(MAX_QUEUES, 4096).unwrap();
        assert_eq!(l.msix_vectors(), 1025);
        // 1025 * 16 = 0x4010 bytes of table from 0x4000.
        assert_eq!(l.pba_offset(), 0x9000);
        assert_eq!(l.bar_size(), 0x10000);
        assert_eq!(l.notify_offset(1023), 0x3ffc);
    }

    #[test]
    fn bad_shapes_are_refused() {
        assert!(matches!(
            BarLayout::new(0, 8),
            Err(VirtioPciError::QueueCount(0))
        ));
        assert!(matches!(
            BarLayout::new(MAX_QUEUES + 1, 8),
            Err(VirtioPciError::QueueCount(_))
        ));
        assert!(matches!(
            BarLayout::new(1, 4097),
            Err(VirtioPciError::ConfigSize(4097))
        ));
    }

    #[test]
    fn areas() {
        let l = BarLayout::new(1, 56).unwrap();
        assert_eq!(l.area(0x14), Some(BarArea::Common(0x14)));
        assert_eq!(l.area(0xfff), Some(BarArea::Common(0xfff)));
        assert_eq!(l.area(0x1000), Some(BarArea::Isr(0)));
        assert_eq!(l.area(0x2008), Some(BarArea::Device(8)));
        assert_eq!(l.area(0x3000), Some(BarArea::Notify(0)));
        assert_eq!(l.area(0x4010), Some(BarArea::MsixTable(0x10)));
        assert_eq!(l.area(0x5000), Some(BarArea::MsixPba(0)));
        assert_eq!(l.area(0x5fff), Some(BarArea::MsixPba(0xfff)));
        assert_eq!(l.area(0x6000), None);
        assert_eq!(l.area(u64::MAX), None);
    }
}
