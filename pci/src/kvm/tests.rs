use std::sync::{Arc, Mutex};

use hypervisor::{
    HypervisorError, IoEventAddress, IrqRoute, MemoryRegion, Result as HvResult, Vcpu, Vm, VmState,
};
use vmm_sys_util::eventfd::EventFd;

use super::*;
use crate::msi::{MsiError, MsiInterruptGroup, MsiMessage};

/// A VM that records routing tables and irqfds; `fail_routing` makes the next
/// `set_gsi_routing` fail.
#[derive(Default)]
struct FakeVm {
    tables: Mutex<Vec<Vec<IrqRoute>>>,
    /// (gsi, a duplicate of the eventfd to read what was signalled).
    irqfds: Mutex<Vec<(u32, EventFd)>>,
    unregistered: Mutex<Vec<u32>>,
    fail_routing: Mutex<bool>,
}

fn unsupported<T>() -> HvResult<T> {
    Err(HypervisorError::MissingCapability("fake VM"))
}

impl Vm for FakeVm {
    fn create_vcpu(&self, _id: u32) -> HvResult<Box<dyn Vcpu>> {
        unsupported()
    }
    fn set_memory_region(&self, _region: MemoryRegion) -> HvResult<()> {
        unsupported()
    }
    fn remove_memory_region(&self, _region: MemoryRegion) -> HvResult<()> {
        unsupported()
    }
    fn create_platform_irqchip(&self) -> HvResult<()> {
        unsupported()
    }
    fn set_gsi_routing(&self, routes: &[IrqRoute]) -> HvResult<()> {
        if std::mem::take(&mut *self.fail_routing.lock().unwrap()) {
            return unsupported();
        }
        self.tables.lock().unwrap().push(routes.to_vec());
        Ok(())
    }
    fn register_irqfd(&self, fd: &EventFd, gsi: u32) -> HvResult<()> {
        let dup = fd.try_clone().expect("dup eventfd");
        self.irqfds.lock().unwrap().push((gsi, dup));
        Ok(())
    }
    fn unregister_irqfd(&self, _fd: &EventFd, gsi: u32) -> HvResult<()> {
        self.unregistered.lock().unwrap().push(gsi);
        Ok(())
    }
    fn register_ioevent(
        &self,
        _fd: &EventFd,
        _addr: IoEventAddress,
        _datamatch: Option<u32>,
    ) -> HvResult<()> {
        unsupported()
    }
    fn unregister_ioevent(
        &self,
        _fd: &EventFd,
        _addr: IoEventAddress,
        _datamatch: Option<u32>,
    ) -> HvResult<()> {
        unsupported()
    }
    fn signal_msi(&self, _address: u64, _data: u32) -> HvResult<()> {
        unsupported()
    }
    fn dirty_log(&self, _slot: u32, _size: u64) -> HvResult<Vec<u64>> {
        unsupported()
    }
    fn clock(&self) -> HvResult<hypervisor::kvm_clock_data> {
        unsupported()
    }
    fn set_clock(&self, _clock: &hypervisor::kvm_clock_data) -> HvResult<()> {
        unsupported()
    }
    fn state(&self) -> HvResult<VmState> {
        unsupported()
    }
    fn set_state(&self, _state: &VmState) -> HvResult<()> {
        unsupported()
    }
}

impl FakeVm {
    fn last_table(&self) -> Vec<IrqRoute> {
        self.tables
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap_or_default()
    }
    fn installs(&self) -> usize {
        self.tables.lock().unwrap().len()
    }
}

fn setup() -> (Arc<FakeVm>, Arc<GsiRoutingTable>) {
    let vm = Arc::new(FakeVm::default());
    let routing = Arc::new(GsiRoutingTable::new(vm.clone()));
    (vm, routing)
}

const MSG: MsiMessage = MsiMessage {
    addr_lo: 0xfee0_0000,
    addr_hi: 0x1,
    data: 0x41,
};

fn msi_routes(table: &[IrqRoute]) -> Vec<IrqRoute> {
    table
        .iter()
        .copied()
        .filter(|r| matches!(r, IrqRoute::Msi { .. }))
        .collect()
}

#[test]
fn legacy_routes_match_kvms_default_table() {
    let (_vm, routing) = setup();
    let routes = routing.routes();
    assert_eq!(routes.len(), 16 * 2 + 8);
    for pin in 0..IOAPIC_PINS {
        assert!(routes.contains(&IrqRoute::IoapicPin { gsi: pin, pin }));
    }
    assert!(routes.contains(&IrqRoute::PicPin {
        gsi: 9,
        chip: 1,
        pin: 1
    }));
    assert!(!routes
        .iter()
        .any(|r| matches!(r, IrqRoute::PicPin { gsi, .. } if *gsi >= 16)));
}

#[test]
fn group_registers_one_irqfd_per_vector_on_its_own_gsi() {
    let (vm, routing) = setup();
    let group = KvmMsiGroup::new(routing.clone(), 3).unwrap();
    let gsis: Vec<u32> = vm.irqfds.lock().unwrap().iter().map(|(g, _)| *g).collect();
    assert_eq!(gsis, vec![24, 25, 26]);
    assert_eq!(group.gsi(2), Some(26));
    assert_eq!(group.gsi(3), None);
    assert_eq!(vm.installs(), 0, "masked vectors need no route");
}

#[test]
fn unmasked_vectors_are_routed_and_masked_ones_are_not() {
    let (vm, routing) = setup();
    let group = KvmMsiGroup::new(routing.clone(), 2).unwrap();
    group.update(1, MSG, false).unwrap();
    let table = vm.last_table();
    assert_eq!(table.len(), 41, "legacy routes kept");
    assert_eq!(
        msi_routes(&table),
        vec![IrqRoute::Msi {
            gsi: 25,
            address: 0x1_fee0_0000,
            data: 0x41
        }]
    );
    // The same update again does not reinstall the table.
    group.update(1, MSG, false).unwrap();
    assert_eq!(vm.installs(), 1);
    group.update(1, MSG, true).unwrap();
    assert!(msi_routes(&vm.last_table()).is_empty());
    assert!(matches!(
        group.update(2, MSG, false),
        Err(MsiError::VectorOutOfRange {
            vector: 2,
            count: 2
        })
    ));
}

#[test]
fn two_devices_share_the_table() {
    let (vm, routing) = setup();
    let a = KvmMsiGroup::new(routing.clone(), 1).unwrap();
    let b = KvmMsiGroup::new(routing.clone(), 1).unwrap();
    a.update(0, MSG, false).unwrap();
    b.update(0, MsiMessage { data: 0x42, ..MSG }, false)
        .unwrap();
    let routes = msi_routes(&vm.last_table());
    assert_eq!(routes.len(), 2, "b's install kept a's route: {routes:?}");
    drop(a);
    let routes = msi_routes(&vm.last_table());
    assert_eq!(
        routes,
        vec![IrqRoute::Msi {
            gsi: 25,
            address: 0x1_fee0_0000,
            data: 0x42
        }]
    );
    assert_eq!(*vm.unregistered.lock().unwrap(), vec![24]);
    // a's GSI is free again.
    assert_eq!(routing.allocate_gsi(), Ok(24));
}

#[test]
fn trigger_signals_the_vectors_irqfd() {
    let (vm, routing) = setup();
    let group = KvmMsiGroup::new(routing, 2).unwrap();
    group.trigger(1).unwrap();
    group.trigger(1).unwrap();
    let irqfds = vm.irqfds.lock().unwrap();
    assert_eq!(irqfds[1].1.read().unwrap(), 2);
    assert!(irqfds[0].1.read().is_err(), "vector 0 was not signalled");
    assert!(group.trigger(5).is_err());
}

#[test]
fn failed_install_leaves_the_table_unchanged() {
    let (vm, routing) = setup();
    let group = KvmMsiGroup::new(routing.clone(), 1).unwrap();
    *vm.fail_routing.lock().unwrap() = true;
    assert!(matches!(
        group.update(0, MSG, false),
        Err(MsiError::Routing { routes: 41, .. })
    ));
    assert!(msi_routes(&routing.routes()).is_empty());
    // A retry installs it.
    group.update(0, MSG, false).unwrap();
    assert_eq!(msi_routes(&vm.last_table()).len(), 1);
}

#[test]
fn msix_config_drives_kvm_routes() {
    use crate::msix::{MsixConfig, MSIX_ENABLE};
    let (vm, routing) = setup();
    let group = Arc::new(KvmMsiGroup::new(routing, 1).unwrap());
    let mut msix = MsixConfig::new(1, group).unwrap();
    msix.set_message_control(MSIX_ENABLE);
    msix.write_table(0, &0x1_fee0_0000u64.to_le_bytes());
    msix.write_table(8, &0x41u32.to_le_bytes());
    msix.write_table(12, &0u32.to_le_bytes());
    assert_eq!(
        msi_routes(&vm.last_table()),
        vec![IrqRoute::Msi {
            gsi: 24,
            address: 0x1_fee0_0000,
            data: 0x41
        }]
    );
    msix.trigger(0).unwrap();
    assert_eq!(vm.irqfds.lock().unwrap()[0].1.read().unwrap(), 1);
}
