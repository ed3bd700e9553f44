//! Fuzzes the whole API request path: arbitrary bytes, split into reads as the input
//! chooses, go through micro_http's real connection state machine over an in-memory
//! stream; every complete request through `routes::parse`, and what it asks for through a
//! model of the VMM thread (configuration validation, memory layout, resize planning).
//! Every response is checked as the client would read it (see `vmm::api::harness`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vmm::api::harness::run(data);
});
