//! How often the vCPUs left the guest, by kind of exit, and how long the VMM took to answer
//! each kind: the first place to look when a guest is slower under Accordion than elsewhere
//! (`vm.counters`, `vcpu-exits`).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// The kinds of exit a vCPU thread answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitKind {
    IoIn,
    IoOut,
    MmioRead,
    MmioWrite,
    /// `HLT` outside an in-kernel LAPIC's reach.
    Hlt,
    /// `KVM_RUN` ended by a signal (a pause, a stop) rather than by the guest.
    Interrupted,
}

impl ExitKind {
    const ALL: [ExitKind; 6] = [
        ExitKind::IoIn,
        ExitKind::IoOut,
        ExitKind::MmioRead,
        ExitKind::MmioWrite,
        ExitKind::Hlt,
        ExitKind::Interrupted,
    ];

    fn name(self) -> &'static str {
        match self {
            ExitKind::IoIn => "io_in",
            ExitKind::IoOut => "io_out",
            ExitKind::MmioRead => "mmio_read",
            ExitKind::MmioWrite => "mmio_write",
            ExitKind::Hlt => "hlt",
            ExitKind::Interrupted => "interrupted",
        }
    }

    fn name_ns(self) -> &'static str {
        match self {
            ExitKind::IoIn => "io_in_ns",
            ExitKind::IoOut => "io_out_ns",
            ExitKind::MmioRead => "mmio_read_ns",
            ExitKind::MmioWrite => "mmio_write_ns",
            ExitKind::Hlt => "hlt_ns",
            ExitKind::Interrupted => "interrupted_ns",
        }
    }
}

/// Exits of every vCPU of one VM: counts and the VMM's time per kind, from the return of
/// `KVM_RUN` to the answer.
#[derive(Default)]
pub struct ExitCounters {
    counts: [AtomicU64; ExitKind::ALL.len()],
    handling_ns: [AtomicU64; ExitKind::ALL.len()],
}

impl ExitCounters {
    /// Counts one exit of `kind` that `KVM_RUN` returned at `since`.
    pub fn add(&self, kind: ExitKind, since: Instant) {
        let ns = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let i = kind as usize;
        self.counts[i].fetch_add(1, Relaxed);
        self.handling_ns[i].fetch_add(ns, Relaxed);
    }

    /// `(name, value)` pairs for `vm.counters`: every kind's count, then its time.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        let counts = ExitKind::ALL
            .iter()
            .map(|&k| (k.name(), self.counts[k as usize].load(Relaxed)));
        let times = ExitKind::ALL
            .iter()
            .map(|&k| (k.name_ns(), self.handling_ns[k as usize].load(Relaxed)));
        counts.chain(times).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_counts_apart_with_its_time() {
        let exits = ExitCounters::default();
        let long_ago = Instant::now() - std::time::Duration::from_millis(5);
        exits.add(ExitKind::IoOut, long_ago);
        exits.add(ExitKind::IoOut, Instant::now());
        exits.add(ExitKind::MmioRead, Instant::now());
        let c: std::collections::HashMap<_, _> = exits.counters().into_iter().collect();
        assert_eq!(c.len(), 12);
        assert_eq!(c["io_out"], 2);
        assert_eq!(c["mmio_read"], 1);
        assert_eq!(c["io_in"], 0);
        assert_eq!(c["hlt"], 0);
        assert!(c["io_out_ns"] >= 5_000_000, "{}", c["io_out_ns"]);
        assert!(c["mmio_read_ns"] < 5_000_000);
        assert_eq!(c["io_in_ns"], 0);
    }
}
