//! Accordion's virtio devices.
//!
//! For now this holds the transport-independent core of virtio-mem ([`mem`]); the
//! `VirtioDevice` trait and the virtio-pci transport live beside it once written.

#![warn(missing_docs)]

pub mod mem;
