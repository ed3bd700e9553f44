//! Test doubles and a test driver shared by the transport and device tests: a fake
//! `hypervisor::Vm` that records ioeventfds, an MSI group that records what it delivers,
//! a [`driver::TestBed`] that puts a device on a real `pci::PciBus` and talks to it the
//! way a guest driver does, and [`mem_driver::MemDriver`], a virtio-mem driver's queue.
//!
//! Built for the crate's tests, and with the `test-utils` feature for benchmarks (never in
//! production builds).

pub mod driver;
pub mod fake_vm;
pub mod mem_bench;
pub mod mem_driver;
pub mod msi;
