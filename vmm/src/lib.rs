//! The Accordion VMM: configuration, the VM and its lifecycle, devices, and the control loop.

pub mod api;
pub mod bus;
pub mod config;
pub mod devices;
pub mod event_monitor;
pub mod logger;
pub mod memory;
pub mod migration;
pub mod pci_host;
pub mod seccomp;
pub mod signal_handler;
pub mod snapshot;
pub mod stdin_forwarder;
pub mod unsupported_fields;
pub mod vcpu_exits;
pub mod vcpu_manager;
pub mod vm;
pub mod vm_event;
pub mod vmm;

pub use config::VmConfig;
pub use vmm::{run, ExitStatus, VmmError, VmmOptions};
