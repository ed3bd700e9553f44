//! Port I/O and MMIO buses: address ranges mapped to devices.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

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

/// Guest accesses one range (or, for [`Bus::unmapped`], the bus's gaps) received, and the
/// time the VMM spent answering them, for `vm.counters`.
#[derive(Default)]
pub struct AccessCount {
    accesses: AtomicU64,
    handling_ns: AtomicU64,
}

impl AccessCount {
    fn add(&self, since: Instant) {
        let ns = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.accesses.fetch_add(1, Relaxed);
        self.handling_ns.fetch_add(ns, Relaxed);
    }

    pub fn accesses(&self) -> u64 {
        self.accesses.load(Relaxed)
    }

    pub fn handling_ns(&self) -> u64 {
        self.handling_ns.load(Relaxed)
    }
}

/// What [`Bus::access_counts`] calls the addresses where nothing is mapped.
pub const UNMAPPED: &str = "unmapped";

/// The accesses to the ranges of one name.
#[derive(Debug, PartialEq, Eq)]
pub struct RangeAccesses {
    pub name: String,
    pub accesses: u64,
    pub handling_ns: u64,
}

struct Entry {
    len: u64,
    /// What the range is, for `vm.counters` ("serial", "virtio-mem-mem0 bar 0", ...).
    name: String,
    device: Arc<Mutex<dyn BusDevice>>,
    count: Arc<AccessCount>,
}

/// A set of non-overlapping ranges.
#[derive(Default)]
pub struct Bus {
    ranges: RwLock<BTreeMap<u64, Entry>>,
    /// Accesses where nothing is mapped.
    unmapped: AccessCount,
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `[base, base + len)` to `device`, counted under `name`.
    pub fn insert(
        &self,
        name: impl Into<String>,
        device: Arc<Mutex<dyn BusDevice>>,
        base: u64,
        len: u64,
    ) -> Result<(), BusError> {
        self.insert_entry(
            base,
            Entry {
                len,
                name: name.into(),
                device,
                count: Arc::default(),
            },
        )
        .map_err(|(e, _)| e)
    }

    /// Maps `entry` at `base`; gives it back with the error when the range is bad or taken.
    fn insert_entry(&self, base: u64, entry: Entry) -> Result<(), (BusError, Entry)> {
        let len = entry.len;
        let Some(end) = base.checked_add(len).filter(|_| len > 0) else {
            return Err((BusError::BadRange { base, len }, entry));
        };
        let mut ranges = self.ranges.write().unwrap_or_else(|e| e.into_inner());
        let before = ranges.range(..end).next_back();
        if before.is_some_and(|(b, e)| b + e.len > base) {
            return Err((BusError::Overlap { base, len }, entry));
        }
        ranges.insert(base, entry);
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
        self.insert_entry(new_base, entry).map_err(|(e, entry)| {
            // Put it back where it was rather than lose it.
            let mut ranges = self.ranges.write().unwrap_or_else(|e| e.into_inner());
            ranges.insert(old_base, entry);
            e
        })
    }

    /// Hands the device at `addr` and the offset into its range to `access`, and counts
    /// the access and its time; returns false when nothing is mapped there.
    fn dispatch(&self, addr: u64, access: impl FnOnce(&mut dyn BusDevice, u64)) -> bool {
        let started = Instant::now();
        // The bus's lock is let go before the device's is taken: the access may move a BAR
        // (a write to a PCI function's configuration through the ECAM), which takes the
        // MMIO bus's write lock.
        let found = {
            let ranges = self.ranges.read().unwrap_or_else(|e| e.into_inner());
            ranges
                .range(..=addr)
                .next_back()
                .filter(|(base, entry)| addr - *base < entry.len)
                .map(|(base, entry)| (addr - base, entry.device.clone(), entry.count.clone()))
        };
        match found {
            Some((offset, device, count)) => {
                access(
                    &mut *device.lock().unwrap_or_else(|e| e.into_inner()),
                    offset,
                );
                count.add(started);
                true
            }
            None => {
                self.unmapped.add(started);
                false
            }
        }
    }

    /// Dispatches a read; returns false when nothing is mapped at `addr`.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        self.dispatch(addr, |dev, offset| dev.read(offset, data))
    }

    /// Dispatches a write; returns false when nothing is mapped at `addr`.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        self.dispatch(addr, |dev, offset| dev.write(offset, data))
    }

    /// Accesses and handling time per range name (ranges of one name summed), in name
    /// order, then [`UNMAPPED`] for where nothing is mapped.
    pub fn access_counts(&self) -> Vec<RangeAccesses> {
        let ranges = self.ranges.read().unwrap_or_else(|e| e.into_inner());
        let mut by_name: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for entry in ranges.values() {
            let sum = by_name.entry(&entry.name).or_default();
            sum.0 += entry.count.accesses();
            sum.1 += entry.count.handling_ns();
        }
        let unmapped = (
            UNMAPPED,
            (self.unmapped.accesses(), self.unmapped.handling_ns()),
        );
        by_name
            .into_iter()
            .chain([unmapped])
            .map(|(name, (accesses, handling_ns))| RangeAccesses {
                name: name.to_string(),
                accesses,
                handling_ns,
            })
            .collect()
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
        bus.insert("recorder", dev.clone(), 0x3f8, 8).unwrap();
        assert!(bus.insert("recorder", dev.clone(), 0x3f0, 9).is_err());
        assert!(bus.insert("recorder", dev.clone(), 0x3ff, 1).is_err());
        assert!(bus.insert("recorder", dev.clone(), 0x400, 1).is_ok());
        assert!(bus.insert("recorder", dev.clone(), 0x500, 0).is_err());
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

    #[test]
    fn accesses_are_counted_per_name_through_moves() {
        let bus = Bus::new();
        let dev = Arc::new(Mutex::new(Recorder(vec![])));
        bus.insert("bar", dev.clone(), 0x1000, 0x10).unwrap();
        bus.insert("bar", dev.clone(), 0x2000, 0x10).unwrap();
        bus.insert("other", dev.clone(), 0x3000, 0x10).unwrap();
        let mut b = [0u8; 4];
        assert!(bus.read(0x1004, &mut b));
        assert!(bus.write(0x200f, &b));
        bus.relocate(0x1000, 0x5000).unwrap();
        assert!(bus.read(0x5000, &mut b), "the moved range keeps its count");
        assert!(!bus.read(0x4000, &mut b));
        let all = bus.access_counts();
        let counts: Vec<(&str, u64)> = all.iter().map(|r| (r.name.as_str(), r.accesses)).collect();
        assert_eq!(counts, [("bar", 3), ("other", 0), (UNMAPPED, 1)]);
        assert_eq!(all[1].handling_ns, 0, "no access, no time");
    }
}
