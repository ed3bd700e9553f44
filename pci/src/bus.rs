//! The root bus: up to 32 devices on bus 0, function 0 only, the host bridge at 00:00.0.

use std::sync::{Arc, Mutex};

use crate::address::PciAddress;
use crate::allocator::{AllocatorError, BarAllocator};
use crate::bar::{BarRegion, BarReprogram};
use crate::configuration::ConfigError;
use crate::device::{DeviceError, PciDevice};
use crate::host_bridge::PciRoot;

/// Devices on one bus.
pub const MAX_DEVICES: usize = 32;

/// What every access to an absent function reads.
const ABSENT: u32 = 0xffff_ffff;

/// The VMM's side of a BAR move: moves the MMIO mapping (the [`crate::PciBarBusDevice`]
/// and anything else at the BAR's address) from `change.old_addr` to `change.new_addr`.
///
/// Called from a vCPU thread, with the bus and the device locked: it must not touch
/// either. If it fails, the device is not told and the BAR keeps its old mapping.
pub trait BarMover: Send + Sync {
    /// Moves the mapping of BAR `change.index` of the device in `slot`.
    fn move_bar(&self, slot: u8, change: &BarReprogram) -> Result<(), DeviceError>;
}

/// Why a device could not be added.
#[derive(Debug, thiserror::Error)]
pub enum PciBusError {
    /// All 32 slots are taken.
    #[error("the PCI bus is full ({MAX_DEVICES} devices)")]
    Full,
    /// A BAR could not be placed.
    #[error("device {slot:02x}: {source}")]
    Allocate {
        /// The slot the device would have had.
        slot: u8,
        /// What the allocator said.
        #[source]
        source: AllocatorError,
    },
    /// The device refused a BAR placement.
    #[error("device {slot:02x}: {source}")]
    AssignBar {
        /// The slot the device would have had.
        slot: u8,
        /// What the device said.
        #[source]
        source: ConfigError,
    },
}

/// A device the bus accepted: where it is and where its BARs are. The VMM puts a
/// [`crate::PciBarBusDevice`] for each BAR on its MMIO bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedDevice {
    /// Device number on bus 0.
    pub slot: u8,
    /// The device's BARs, as placed.
    pub bars: Vec<BarRegion>,
}

/// Bus 0 and its devices.
pub struct PciBus {
    devices: Vec<Option<Arc<Mutex<dyn PciDevice>>>>,
    mover: Arc<dyn BarMover>,
}

impl PciBus {
    /// A bus with just the host bridge, which moves BAR mappings through `mover`.
    pub fn new(mover: Arc<dyn BarMover>) -> Self {
        let mut devices: Vec<Option<Arc<Mutex<dyn PciDevice>>>> = vec![None; MAX_DEVICES];
        devices[0] = Some(Arc::new(Mutex::new(PciRoot::new())));
        PciBus { devices, mover }
    }

    /// Adds `device` in the first free slot, placing its BARs with `allocator`. On failure
    /// nothing is added and every BAR allocated for it is given back.
    pub fn add_device(
        &mut self,
        device: Arc<Mutex<dyn PciDevice>>,
        allocator: &mut BarAllocator,
    ) -> Result<AddedDevice, PciBusError> {
        let slot = self
            .devices
            .iter()
            .position(Option::is_none)
            .ok_or(PciBusError::Full)?;
        // `slot` < 32.
        let slot = slot as u8;
        let placed = {
            let mut dev = device.lock().unwrap_or_else(|e| e.into_inner());
            place_bars(&mut *dev, slot, allocator)?
        };
        self.devices[usize::from(slot)] = Some(device);
        Ok(AddedDevice { slot, bars: placed })
    }

    /// The device in `slot`.
    pub fn device(&self, slot: u8) -> Option<Arc<Mutex<dyn PciDevice>>> {
        self.devices.get(usize::from(slot)).cloned().flatten()
    }

    /// The device an access is for, if it exists (bus 0, function 0, an occupied slot).
    fn target(&self, address: &PciAddress) -> Option<&Arc<Mutex<dyn PciDevice>>> {
        if address.bus != 0 || address.function != 0 {
            return None;
        }
        self.devices.get(usize::from(address.device))?.as_ref()
    }

    /// Reads a configuration register; all ones where there is no function.
    pub fn read_config(&self, address: &PciAddress) -> u32 {
        match self.target(address) {
            Some(device) => device
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .read_config_register(address.register),
            None => ABSENT,
        }
    }

    /// Writes `data` at byte `offset` of a configuration register; ignored where there is
    /// no function. A BAR move the write causes is carried out through the [`BarMover`],
    /// then the device is told.
    pub fn write_config(&self, address: &PciAddress, offset: u64, data: &[u8]) {
        let Some(device) = self.target(address) else {
            return;
        };
        let mut device = device.lock().unwrap_or_else(|e| e.into_inner());
        let Some(change) = device.write_config_register(address.register, offset, data) else {
            return;
        };
        if let Err(e) = self.follow_bar_move(address.device, &mut *device, &change) {
            log::error!("PCI {:02x}: {e}", address.device);
        }
    }

    /// Carries out a move of one of `device`'s BARs (it sits in `slot`): through the
    /// [`BarMover`], then the device is told. A guest write that reprograms a BAR comes
    /// here, and so does a restored configuration space that puts one elsewhere.
    pub fn follow_bar_move(
        &self,
        slot: u8,
        device: &mut dyn PciDevice,
        change: &BarReprogram,
    ) -> Result<(), String> {
        self.mover.move_bar(slot, change).map_err(|e| {
            format!(
                "cannot move BAR {} from {:#x} to {:#x}: {e}",
                change.index, change.old_addr, change.new_addr
            )
        })?;
        device.move_bar(change).map_err(|e| {
            format!(
                "the device failed to follow BAR {} to {:#x}: {e}",
                change.index, change.new_addr
            )
        })
    }
}

/// Allocates and assigns every BAR `device` asks for; gives them all back on failure.
fn place_bars(
    device: &mut dyn PciDevice,
    slot: u8,
    allocator: &mut BarAllocator,
) -> Result<Vec<BarRegion>, PciBusError> {
    let mut placed = Vec::new();
    let result = device.bar_requests().iter().try_for_each(|request| {
        let region = allocator
            .allocate(request)
            .map_err(|source| PciBusError::Allocate { slot, source })?;
        placed.push(region);
        device
            .assign_bar(&region)
            .map_err(|source| PciBusError::AssignBar { slot, source })
    });
    if let Err(e) = result {
        for region in &placed {
            if let Err(free) = allocator.free(region) {
                log::error!("PCI {slot:02x}: {free}");
            }
        }
        return Err(e);
    }
    Ok(placed)
}
