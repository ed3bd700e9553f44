//! The virtio-mem device thread's own time per request, measured the same way for any block
//! backend: the real `VirtioMem` behind the real virtio-pci transport, driven through its
//! queue the way the Linux driver drives it (one request in flight; memory blocks of
//! 128 MiB plugged and unplugged whole, and single 2 MiB blocks). Between plugging and
//! unplugging, every plugged page is written, as a guest would, so the discards are real.
//! `virtio-devices/benches/mem_device.rs` runs it over `HostMemoryBackend` alone, the VMM's
//! `vmm/benches/protected_device.rs` over its protecting backend with KVM memslots.
//!
//! [`run`] prints a markdown table: the device time per request by kind (mean, from the
//! counters' totals), the median over all requests (what `vm.counters` reports as
//! `latency_median_ns`), and the time of the discards done after the answers.

use std::time::Instant;

use crate::mem::{
    Backing, BlockBackend, HostMemoryBackend, MemGeometry, Request, Response, VirtioMem,
    VirtioMemHandle, VirtioMemState, QUEUE_SIZE, VIRTIO_F_VERSION_1,
    VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE,
};
use crate::testing::driver::TestBed;
use crate::testing::mem_driver::MemDriver;

const MIB: u64 = 1 << 20;
/// The device's block size.
pub const BLOCK: u64 = 2 * MIB;
/// A Linux memory block on x86-64: what the driver plugs and unplugs at once.
const MEMORY_BLOCK: u64 = 128 * MIB;
/// The region's size.
pub const REGION: u64 = 512 * MIB;
/// The region's guest-physical address.
pub const BASE: u64 = 1 << 32;
const PAGE: u64 = 4096;

/// An anonymous private mapping of the region, unmapped on drop.
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    /// `len` bytes, `MAP_NORESERVE`, with protection `prot`.
    pub fn new(len: u64, prot: i32) -> Mapping {
        let len = usize::try_from(len).expect("region fits the address space");
        // SAFETY: a fresh mapping at an address the kernel picks; nothing else is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED, "mmap of {len} bytes failed");
        Mapping {
            ptr: ptr.cast(),
            len,
        }
    }

    /// The mapping's start.
    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// The discard backend of the whole mapping (4 KiB pages, no prefault).
    ///
    /// # Safety
    /// The backend must be dropped before the mapping, and nothing but the benchmark's
    /// guest (writing the blocks it has plugged) may use the mapping's content.
    pub unsafe fn backend(&self) -> HostMemoryBackend {
        // SAFETY: the caller's promise: the mapping, `len` bytes of private anonymous
        // memory, outlives the backend and nobody else uses it.
        unsafe {
            HostMemoryBackend::new(
                self.ptr,
                self.len as u64,
                Backing::PrivateAnonymous,
                PAGE,
                false,
            )
        }
        .expect("the discard backend")
    }

    /// Writes one byte in each page of `[offset, offset + len)`, as a guest using it would.
    fn touch(&self, offset: u64, len: u64) {
        for page in (offset..offset + len).step_by(PAGE as usize) {
            let at = usize::try_from(page).expect("inside the mapping");
            assert!(at < self.len);
            // SAFETY: `at` is inside the mapping, in a block the device has just plugged
            // (so readable and writable whatever the backend protects), and the mapping
            // lives as long as `self`; the device thread does not access its content.
            unsafe { self.ptr.add(at).write_volatile(1) };
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, no longer used (the device was dropped first).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Device time totals `(count, total_ns)` so far.
fn totals(handle: &VirtioMemHandle) -> (u64, u64) {
    let l = handle.status().latency;
    (l.count, l.total_ns)
}

fn send(driver: &mut MemDriver<'_>, bed: &TestBed<VirtioMem>, request: Request) {
    let answer = driver.send(bed, request);
    assert_eq!(
        answer,
        Response::Ack(None).to_bytes(),
        "{request:?} was not acknowledged"
    );
}

/// `BENCH_ROUNDS` (default 10).
pub fn rounds() -> u64 {
    std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

/// Drives a device over `backend` (for `mapping`, the region's host memory) for `rounds`
/// rounds and prints the tables under `title`.
pub fn run(
    title: &str,
    backend: impl BlockBackend + Send + 'static,
    mapping: &Mapping,
    rounds: u64,
) {
    let geometry = MemGeometry::new(BASE, REGION, BLOCK).expect("geometry");
    let state = VirtioMemState::new(geometry, None, REGION).expect("state");
    let device = VirtioMem::new("bench", state, backend).expect("device");
    let handle = device.handle();
    let mut bed = TestBed::new(device);
    let mem = bed.mem.clone();
    let mut driver = MemDriver::new(&mem);
    let features = (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE);
    bed.init(features, QUEUE_SIZE, driver.rings());
    let per_memory_block = u16::try_from(MEMORY_BLOCK / BLOCK).expect("fits");
    let memory_blocks = REGION / MEMORY_BLOCK;
    let mut rows = Vec::new();
    let started = Instant::now();
    for (label, blocks, per_request) in [
        ("128 MiB", memory_blocks, per_memory_block),
        ("2 MiB", 64, 1),
    ] {
        let size = u64::from(per_request) * BLOCK;
        let mut phase = |make: fn(u64, u16) -> Request| {
            let before = totals(&handle);
            for i in 0..blocks {
                send(&mut driver, &bed, make(BASE + i * size, per_request));
            }
            let after = totals(&handle);
            (after.0 - before.0, after.1 - before.1)
        };
        let (mut plugs, mut unplugs) = ((0, 0), (0, 0));
        for _ in 0..rounds {
            let (n, ns) = phase(|addr, nb_blocks| Request::Plug { addr, nb_blocks });
            plugs = (plugs.0 + n, plugs.1 + ns);
            mapping.touch(0, blocks * size);
            let (n, ns) = phase(|addr, nb_blocks| Request::Unplug { addr, nb_blocks });
            unplugs = (unplugs.0 + n, unplugs.1 + ns);
        }
        for (kind, (n, ns)) in [("PLUG", plugs), ("UNPLUG", unplugs)] {
            rows.push((
                format!("{kind} {label}"),
                n,
                ns as f64 / n.max(1) as f64 / 1000.0,
            ));
        }
    }
    // Each UNPLUG was a batch of its own with one discard, done after its answer: wait for
    // the last one.
    let unplugs = handle.status().counters.unplug;
    while handle.status().discard.count < unplugs && started.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let status = handle.status();

    println!(
        "{title}: virtio-mem device thread, {rounds} rounds, region {} MiB, block 2 MiB",
        REGION / MIB
    );
    println!();
    println!("| requests | count | device time per request, mean (µs) |");
    println!("| --- | --- | --- |");
    for (what, n, mean) in rows {
        println!("| {what} | {n} | {mean:.2} |");
    }
    println!();
    println!("| over all requests (vm.counters) | value |");
    println!("| --- | --- |");
    let l = status.latency;
    println!("| latency_count | {} |", l.count);
    println!(
        "| latency_median_ns (last {} requests) | {} |",
        l.window, l.median_ns
    );
    println!("| latency_max_ns | {} |", l.max_ns);
    let d = status.discard;
    println!("| discard_count (after the answer) | {} |", d.count);
    println!("| discard_median_ns | {} |", d.median_ns);
    println!("| discard_max_ns | {} |", d.max_ns);
    println!("| discard_errors | {} |", status.counters.discard_errors);
    drop(bed);
}
