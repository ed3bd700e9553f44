//! PCI for Accordion (work in progress).
#![warn(missing_docs)]

mod bar;
mod bus_device;
mod bytes;
mod configuration;

pub use bar::{BarKind, BarRegion, BarReprogram, BarRequest, NUM_BARS};
pub use bus_device::BusDevice;
pub use configuration::*;
mod msi;
mod msix;
pub use msi::{MsiError, MsiInterruptGroup, MsiMessage};
pub use msix::*;
