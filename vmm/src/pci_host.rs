//! The PCI host: root bus with its host bridge, configuration access through ports
//! 0xCF8/0xCFC and through ECAM, BAR allocation in the two MMIO windows, and the host
//! bridge's description for the DSDT and MCFG (its windows are exactly the allocator's).

use std::sync::{Arc, Mutex, Weak};

use pci::{
    BarAllocator, BarMover, BarReprogram, DeviceError, MmioWindow, PciBarBusDevice, PciBus,
    PciConfigIo, PciConfigMmio, PciDevice, PCI_CONFIG_IO_PORT, PCI_CONFIG_IO_PORT_SIZE,
};

use crate::bus::{BusError, Buses};

#[derive(Debug, thiserror::Error)]
pub enum PciHostError {
    #[error("PCI windows: {0}")]
    Windows(String),
    #[error("PCI bus: {0}")]
    Bus(#[from] BusError),
    #[error("PCI device: {0}")]
    Device(String),
}

/// Follows BAR moves on the MMIO bus. It holds the buses weakly: the buses hold the PCI
/// configuration devices, which hold the PCI bus, which holds this mover, and a strong
/// reference here would keep the whole VM (its devices, eventfds and guest memory) alive
/// after the VM is dropped.
struct MmioBarMover(Weak<Buses>);

impl BarMover for MmioBarMover {
    fn move_bar(&self, slot: u8, change: &BarReprogram) -> Result<(), DeviceError> {
        log::debug!(
            "PCI 00:{slot:02x}.0 BAR {} moves from {:#x} to {:#x}",
            change.index,
            change.old_addr,
            change.new_addr
        );
        let buses = self
            .0
            .upgrade()
            .ok_or_else(|| DeviceError::from("the VM is gone"))?;
        buses
            .mmio
            .relocate(change.old_addr, change.new_addr)
            .map_err(|e| Box::new(e) as DeviceError)
    }
}

/// The bridge has one bus, 0: every device sits on it and there are no bridges. The
/// tables say so rather than describe the whole ECAM window (256 buses): Linux looks for
/// peer host bridges on every bus the MCFG covers (`pcibios_fixup_peer_bridges`), 32
/// config-space reads per bus, each a VM exit; over 255 empty buses that was 3-4 s of boot
/// in the nested test host.
const LAST_BUS: u8 = 0;
/// ECAM gives each bus 1 MiB of configuration space.
const ECAM_BYTES_PER_BUS: u64 = 1 << 20;

pub struct PciHost {
    bus: Arc<Mutex<PciBus>>,
    /// The 0xCF8/0xCFC pair, whose address latch a snapshot saves.
    config_io: Arc<Mutex<PciConfigIo>>,
    allocator: BarAllocator,
    buses: Arc<Buses>,
    /// The INTx lines given out, for the DSDT's `_PRT`.
    intx_routes: Vec<acpi::PciIntxRoute>,
}

impl PciHost {
    /// The root bus, reachable through 0xCF8/0xCFC and ECAM on `buses`; BARs go in the
    /// 32-bit window below the ECAM and the 64-bit window at `mmio64_start`.
    pub fn new(buses: &Arc<Buses>, mmio64_start: u64) -> Result<Self, PciHostError> {
        let mmio32 = MmioWindow {
            base: arch::layout::PCI_MMIO32_START,
            size: arch::layout::PCI_MMIO32_SIZE,
        };
        let mmio64 = MmioWindow {
            base: mmio64_start,
            size: arch::layout::PCI_MMIO64_SIZE,
        };
        let allocator =
            BarAllocator::new(mmio32, mmio64).map_err(|e| PciHostError::Windows(e.to_string()))?;
        let bus = Arc::new(Mutex::new(PciBus::new(Arc::new(MmioBarMover(
            Arc::downgrade(buses),
        )))));
        let config_io = Arc::new(Mutex::new(PciConfigIo::new(bus.clone())));
        buses.pio.insert(
            "pci-config-io",
            config_io.clone(),
            PCI_CONFIG_IO_PORT,
            PCI_CONFIG_IO_PORT_SIZE,
        )?;
        buses.mmio.insert(
            "pci-ecam",
            Arc::new(Mutex::new(PciConfigMmio::new(bus.clone()))),
            arch::layout::PCI_ECAM_START,
            arch::layout::PCI_ECAM_SIZE,
        )?;
        Ok(PciHost {
            bus,
            config_io,
            allocator,
            buses: buses.clone(),
            intx_routes: Vec::new(),
        })
    }

    /// Puts `device` in the first free slot and maps its BARs on the MMIO bus; returns the
    /// slot. (Later BAR moves follow through `MmioBarMover`.)
    /// `name` is what `vm.counters` calls its BARs' accesses.
    pub fn add_device(
        &mut self,
        name: &str,
        device: Arc<Mutex<dyn PciDevice>>,
    ) -> Result<u8, PciHostError> {
        let added = self
            .bus
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add_device(device.clone(), &mut self.allocator)
            .map_err(|e| PciHostError::Device(e.to_string()))?;
        for bar in &added.bars {
            self.buses.mmio.insert(
                format!("{name}-bar{}", bar.index),
                Arc::new(Mutex::new(PciBarBusDevice::new(device.clone(), bar.index))),
                bar.addr,
                bar.size,
            )?;
        }
        Ok(added.slot)
    }

    /// CONFIG_ADDRESS (port 0xCF8) as the guest last wrote it.
    pub fn config_address(&self) -> u32 {
        self.config_io
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .config_address()
    }

    /// Brings back a saved CONFIG_ADDRESS.
    pub fn set_config_address(&self, value: u32) {
        self.config_io
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set_config_address(value);
    }

    /// Carries out a BAR move of the function in `slot` (`device`, locked by the caller):
    /// a restored configuration space that puts a BAR elsewhere.
    pub fn follow_bar_move(
        &self,
        slot: u8,
        device: &mut dyn PciDevice,
        change: &BarReprogram,
    ) -> Result<(), String> {
        self.bus
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .follow_bar_move(slot, device, change)
    }

    /// Gives the function in `slot` an INTx line of its own: the next free GSI of
    /// [`pci::INTX_GSIS`], routed in the DSDT. `None` once they are all given out (the
    /// function then interrupts through MSI-X only).
    pub fn assign_intx(&mut self, slot: u8) -> Option<u32> {
        let gsi = pci::INTX_GSIS
            .clone()
            .find(|g| self.intx_routes.iter().all(|r| r.gsi != *g))?;
        self.intx_routes
            .push(acpi::PciIntxRoute { device: slot, gsi });
        Some(gsi)
    }

    /// The host bridge as the DSDT (`_CRS`, `_PRT`) and the MCFG describe it: bus 0 only.
    pub fn acpi_bridge(&self) -> acpi::PciHostBridge {
        let (mmio32, mmio64) = (
            self.allocator.mmio32_window(),
            self.allocator.mmio64_window(),
        );
        acpi::PciHostBridge {
            ecam_base: arch::layout::PCI_ECAM_START,
            ecam_size: ECAM_BYTES_PER_BUS * (u64::from(LAST_BUS) + 1),
            bus_start: 0,
            bus_end: LAST_BUS,
            mmio32_base: mmio32.base as u32,
            mmio32_size: mmio32.size as u32,
            mmio64_base: mmio64.base,
            mmio64_size: mmio64.size,
            intx_routes: self.intx_routes.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intx_lines_are_given_out_once_each_until_none_are_left() {
        let buses = Arc::new(Buses::default());
        let mut host = PciHost::new(&buses, 1 << 40).expect("host");
        let gsis: Vec<Option<u32>> = (1..=9).map(|slot| host.assign_intx(slot)).collect();
        let given: Vec<u32> = gsis.iter().flatten().copied().collect();
        assert_eq!(
            given,
            pci::INTX_GSIS.collect::<Vec<_>>(),
            "one GSI each, in order"
        );
        assert_eq!(gsis[8], None, "the ninth function gets none");
        let routes = host.acpi_bridge().intx_routes;
        assert_eq!(routes.len(), 8);
        assert_eq!(routes[0], acpi::PciIntxRoute { device: 1, gsi: 16 });
    }
}
