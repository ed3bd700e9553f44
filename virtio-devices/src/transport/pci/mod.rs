//! The modern virtio-pci transport (virtio 1.x §4.1): [`VirtioPciDevice`] puts any
//! [`crate::VirtioDevice`] on the PCI bus.
//!
//! - [`layout`]: where the areas sit in BAR 0.
//! - [`capabilities`]: the vendor capabilities that announce them.
//! - `common_cfg`: the common configuration structure (features, status, queues).
//! - [`status`]: the device status state machine.
//! - `interrupt`: ISR, MSI-X vectors and [`crate::VirtioInterrupt`] on MSI-X.
//! - `notify`: queue notification eventfds and their ioeventfd registration.
//! - `pci_cfg`: the configuration-space window into BAR 0.
//! - [`device`]: the PCI function tying them together.
//! - [`state`]: its state saved for a snapshot and brought back.
//!
//! # Wiring (what the VMM does)
//!
//! 1. Build the device, for example a [`crate::mem::VirtioMem`].
//! 2. Create its MSI group with [`msix_vector_count`]`(queues)` vectors
//!    (`pci::KvmMsiGroup::new(routing, count)`).
//! 3. [`VirtioPciDevice::new`] with guest memory, the group and the `hypervisor::Vm`; put it
//!    in an `Arc<Mutex<_>>`.
//! 4. `pci::PciBus::add_device` (which places BAR 0), then a `pci::PciBarBusDevice` for BAR 0
//!    on the MMIO bus at the address it returned.
//! 5. [`VirtioPciDevice::register_ioevents`].

pub mod capabilities;
mod common_cfg;
pub mod device;
pub mod error;
mod interrupt;
pub mod layout;
mod notify;
mod pci_cfg;
pub mod state;
pub mod status;

pub use device::{
    msix_vector_count, pci_class, DeferredWorkNotifier, VirtioPciDevice, VIRTIO_PCI_DEVICE_ID_BASE,
    VIRTIO_PCI_REVISION, VIRTIO_PCI_VENDOR_ID,
};
pub use error::VirtioPciError;
pub use interrupt::VIRTIO_MSI_NO_VECTOR;
pub use state::{QueueState, StateError, VirtioPciState};

#[cfg(test)]
mod tests;
