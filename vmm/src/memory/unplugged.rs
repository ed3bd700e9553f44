//! [`UnpluggedAccess`]: what a guest meets where it touches a virtio-mem region outside the
//! memslots in KVM, that is memory it has not plugged (docs/memory.md, "Unplugged memory").
//! KVM turns such an access into an MMIO exit; reads return zeros, writes are dropped, and
//! each access is counted, logged and reported as an event with its address and vCPU (the
//! log and the events thin out to powers of two after the first 16, so a guest cannot flood
//! them). Nothing is allocated on the host.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pci::BusDevice;

/// Accesses counted, for `vm.counters`.
#[derive(Debug, Default)]
pub struct UnpluggedCounters {
    pub reads: AtomicU64,
    pub writes: AtomicU64,
}

/// The bus device over one region; see the module doc.
pub struct UnpluggedAccess {
    id: String,
    base: u64,
    counters: Arc<UnpluggedCounters>,
}

/// Whether the `n`th access (from 1) is reported.
fn reported(n: u64) -> bool {
    n <= 16 || n.is_power_of_two()
}

impl UnpluggedAccess {
    /// For device `id`'s region at guest-physical `base`.
    pub fn new(id: String, base: u64) -> Self {
        UnpluggedAccess {
            id,
            base,
            counters: Arc::new(UnpluggedCounters::default()),
        }
    }

    pub fn counters(&self) -> Arc<UnpluggedCounters> {
        self.counters.clone()
    }

    fn report(&self, offset: u64, len: usize, write: bool) {
        let counter = if write {
            &self.counters.writes
        } else {
            &self.counters.reads
        };
        let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
        if !reported(n) {
            return;
        }
        let gpa = self.base.wrapping_add(offset);
        let access = if write { "write" } else { "read" };
        let thread = std::thread::current();
        let vcpu = thread.name().unwrap_or("?");
        log::warn!(
            "virtio-mem {}: the guest's {vcpu} did a {len}-byte {access} of unplugged memory at \
             {gpa:#x} ({access} number {n}); {}",
            self.id,
            if write { "dropped" } else { "read as zeros" }
        );
        let mut props = BTreeMap::new();
        props.insert("id".to_string(), self.id.clone());
        props.insert("gpa".to_string(), format!("{gpa:#x}"));
        props.insert("access".to_string(), access.to_string());
        props.insert("vcpu".to_string(), vcpu.to_string());
        props.insert("count".to_string(), n.to_string());
        crate::event_monitor::event_with("virtio-mem", "unplugged-access", Some(props));
    }
}

impl BusDevice for UnpluggedAccess {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        self.report(offset, data.len(), false);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.report(offset, data.len(), true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_zeros_and_every_access_counts() {
        let mut device = UnpluggedAccess::new("z".into(), 1 << 32);
        let mut data = [0xffu8; 8];
        device.read(0x1000, &mut data);
        assert_eq!(data, [0; 8]);
        device.write(0x2000, &[1, 2, 3, 4]);
        device.write(0x2000, &[1]);
        let c = device.counters();
        assert_eq!(c.reads.load(Ordering::Relaxed), 1);
        assert_eq!(c.writes.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn reports_thin_out_to_powers_of_two() {
        let seen: Vec<u64> = (1..=100).filter(|&n| reported(n)).collect();
        assert_eq!(seen.len(), 16 + 2); // 1..=16, 32, 64
        assert!(seen.ends_with(&[16, 32, 64]));
    }
}
