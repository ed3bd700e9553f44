//! The VM's whole GSI routing table, kept in one place.
//!
//! `KVM_SET_GSI_ROUTING` replaces the table, so whoever sets it must pass every route: the
//! legacy interrupt controller pins as well as every device's MSI routes. This object holds
//! them all; devices change their MSI routes through it, and every change reinstalls the
//! complete table.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use hypervisor::{IrqRoute, Vm};
use vm_allocator::IdAllocator;

use crate::msi::{MsiError, MsiMessage};

/// Pins of the in-kernel IOAPIC; GSIs `0..IOAPIC_PINS` are routed to them.
pub const IOAPIC_PINS: u32 = 24;
/// Pins of the two in-kernel 8259s together; GSIs `0..16` are also routed to them.
const PIC_PINS: u32 = 16;
/// First GSI handed out for MSI routes.
pub const FIRST_MSI_GSI: u32 = IOAPIC_PINS;
/// Last GSI handed out for MSI routes (KVM accepts GSIs below 4096).
pub const LAST_MSI_GSI: u32 = 4095;

const _: () = assert!(FIRST_MSI_GSI <= LAST_MSI_GSI);

/// The routes KVM installs by itself when the irqchip is created: GSI n to IOAPIC pin n for
/// n < 24, and for n < 16 also to pin n % 8 of the master (n < 8) or slave 8259.
fn legacy_routes() -> Vec<IrqRoute> {
    let mut routes = Vec::new();
    for gsi in 0..IOAPIC_PINS {
        if gsi < PIC_PINS {
            routes.push(IrqRoute::PicPin {
                gsi,
                chip: gsi / 8,
                pin: gsi % 8,
            });
        }
        routes.push(IrqRoute::IoapicPin { gsi, pin: gsi });
    }
    routes
}

/// The routing table and the GSIs available for MSI.
struct State {
    msi: BTreeMap<u32, MsiMessage>,
    gsis: IdAllocator,
}

/// The complete GSI routing table of a VM, shared by every device that routes MSIs.
pub struct GsiRoutingTable {
    vm: Arc<dyn Vm>,
    legacy: Vec<IrqRoute>,
    state: Mutex<State>,
}

impl GsiRoutingTable {
    /// A table holding KVM's default legacy routes (IOAPIC pins 0..24, 8259 pins 0..16) and
    /// no MSI route. Nothing is installed until the first MSI route changes.
    pub fn new(vm: Arc<dyn Vm>) -> Self {
        GsiRoutingTable {
            vm,
            legacy: legacy_routes(),
            state: Mutex::new(State {
                msi: BTreeMap::new(),
                gsis: IdAllocator::new(FIRST_MSI_GSI, LAST_MSI_GSI)
                    .expect("the GSI range is checked when the crate compiles"),
            }),
        }
    }

    /// The VM the table belongs to.
    pub fn vm(&self) -> &Arc<dyn Vm> {
        &self.vm
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A GSI for an MSI route, not yet routed anywhere.
    pub fn allocate_gsi(&self) -> Result<u32, vm_allocator::Error> {
        self.lock().gsis.allocate_id()
    }

    /// Removes `gsi`'s route (reinstalling the table if it had one) and makes the GSI
    /// available again.
    pub fn release_gsi(&self, gsi: u32) -> Result<(), MsiError> {
        let mut state = self.lock();
        let result = self.set_locked(&mut state, gsi, None);
        if let Err(e) = state.gsis.free_id(gsi) {
            log::warn!("releasing GSI {gsi}: {e}");
        }
        result
    }

    /// Routes `gsi` to `msg`, or removes its route with `None`, and installs the table if
    /// that changed it. If installing fails, the table is left as it was.
    pub fn set_msi_route(&self, gsi: u32, msg: Option<MsiMessage>) -> Result<(), MsiError> {
        let mut state = self.lock();
        self.set_locked(&mut state, gsi, msg)
    }

    /// Every route, as last installed or about to be: legacy routes, then MSI routes by GSI.
    pub fn routes(&self) -> Vec<IrqRoute> {
        self.build(&self.lock().msi)
    }

    /// Installs the whole table now (for example after restoring a VM).
    pub fn install(&self) -> Result<(), MsiError> {
        let state = self.lock();
        self.install_locked(&state.msi)
    }

    fn set_locked(
        &self,
        state: &mut State,
        gsi: u32,
        msg: Option<MsiMessage>,
    ) -> Result<(), MsiError> {
        let previous = match msg {
            Some(msg) => state.msi.insert(gsi, msg),
            None => state.msi.remove(&gsi),
        };
        if previous == msg {
            return Ok(());
        }
        let result = self.install_locked(&state.msi);
        if result.is_err() {
            match previous {
                Some(old) => state.msi.insert(gsi, old),
                None => state.msi.remove(&gsi),
            };
        }
        result
    }

    fn install_locked(&self, msi: &BTreeMap<u32, MsiMessage>) -> Result<(), MsiError> {
        let routes = self.build(msi);
        self.vm
            .set_gsi_routing(&routes)
            .map_err(|source| MsiError::Routing {
                routes: routes.len(),
                source,
            })
    }

    fn build(&self, msi: &BTreeMap<u32, MsiMessage>) -> Vec<IrqRoute> {
        let msi_routes = msi.iter().map(|(&gsi, msg)| IrqRoute::Msi {
            gsi,
            address: msg.address(),
            data: msg.data,
        });
        self.legacy.iter().copied().chain(msi_routes).collect()
    }
}
