//! The `vcpu<N>` threads: `KVM_RUN` and its exits, handled on the same thread: port and MMIO
//! accesses to the devices (serial output, PCI configuration, virtio-pci registers), the
//! power and reset devices, the pause gate. A virtio driver's DRIVER_OK or reset is handed
//! to the VMM thread, which starts and joins the device thread: a vCPU never creates a
//! thread, waits on epoll or touches host memory mappings beyond the runtime's own.

use super::kvm;
use super::rules::{ioctl_in, thread_runtime, Result, Rules};

/// The KVM ioctls a vCPU thread makes.
pub(super) fn kvm_ioctls() -> Vec<u64> {
    vec![
        // Running the vCPU.
        kvm::KVM_RUN(),
        // The guest programs or masks an MSI-X vector: the routing table is set again.
        kvm::KVM_SET_GSI_ROUTING(),
        // The guest moves a virtio-pci BAR: queue notifications are registered again.
        kvm::KVM_IOEVENTFD(),
        // The report of a guest that cannot go on: registers and the instruction at RIP.
        kvm::KVM_GET_REGS(),
        kvm::KVM_GET_SREGS(),
        kvm::KVM_TRANSLATE(),
    ]
}

pub(super) fn rules() -> Result<Rules> {
    let mut rules = thread_runtime()?;
    rules.push(ioctl_in(&kvm_ioctls())?);
    Ok(rules)
}
