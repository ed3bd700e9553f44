//! PCI for Accordion: the root bus with its host bridge, type-0 configuration spaces, BAR
//! placement, capability lists, MSI-X, and both configuration access mechanisms.
//!
//! # Pieces
//!
//! - [`PciConfiguration`]: one function's 256-byte configuration space (plus 4 KiB of
//!   extended space reading as zero): identity ([`PciHeader`]), command/status, memory BARs
//!   with the size probe ([`PciConfiguration::add_bar`]), the capability list
//!   ([`PciConfiguration::add_capability`]), and a write mask per register. A guest write
//!   that moves a BAR comes back as a [`BarReprogram`].
//! - [`PciDevice`]: what a function implements: access to its [`PciConfiguration`] (the
//!   configuration register methods forward to it unless overridden), BAR requests, BAR
//!   reads and writes, following a BAR move. [`PciRoot`] is the host bridge.
//! - [`PciBus`]: bus 0, up to 32 devices, function 0 only, the host bridge at 00:00.0.
//!   [`PciBus::add_device`] places the device's BARs with a [`BarAllocator`] (32-bit and
//!   64-bit [`MmioWindow`]s, on `vm-allocator`); BAR moves by the guest go through the
//!   VMM's [`BarMover`], then to the device.
//! - [`PciConfigIo`] (ports 0xCF8..=0xCFF) and [`PciConfigMmio`] (ECAM): [`BusDevice`]s
//!   that decode a [`PciAddress`] and forward to the bus. Absent functions read all ones.
//! - [`PciBarBusDevice`]: one BAR of a device as a [`BusDevice`] for the MMIO bus.
//! - MSI-X: [`MsixCapability`] (the capability bytes), [`MsixConfig`] (table, PBA, masks,
//!   pending bits), delivering through an [`MsiInterruptGroup`]. On KVM that is
//!   [`KvmMsiGroup`]: a GSI and an irqfd per vector, routes kept in the VM-wide
//!   [`GsiRoutingTable`] (which also holds the legacy IOAPIC and 8259 routes, because
//!   installing a routing table replaces the whole of it).
//!
//! Nothing here panics on guest input: any offset and any access size is either served or
//! ignored (reads of what is not there return all ones, or zeros inside a region).
//!
//! # Wiring it into the VMM
//!
//! 1. Create one [`GsiRoutingTable`] for the VM (after the irqchip) and share it.
//! 2. Create a [`BarAllocator`] over the 32-bit and 64-bit MMIO windows; give the same
//!    windows ([`BarAllocator::mmio32_window`], [`BarAllocator::mmio64_window`]) to the
//!    DSDT's host bridge `_CRS`.
//! 3. Create the [`PciBus`] with a [`BarMover`] that moves entries of the MMIO bus, and put
//!    it in an `Arc<Mutex<_>>`.
//! 4. Register a [`PciConfigIo`] on the port bus at [`PCI_CONFIG_IO_PORT`] (size
//!    [`PCI_CONFIG_IO_PORT_SIZE`]) and a [`PciConfigMmio`] on the MMIO bus at the ECAM base
//!    (size [`ECAM_BUS_SIZE`] per bus), as the MCFG says.
//! 5. For each device: [`PciBus::add_device`], then a [`PciBarBusDevice`] on the MMIO bus
//!    for each returned BAR region.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use pci::*;
//!
//! /// The VMM's mover would shift the BAR's entry on its MMIO bus.
//! struct Mover;
//! impl BarMover for Mover {
//!     fn move_bar(&self, _slot: u8, _change: &BarReprogram) -> Result<(), DeviceError> {
//!         Ok(())
//!     }
//! }
//!
//! /// A function with one 64-bit BAR holding its MSI-X table (at 0) and PBA (at 0x800).
//! struct Device {
//!     config: PciConfiguration,
//!     msix: MsixConfig,
//!     msix_offset: usize,
//! }
//!
//! impl Device {
//!     fn new(group: Arc<dyn MsiInterruptGroup>) -> Result<Self, Box<dyn std::error::Error>> {
//!         let mut config = PciConfiguration::new(&PciHeader {
//!             vendor_id: 0x1af4,
//!             device_id: 0x1058,
//!             class_code: 0x05,
//!             ..PciHeader::default()
//!         });
//!         let msix_offset = MsixCapability::new(2, 0, 0, 0, 0x800)?.add_to(&mut config)?;
//!         Ok(Device { config, msix: MsixConfig::new(2, group)?, msix_offset })
//!     }
//! }
//!
//! impl PciDevice for Device {
//!     fn bar_requests(&self) -> Vec<BarRequest> {
//!         vec![BarRequest { index: 0, size: 0x1000, kind: BarKind::Memory64, prefetchable: false }]
//!     }
//!     fn config(&self) -> &PciConfiguration {
//!         &self.config
//!     }
//!     fn config_mut(&mut self) -> &mut PciConfiguration {
//!         &mut self.config
//!     }
//!     fn write_config_register(&mut self, reg: usize, offset: u64, data: &[u8])
//!         -> Option<BarReprogram> {
//!         let moved = self.config.write_register(reg, offset, data);
//!         self.msix.config_written(&self.config, self.msix_offset, reg);
//!         moved
//!     }
//!     fn read_bar(&mut self, _index: u8, offset: u64, data: &mut [u8]) {
//!         match offset {
//!             0x800.. => self.msix.read_pba(offset - 0x800, data),
//!             _ => self.msix.read_table(offset, data),
//!         }
//!     }
//!     fn write_bar(&mut self, _index: u8, offset: u64, data: &[u8]) {
//!         if offset < 0x800 {
//!             self.msix.write_table(offset, data);
//!         }
//!     }
//! }
//!
//! /// Stands in for `KvmMsiGroup::new(routing, 2)?` in this example.
//! struct NoInterrupts;
//! impl MsiInterruptGroup for NoInterrupts {
//!     fn update(&self, _: u16, _: MsiMessage, _: bool) -> Result<(), MsiError> { Ok(()) }
//!     fn trigger(&self, _: u16) -> Result<(), MsiError> { Ok(()) }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut allocator = BarAllocator::new(
//!     MmioWindow { base: 0xc000_0000, size: 0x1000_0000 },
//!     MmioWindow { base: 0x100_0000_0000, size: 0x100_0000_0000 },
//! )?;
//! let bus = Arc::new(Mutex::new(PciBus::new(Arc::new(Mover))));
//! let device = Arc::new(Mutex::new(Device::new(Arc::new(NoInterrupts))?));
//! let added = bus.lock().unwrap().add_device(device.clone(), &mut allocator)?;
//! assert_eq!(added.slot, 1);
//! for bar in &added.bars {
//!     // The VMM inserts this on its MMIO bus at bar.addr, bar.size bytes.
//!     let _mmio = PciBarBusDevice::new(device.clone(), bar.index);
//! }
//!
//! // The guest reads the vendor and device id of 00:01.0 through the ports.
//! let mut io = PciConfigIo::new(bus.clone());
//! io.write(0, &0x8000_0800u32.to_le_bytes());
//! let mut id = [0u8; 4];
//! io.read(4, &mut id);
//! assert_eq!(u32::from_le_bytes(id), 0x1058_1af4);
//! # Ok(())
//! # }
//! ```
//!
//! # Locking
//!
//! Configuration accesses lock the bus, then the device, then call the [`BarMover`]; BAR
//! accesses lock only the device. The mover must therefore not lock the bus or a device,
//! and the MMIO bus must not hold its own lock while it calls a device (the VMM's `Bus`
//! releases it before dispatching).
#![warn(missing_docs)]

#[cfg(test)]
mod access_tests;
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
mod intx;
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
pub use intx::{IntxLine, KvmIntx, INTERRUPT_PIN_INTA, INTX_GSIS};
pub use kvm::{GsiRoutingTable, KvmMsiGroup, FIRST_MSI_GSI, IOAPIC_PINS, LAST_MSI_GSI};
pub use msi::{MsiError, MsiInterruptGroup, MsiMessage};
pub use msix::*;
