//! The hypervisor abstraction Accordion runs on.
//!
//! `Hypervisor`, `Vm` and `Vcpu` are what the rest of the VMM sees; `kvm` implements them on
//! `kvm-ioctls`. State that migration needs to carry (vCPU registers, the in-kernel irqchip,
//! the clock) is exposed as plain serde types in [`state`].

pub mod kvm;
pub mod state;
mod vm_exit;

use std::sync::Arc;

pub use kvm_bindings::{
    kvm_clock_data, kvm_cpuid_entry2 as CpuIdEntry, kvm_fpu, kvm_regs, kvm_sregs,
};
pub use state::{VcpuState, VmState};
pub use vm_exit::VmExit;
use vmm_sys_util::eventfd::EventFd;

/// Everything that can go wrong talking to the hypervisor, with the operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum HypervisorError {
    #[error("cannot open /dev/kvm: {0}")]
    Open(#[source] kvm_ioctls::Error),
    #[error("KVM API version {0} is not supported (need 12)")]
    ApiVersion(i32),
    #[error("KVM lacks the required capability {0}")]
    MissingCapability(&'static str),
    #[error("KVM ioctl {op} failed: {source}")]
    Ioctl {
        op: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
}

pub type Result<T> = std::result::Result<T, HypervisorError>;

/// Shorthand to wrap a failed ioctl with the name of the operation.
pub(crate) fn ioctl_err(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> HypervisorError {
    move |source| HypervisorError::Ioctl { op, source }
}

/// A host hypervisor that can create virtual machines.
pub trait Hypervisor: Send + Sync {
    /// Creates a new, empty VM.
    fn create_vm(&self) -> Result<Arc<dyn Vm>>;
    /// The CPUID leaves this host can offer a guest, before per-vCPU adjustments.
    fn supported_cpuid(&self) -> Result<Vec<CpuIdEntry>>;
    /// The most vCPUs one VM may have.
    fn max_vcpus(&self) -> u32;
    /// The most memslots one VM may have (`KVM_CAP_NR_MEMSLOTS`).
    fn max_memslots(&self) -> u32;
}

/// Where an ioeventfd listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoEventAddress {
    Pio(u64),
    Mmio(u64),
}

/// One entry of the GSI routing table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqRoute {
    /// A pin of the in-kernel IOAPIC.
    IoapicPin { gsi: u32, pin: u32 },
    /// A pin of the in-kernel master (chip 0) or slave (chip 1) 8259.
    PicPin { gsi: u32, chip: u32, pin: u32 },
    /// An MSI message.
    Msi { gsi: u32, address: u64, data: u32 },
}

/// A guest memory region as the hypervisor maps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    pub slot: u32,
    pub guest_addr: u64,
    pub size: u64,
    pub host_addr: u64,
    pub log_dirty: bool,
}

/// A virtual machine: memory, interrupts and vCPUs.
pub trait Vm: Send + Sync {
    /// Creates vCPU `id` (also its initial APIC id).
    fn create_vcpu(&self, id: u32) -> Result<Box<dyn Vcpu>>;
    /// Maps (or re-maps, when the slot exists) guest memory.
    fn set_memory_region(&self, region: MemoryRegion) -> Result<()>;
    /// Unmaps a memory slot; its addresses then exit to the VMM as MMIO.
    fn remove_memory_region(&self, region: MemoryRegion) -> Result<()>;
    /// Creates the in-kernel PIC, IOAPIC and LAPICs, and the PIT.
    fn create_platform_irqchip(&self) -> Result<()>;
    /// Installs the whole GSI routing table (KVM replaces, it does not merge).
    fn set_gsi_routing(&self, routes: &[IrqRoute]) -> Result<()>;
    /// Makes a write to `fd` raise `gsi`.
    fn register_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<()>;
    fn unregister_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<()>;
    /// Makes a guest write to `addr` (matching `datamatch` when given) signal `fd`.
    fn register_ioevent(
        &self,
        fd: &EventFd,
        addr: IoEventAddress,
        datamatch: Option<u32>,
    ) -> Result<()>;
    fn unregister_ioevent(
        &self,
        fd: &EventFd,
        addr: IoEventAddress,
        datamatch: Option<u32>,
    ) -> Result<()>;
    /// Injects one MSI directly.
    fn signal_msi(&self, address: u64, data: u32) -> Result<()>;
    /// The dirty bitmap of a slot since the last call (one bit per 4 KiB page).
    fn dirty_log(&self, slot: u32, size: u64) -> Result<Vec<u64>>;
    /// The guest clock (kvmclock's base), with no flags: it travels on its own.
    fn clock(&self) -> Result<kvm_clock_data>;
    fn set_clock(&self, clock: &kvm_clock_data) -> Result<()>;
    /// State of the in-kernel devices and the clock.
    fn state(&self) -> Result<VmState>;
    fn set_state(&self, state: &VmState) -> Result<()>;
}

/// One virtual CPU. It is driven by exactly one thread.
pub trait Vcpu: Send {
    /// Runs the vCPU until it needs the VMM.
    fn run(&mut self) -> Result<VmExit<'_>>;
    /// Makes the next `run` return at once (`VmExit::Interrupted`), or stops doing so.
    fn set_immediate_exit(&mut self, exit: bool);
    fn set_cpuid(&self, entries: &[CpuIdEntry]) -> Result<()>;
    /// The CPUID the vCPU has in effect, as KVM reports it (on some KVMs, KVM-PVM among
    /// them, more than was set).
    fn cpuid(&self) -> Result<Vec<CpuIdEntry>>;
    fn set_msrs(&self, msrs: &[(u32, u64)]) -> Result<()>;
    /// One MSR's value.
    fn msr(&self, index: u32) -> Result<u64>;
    fn regs(&self) -> Result<kvm_regs>;
    fn set_regs(&self, regs: &kvm_regs) -> Result<()>;
    fn sregs(&self) -> Result<kvm_sregs>;
    fn set_sregs(&self, sregs: &kvm_sregs) -> Result<()>;
    fn set_fpu(&self, fpu: &kvm_fpu) -> Result<()>;
    /// Routes LINT0 as ExtINT and LINT1 as NMI, as firmware would.
    fn setup_lint(&self) -> Result<()>;
    /// Guest-physical address of a guest-virtual one in the current paging mode.
    fn translate(&self, gva: u64) -> Result<Option<u64>>;
    /// Lets KVM finish the instruction of the last exit (an I/O or MMIO exit leaves RIP on
    /// the instruction until the next `KVM_RUN`, on AMD at least) without running the guest
    /// further: one `KVM_RUN` with immediate exit. Call it after the last exit and before
    /// [`Vcpu::state`], or a restored guest repeats that instruction.
    fn complete_pending_exit(&mut self) -> Result<()>;
    /// Everything needed to recreate this vCPU elsewhere (after
    /// [`Vcpu::complete_pending_exit`]).
    fn state(&self) -> Result<VcpuState>;
    fn set_state(&self, state: &VcpuState) -> Result<()>;
}
