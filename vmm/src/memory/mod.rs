//! Elastic guest memory: everything the VMM owns about it, in one place.
//!
//! - [`config`]: `--memory`, `--memory-zone` and their validation.
//! - [`manager`]: placement of zones in the guest's address space, boot RAM and the device
//!   regions' host mappings, and the memslots that expose them.
//! - [`devices`]: the virtio-mem device of each zone that has a region.
//! - [`resize`]: `vm.resize` and `vm.resize-zone`, planned against the zones.
//! - [`numa`]: the guest NUMA topology the ACPI tables describe.
//!
//! docs/design.md ("Guest physical memory", "Resize, end to end") is the map of this module.

pub mod config;
pub mod devices;
pub mod manager;
pub mod numa;
pub mod resize;
