//! Fuzzes the virtio-mem request path: arbitrary bytes become a device geometry and a sequence
//! of requests (raw and structured), resizes, busy toggles, system resets, backend failures
//! and config reads, run against the state machine with a fake backend; every invariant is
//! checked after every step (see `virtio_devices::mem::harness`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    virtio_devices::mem::harness::run(data);
});
