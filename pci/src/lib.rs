//! PCI for Accordion (work in progress).
#![warn(missing_docs)]

mod address;
mod allocator;
mod bar;
mod bus;
mod bus_device;
mod bytes;
mod config_io;
mod config_mmio;
mod configuration;
mod device;
mod host_bridge;
mod kvm;
mod msi;
mod msix;

pub use address::{PciAddress, CONFIG_ADDRESS_ENABLE};
pub use allocator::{AllocatorError, BarAllocator, MmioWindow, MIN_BAR_ALLOCATION};
pub use bar::{BarKind, BarRegion, BarReprogram, BarRequest, NUM_BARS};
pub use bus::{AddedDevice, BarMover, PciBus, PciBusError, MAX_DEVICES};
pub use bus_device::BusDevice;
pub use config_io::{PciConfigIo, PCI_CONFIG_IO_PORT, PCI_CONFIG_IO_PORT_SIZE};
pub use config_mmio::{PciConfigMmio, ECAM_BUS_SIZE};
pub use configuration::*;
pub use device::{DeviceError, PciBarBusDevice, PciDevice};
pub use host_bridge::{PciRoot, HOST_BRIDGE_DEVICE_ID, HOST_BRIDGE_VENDOR_ID};
pub use kvm::{GsiRoutingTable, KvmMsiGroup, FIRST_MSI_GSI, IOAPIC_PINS, LAST_MSI_GSI};
pub use msi::{MsiError, MsiInterruptGroup, MsiMessage};
pub use msix::*;
