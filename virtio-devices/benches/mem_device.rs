//! The virtio-mem device thread's own time per request over `HostMemoryBackend` alone (no
//! guest, no KVM): see `virtio_devices::testing::mem_bench`.
//!
//! Run: `scripts/bench-device.sh` (or `cargo bench -p virtio-devices --features test-utils
//! --bench mem_device`). Environment: `BENCH_ROUNDS` (default 10).

use virtio_devices::testing::mem_bench::{rounds, run, Mapping, REGION};

fn main() {
    // `cargo bench` passes `--bench`; nothing else is understood.
    let mapping = Mapping::new(REGION, libc::PROT_READ | libc::PROT_WRITE);
    // SAFETY: `run` drops the device, and the backend with it, before it returns, while
    // `mapping` lives to the end of main; only the benchmark's guest writes its blocks.
    let backend = unsafe { mapping.backend() };
    run("HostMemoryBackend (no slots)", backend, &mapping, rounds());
}
