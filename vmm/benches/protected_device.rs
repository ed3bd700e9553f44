//! The virtio-mem device thread's own time per request with everything a plug and an unplug
//! do in Accordion: the VMM's `ProtectedRegion` backend over a `PROT_NONE` region, which
//! `mprotect`s blocks, adds and removes KVM memslots of 128 MiB on a real KVM VM, republishes
//! the VMM's view of guest memory, and discards. Driven as in
//! `virtio_devices::testing::mem_bench`; no guest runs.
//!
//! Run: `scripts/bench-device.sh` (or `cargo bench -p vmm --bench protected_device`).
//! Needs /dev/kvm. Environment: `BENCH_ROUNDS` (default 10).

use std::sync::Arc;

use hypervisor::kvm::KvmHypervisor;
use hypervisor::Hypervisor;
use virtio_devices::testing::mem_bench::{rounds, run, Mapping, BASE, BLOCK, REGION};
use vm_memory::{GuestAddress, GuestRegionMmap, MmapRegion};
use vmm::memory::access::{AccessibleMemory, RegionMapping};
use vmm::memory::host_ops::HostRegionOps;
use vmm::memory::protected::ProtectedRegion;
use vmm::memory::slots::SlotLayout;

const SLOT: u64 = 128 << 20;

fn main() {
    // `cargo bench` passes `--bench`; nothing else is understood.
    let hypervisor = KvmHypervisor::new().expect("/dev/kvm");
    let vm = hypervisor.create_vm().expect("a KVM VM");
    let mapping = Mapping::new(REGION, libc::PROT_NONE);
    // The view needs some boot RAM; the benchmark's virtqueues live in the test bed's own.
    let boot = MmapRegion::new(1 << 20).expect("boot RAM");
    let boot = Arc::new(GuestRegionMmap::new(boot, GuestAddress(0)).expect("boot region"));
    let access = AccessibleMemory::new(
        vec![boot],
        vec![RegionMapping {
            guest_addr: BASE,
            host_addr: mapping.ptr() as u64,
            size: REGION,
            mmap_flags: libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
        }],
        Vec::new(),
    )
    .expect("the view");
    // SAFETY: `run` drops the device, and the backend with it, before it returns, while
    // `mapping` lives to the end of main; only the benchmark's guest writes its blocks.
    let host = unsafe { mapping.backend() };
    let ops = HostRegionOps {
        host,
        host_addr: mapping.ptr() as u64,
        guest_addr: BASE,
        size: REGION,
        first_slot: 1,
        vm,
        access: Arc::new(access),
        index: 0,
    };
    let backend = ProtectedRegion::new(
        ops,
        SlotLayout::new(REGION, SLOT),
        REGION,
        BLOCK,
        true,
        false,
    )
    .expect("the protected backend");
    run(
        "ProtectedRegion (mprotect, KVM slots of 128 MiB, view, discard)",
        backend,
        &mapping,
        rounds(),
    );
}
