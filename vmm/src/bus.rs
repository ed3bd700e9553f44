//! Port I/O and MMIO buses: address ranges mapped to devices.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

/// A device that answers guest accesses to its range (`offset` is relative to the range);
/// defined in the `pci` crate so that PCI and virtio devices can sit on these buses too.
pub use pci::BusDevice;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("bus range {base:#x}+{len:#x} overlaps an existing device")]
    Overlap { base: u64, len: u64 },
    #[error("bus range {base:#x}+{len:#x} is empty or wraps around")]
    BadRange { base: u64, len: u64 },
    #[error("nothing is mapped at {0:#x}")]
    NotMapped(u64),
}

struct Entry {
    len: u64,
    device: Arc<Mutex<dyn BusDevice>>,
}

/// A set of non-overlapping ranges.
#[derive(Default)]
pub struct Bus {
    ranges: RwLock<BTreeMap<u64, Entry>>,
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `[base, base + len)` to `device`.
    pub fn insert(
        &self,
        device: Arc<Mutex<dyn BusDevice>>,
        base: u64,
        len: u64,
    ) -> Result<(), BusError> {
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(BusError::BadRange { base, len })?;
        let mut ranges = self.ranges.write().unwrap_or_else(|e| e.into_inner());
        let before = ranges.range(..end).next_back();
        if before.is_some_and(|(b, e)| b + e.len > base) {
            return Err(BusError::Overlap { base, len });
        }
        ranges.insert(base, Entry { len, device });
        Ok(())
    }

    /// Moves the device mapped at `old_base` to `new_base` (a guest reprogrammed a BAR).
    pub fn relocate(&self, old_base: u64, new_base: u64) -> Result<(), BusError> {
        let entry = {
            let mut ranges = self.ranges.write().unwrap_or_else(|e| e.into_inner());
            ranges
                .remove(&old_base)
                .ok_or(BusError::NotMapped(old_base))?
        };
        let (device, len) = (entry.device.clone(), entry.len);
        self.insert(device, new_base, len).inspect_err(|_| {
            // Put it back where it was rather than lose it.
            let mut ranges = self.ranges.write().unwrap_or_else(|e| e.into_inner());
            ranges.insert(old_base, entry);
        })
    }

    fn find(&self, addr: u64) -> Option<(u64, Arc<Mutex<dyn BusDevice>>)> {
        let ranges = self.ranges.read().unwrap_or_else(|e| e.into_inner());
        let (base, entry) = ranges.range(..=addr).next_back()?;
        (addr - base < entry.len).then(|| (addr - base, entry.device.clone()))
    }

    /// Dispatches a read; returns false when nothing is mapped at `addr`.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr) {
            Some((offset, dev)) => {
                dev.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Dispatches a write; returns false when nothing is mapped at `addr`.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr) {
            Some((offset, dev)) => {
                dev.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .write(offset, data);
                true
            }
            None => false,
        }
    }
}

/// The two buses a vCPU dispatches to.
#[derive(Default)]
pub struct Buses {
    pub pio: Bus,
    pub mmio: Bus,
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Recorder(Vec<(u64, u8)>);
    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.0.push((offset, data[0]));
        }
    }

    #[test]
    fn dispatches_by_range_and_rejects_overlap() {
        let bus = Bus::new();
        let dev = Arc::new(Mutex::new(Recorder(vec![])));
        bus.insert(dev.clone(), 0x3f8, 8).unwrap();
        assert!(bus.insert(dev.clone(), 0x3f0, 9).is_err());
        assert!(bus.insert(dev.clone(), 0x3ff, 1).is_err());
        assert!(bus.insert(dev.clone(), 0x400, 1).is_ok());
        assert!(bus.insert(dev.clone(), 0x500, 0).is_err());
        let mut b = [0u8; 1];
        assert!(bus.read(0x3fa, &mut b));
        assert_eq!(b[0], 2);
        assert!(!bus.read(0x3f7, &mut b));
        assert!(bus.write(0x3ff, &[9]));
        assert_eq!(dev.lock().unwrap().0, vec![(7, 9)]);

        bus.relocate(0x3f8, 0x600).unwrap();
        assert!(!bus.read(0x3f8, &mut b));
        assert!(bus.read(0x601, &mut b));
        assert!(bus.relocate(0x600, 0x400).is_err(), "0x400 is taken");
        assert!(
            bus.read(0x601, &mut b),
            "a failed move leaves the device in place"
        );
        assert!(matches!(
            bus.relocate(0x999, 0x1000),
            Err(BusError::NotMapped(0x999))
        ));
    }
}
