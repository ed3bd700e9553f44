//! Elastic guest memory: everything the VMM owns about it, in one place.
//!
//! - [`config`]: `--memory`, `--memory-zone` and their validation.
//! - [`manager`]: placement of zones in the guest's address space, boot RAM and the device
//!   regions' host mappings, and the memslots that expose them.
//! - [`slots`]: a device region cut into memslots that are in KVM only while they hold
//!   plugged blocks.
//! - [`protected`]: the virtio-mem backend that maps those slots and keeps unplugged memory
//!   `PROT_NONE`; [`host_ops`] is what it does to the host and KVM; [`access`] is the
//!   guest memory the VMM's own threads may touch.
//! - [`unplugged`]: what a guest meets where it touches memory it has not plugged.
//! - [`devices`]: the virtio-mem device of each zone that has a region.
//! - [`resize`]: `vm.resize` and `vm.resize-zone`, planned against the zones.
//! - [`numa`]: the guest NUMA topology the ACPI tables describe.
//!
//! docs/design.md ("Guest physical memory", "Resize, end to end") is the map of this module.

pub mod access;
pub mod config;
pub mod devices;
pub mod host_ops;
pub mod manager;
pub mod numa;
pub mod protected;
pub mod resize;
pub mod slots;
pub mod unplugged;
