//! The `vcpu<N>` threads: `KVM_RUN` and its exits, handled on the same thread: port and MMIO
//! accesses to the devices (serial output, PCI configuration, virtio-pci registers), the
//! power and reset devices, the pause gate. When a virtio driver sets DRIVER_OK the device
//! thread is started from here, so this filter also allows what starting a thread takes and,
//! since the new thread inherits it, everything the virtio-mem filter allows.

use super::kvm;
use super::rules::{any, fcntl_in, ioctl_in, thread_runtime, thread_spawning, Result, Rules};

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
    rules.extend(thread_spawning()?);
    // The virtio-mem thread starts under this filter.
    rules.extend(super::virtio_mem::rules()?);
    rules.extend([
        ioctl_in(&kvm_ioctls())?,
        // Activating a virtio-mem device: its kill eventfd, its epoll set, and duplicated
        // eventfds (try_clone is F_DUPFD_CLOEXEC).
        any(libc::SYS_eventfd2),
        any(libc::SYS_epoll_create1),
        any(libc::SYS_epoll_ctl),
        fcntl_in(&[libc::F_DUPFD_CLOEXEC])?,
    ]);
    Ok(rules)
}
