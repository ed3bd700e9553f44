//! Fuzzes what a live migration's destination runs on the sender's bytes: the whole stream
//! through the receiver into a guarded guest memory, a `Config` payload, a `State` payload
//! (the first byte picks one; see `vmm::migration::fuzzing`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vmm::migration::fuzzing::run(data);
});
