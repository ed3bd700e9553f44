//! Test doubles and a test driver shared by the transport and device tests: a fake
//! `hypervisor::Vm` that records ioeventfds, an MSI group that records what it delivers,
//! and a [`driver::TestBed`] that puts a device on a real `pci::PciBus` and talks to it the
//! way a guest driver does.

pub mod driver;
pub mod fake_vm;
pub mod msi;
