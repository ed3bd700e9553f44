//! Fuzzes the decoders a restore runs on a snapshot's `state.json`: the whole file, a
//! virtio-mem device's memory state, a PCI configuration space and an MSI-X table (the
//! first byte picks one; see `vmm::snapshot::fuzzing`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vmm::snapshot::fuzzing::run(data);
});
