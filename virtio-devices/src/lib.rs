//! Accordion's virtio devices.
//!
//! - [`VirtioDevice`] ([`device`]): what a device is to a transport, and
//!   [`VirtioInterrupt`], how it interrupts the driver.
//! - [`transport::pci`]: the modern virtio-pci transport, [`VirtioPciDevice`].
//! - [`mem`]: virtio-mem, its transport-independent core and the [`mem::VirtioMem`] device.

#![warn(missing_docs)]

pub mod device;
pub mod mem;
pub mod transport;
pub mod view;

#[cfg(any(test, feature = "test-utils"))]
pub mod testing;

pub use device::{
    ActivateContext, ActivateError, InterruptError, QueuePosition, ResetError, VirtioDevice,
    VirtioInterrupt, VirtioInterruptType,
};
pub use transport::pci::{VirtioPciDevice, VirtioPciError};
