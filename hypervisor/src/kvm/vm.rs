use std::sync::{Arc, Mutex};

use kvm_bindings::{
    kvm_irq_routing_entry, kvm_irqchip, kvm_msi, kvm_pit_config, kvm_userspace_memory_region,
    KvmIrqRouting, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
    KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI, KVM_MEM_LOG_DIRTY_PAGES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{IoEventAddress as KvmIoEventAddress, NoDatamatch, VmFd};
use vmm_sys_util::eventfd::EventFd;

use super::KvmVcpu;
use crate::{ioctl_err, IoEventAddress, IrqRoute, MemoryRegion, Result, Vcpu, Vm, VmState};

/// Where KVM may put the three pages of its real-mode TSS: just below the BIOS area at the
/// top of the 32-bit space, which our layout never uses for RAM or devices.
const KVM_TSS_ADDRESS: usize = 0xfffb_d000;

/// A KVM virtual machine.
pub struct KvmVm {
    fd: VmFd,
    /// KVM_SET_GSI_ROUTING replaces the table, so routes are applied under one lock.
    routing: Mutex<()>,
    /// The MSRs each vCPU's state carries.
    msrs: Arc<[u32]>,
}

impl KvmVm {
    pub(super) fn new(fd: VmFd, msrs: Arc<[u32]>) -> Self {
        KvmVm {
            fd,
            routing: Mutex::new(()),
            msrs,
        }
    }
}

fn to_kvm_region(r: &MemoryRegion, size: u64) -> kvm_userspace_memory_region {
    kvm_userspace_memory_region {
        slot: r.slot,
        guest_phys_addr: r.guest_addr,
        memory_size: size,
        userspace_addr: r.host_addr,
        flags: if r.log_dirty {
            KVM_MEM_LOG_DIRTY_PAGES
        } else {
            0
        },
    }
}

fn to_kvm_route(route: &IrqRoute) -> kvm_irq_routing_entry {
    let mut e = kvm_irq_routing_entry::default();
    match *route {
        IrqRoute::IoapicPin { gsi, pin } => {
            e.gsi = gsi;
            e.type_ = KVM_IRQ_ROUTING_IRQCHIP;
            e.u.irqchip.irqchip = KVM_IRQCHIP_IOAPIC;
            e.u.irqchip.pin = pin;
        }
        IrqRoute::PicPin { gsi, chip, pin } => {
            e.gsi = gsi;
            e.type_ = KVM_IRQ_ROUTING_IRQCHIP;
            e.u.irqchip.irqchip = chip;
            e.u.irqchip.pin = pin;
        }
        IrqRoute::Msi { gsi, address, data } => {
            e.gsi = gsi;
            e.type_ = KVM_IRQ_ROUTING_MSI;
            e.u.msi.address_lo = address as u32;
            e.u.msi.address_hi = (address >> 32) as u32;
            e.u.msi.data = data;
        }
    }
    e
}

fn to_kvm_ioevent(addr: IoEventAddress) -> KvmIoEventAddress {
    match addr {
        IoEventAddress::Pio(a) => KvmIoEventAddress::Pio(a),
        IoEventAddress::Mmio(a) => KvmIoEventAddress::Mmio(a),
    }
}

impl Vm for KvmVm {
    fn create_vcpu(&self, id: u32) -> Result<Box<dyn Vcpu>> {
        let fd = self
            .fd
            .create_vcpu(u64::from(id))
            .map_err(ioctl_err("KVM_CREATE_VCPU"))?;
        Ok(Box::new(KvmVcpu::new(fd, self.msrs.clone())))
    }

    fn set_memory_region(&self, region: MemoryRegion) -> Result<()> {
        let r = to_kvm_region(&region, region.size);
        // SAFETY: the caller hands us a mapping of `size` bytes at `host_addr` that it keeps
        // alive for as long as the slot exists (the memory manager owns both).
        unsafe { self.fd.set_user_memory_region(r) }
            .map_err(ioctl_err("KVM_SET_USER_MEMORY_REGION"))
    }

    fn remove_memory_region(&self, region: MemoryRegion) -> Result<()> {
        let r = to_kvm_region(&region, 0);
        // SAFETY: a zero-sized region deletes the slot; no host memory is referenced.
        unsafe { self.fd.set_user_memory_region(r) }
            .map_err(ioctl_err("KVM_SET_USER_MEMORY_REGION (delete)"))
    }

    fn create_platform_irqchip(&self) -> Result<()> {
        self.fd
            .set_tss_address(KVM_TSS_ADDRESS)
            .map_err(ioctl_err("KVM_SET_TSS_ADDR"))?;
        self.fd
            .create_irq_chip()
            .map_err(ioctl_err("KVM_CREATE_IRQCHIP"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        self.fd
            .create_pit2(pit)
            .map_err(ioctl_err("KVM_CREATE_PIT2"))
    }

    fn set_gsi_routing(&self, routes: &[IrqRoute]) -> Result<()> {
        let entries: Vec<kvm_irq_routing_entry> = routes.iter().map(to_kvm_route).collect();
        let table =
            KvmIrqRouting::from_entries(&entries).map_err(|_| crate::HypervisorError::Ioctl {
                op: "KVM_SET_GSI_ROUTING (table too large)",
                source: kvm_ioctls::Error::new(libc::E2BIG),
            })?;
        let _guard = self.routing.lock().unwrap_or_else(|e| e.into_inner());
        self.fd
            .set_gsi_routing(&table)
            .map_err(ioctl_err("KVM_SET_GSI_ROUTING"))
    }

    fn register_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<()> {
        self.fd
            .register_irqfd(fd, gsi)
            .map_err(ioctl_err("KVM_IRQFD"))
    }

    fn unregister_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<()> {
        self.fd
            .unregister_irqfd(fd, gsi)
            .map_err(ioctl_err("KVM_IRQFD (deassign)"))
    }

    fn register_ioevent(
        &self,
        fd: &EventFd,
        addr: IoEventAddress,
        datamatch: Option<u32>,
    ) -> Result<()> {
        let addr = to_kvm_ioevent(addr);
        match datamatch {
            Some(v) => self.fd.register_ioevent(fd, &addr, v),
            None => self.fd.register_ioevent(fd, &addr, NoDatamatch),
        }
        .map_err(ioctl_err("KVM_IOEVENTFD"))
    }

    fn unregister_ioevent(
        &self,
        fd: &EventFd,
        addr: IoEventAddress,
        datamatch: Option<u32>,
    ) -> Result<()> {
        let addr = to_kvm_ioevent(addr);
        match datamatch {
            Some(v) => self.fd.unregister_ioevent(fd, &addr, v),
            None => self.fd.unregister_ioevent(fd, &addr, NoDatamatch),
        }
        .map_err(ioctl_err("KVM_IOEVENTFD (deassign)"))
    }

    fn signal_msi(&self, address: u64, data: u32) -> Result<()> {
        let msi = kvm_msi {
            address_lo: address as u32,
            address_hi: (address >> 32) as u32,
            data,
            ..Default::default()
        };
        self.fd
            .signal_msi(msi)
            .map(|_| ())
            .map_err(ioctl_err("KVM_SIGNAL_MSI"))
    }

    fn dirty_log(&self, slot: u32, size: u64) -> Result<Vec<u64>> {
        self.fd
            .get_dirty_log(slot, size as usize)
            .map_err(ioctl_err("KVM_GET_DIRTY_LOG"))
    }

    fn state(&self) -> Result<VmState> {
        let mut irqchips = Vec::with_capacity(3);
        for chip_id in [
            KVM_IRQCHIP_PIC_MASTER,
            KVM_IRQCHIP_PIC_SLAVE,
            KVM_IRQCHIP_IOAPIC,
        ] {
            let mut chip = kvm_irqchip {
                chip_id,
                ..Default::default()
            };
            self.fd
                .get_irqchip(&mut chip)
                .map_err(ioctl_err("KVM_GET_IRQCHIP"))?;
            irqchips.push(chip);
        }
        let pit = self.fd.get_pit2().map_err(ioctl_err("KVM_GET_PIT2"))?;
        Ok(VmState {
            irqchips,
            pit,
            clock: self.clock()?,
        })
    }

    fn clock(&self) -> Result<kvm_bindings::kvm_clock_data> {
        let mut clock = self.fd.get_clock().map_err(ioctl_err("KVM_GET_CLOCK"))?;
        // Only the clock value travels; the flags describe the source host.
        clock.flags = 0;
        Ok(clock)
    }

    fn set_clock(&self, clock: &kvm_bindings::kvm_clock_data) -> Result<()> {
        self.fd.set_clock(clock).map_err(ioctl_err("KVM_SET_CLOCK"))
    }

    fn set_state(&self, state: &VmState) -> Result<()> {
        for chip in &state.irqchips {
            self.fd
                .set_irqchip(chip)
                .map_err(ioctl_err("KVM_SET_IRQCHIP"))?;
        }
        self.fd
            .set_pit2(&state.pit)
            .map_err(ioctl_err("KVM_SET_PIT2"))?;
        self.set_clock(&state.clock)
    }
}
