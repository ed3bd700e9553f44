//! A `hypervisor::Vm` that records ioeventfd registrations and supports nothing else.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use hypervisor::{
    HypervisorError, IoEventAddress, IrqRoute, MemoryRegion, Result as HvResult, Vcpu, Vm, VmState,
};
use vmm_sys_util::eventfd::EventFd;

/// See the module doc.
#[derive(Default)]
pub struct FakeVm {
    /// Registered ioeventfds: address and a duplicate of the eventfd (what KVM would signal).
    ioevents: Mutex<Vec<(u64, EventFd)>>,
    /// Addresses unregistered so far, in order.
    pub unregistered: Mutex<Vec<u64>>,
    /// `register_ioevent` fails once this many ioeventfds are registered (0: never fails).
    pub ioevent_limit: AtomicUsize,
    /// How many of the next `register_ioevent` calls fail.
    pub ioevent_failures: AtomicUsize,
}

fn unsupported<T>() -> HvResult<T> {
    Err(HypervisorError::MissingCapability("fake VM"))
}

fn mmio(addr: IoEventAddress) -> u64 {
    match addr {
        IoEventAddress::Mmio(a) => a,
        IoEventAddress::Pio(p) => panic!("port ioeventfd at {p:#x}"),
    }
}

impl FakeVm {
    /// The addresses with a registered ioeventfd, in registration order.
    pub fn ioevent_addresses(&self) -> Vec<u64> {
        self.ioevents.lock().unwrap().iter().map(|e| e.0).collect()
    }

    /// What KVM does on a guest write at `addr`: signals the eventfd registered there.
    /// Returns false when there is none.
    pub fn guest_write(&self, addr: u64) -> bool {
        let events = self.ioevents.lock().unwrap();
        match events.iter().find(|e| e.0 == addr) {
            Some((_, fd)) => {
                fd.write(1).unwrap();
                true
            }
            None => false,
        }
    }
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
    fn set_gsi_routing(&self, _routes: &[IrqRoute]) -> HvResult<()> {
        unsupported()
    }
    fn register_irqfd(&self, _fd: &EventFd, _gsi: u32) -> HvResult<()> {
        unsupported()
    }
    fn unregister_irqfd(&self, _fd: &EventFd, _gsi: u32) -> HvResult<()> {
        unsupported()
    }
    fn register_ioevent(
        &self,
        fd: &EventFd,
        addr: IoEventAddress,
        datamatch: Option<u32>,
    ) -> HvResult<()> {
        assert_eq!(datamatch, None, "notifications need no data match");
        let addr = mmio(addr);
        let mut events = self.ioevents.lock().unwrap();
        let limit = self.ioevent_limit.load(Ordering::SeqCst);
        if limit != 0 && events.len() >= limit {
            return unsupported();
        }
        let fail = self
            .ioevent_failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if fail.is_ok() {
            return unsupported();
        }
        assert!(
            events.iter().all(|e| e.0 != addr),
            "two ioeventfds at {addr:#x}"
        );
        events.push((addr, fd.try_clone().unwrap()));
        Ok(())
    }
    fn unregister_ioevent(
        &self,
        _fd: &EventFd,
        addr: IoEventAddress,
        _datamatch: Option<u32>,
    ) -> HvResult<()> {
        let addr = mmio(addr);
        let mut events = self.ioevents.lock().unwrap();
        let before = events.len();
        events.retain(|e| e.0 != addr);
        assert_eq!(events.len() + 1, before, "no ioeventfd at {addr:#x}");
        self.unregistered.lock().unwrap().push(addr);
        Ok(())
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
