//! Transports: how a [`crate::VirtioDevice`] is exposed to the guest. Only modern
//! virtio-pci ([`pci`]) for now.

pub mod pci;
